"""`swarm mcp FILE.py[:program]`: a program under a policy served as an MCP tool over stdio. The
server is the real CLI in a child process, reached through `mcp_tools` (the real MCP client)."""

from __future__ import annotations

import asyncio
import json
import math
import sys

import pytest

import policies
from agents.mcp import MCPCallFailed, close_all, mcp_tools
from observability.cli import main
from tests.mcp_servers.dice_program import program as dice
from tests.mcp_servers.harness import REPO

pytestmark = pytest.mark.server
DICE = "tests/mcp_servers/dice_program.py:program"


@pytest.fixture(autouse=True)
def _close_sessions():
    yield
    close_all()


def served(*options: str):
    (tool,) = mcp_tools(command=[sys.executable, "-m", "observability.cli", "mcp", DICE, *options],
                        env={"PYTHONPATH": str(REPO)}, cwd=str(REPO), timeout_s=120)
    return tool


def ask(tool, **arguments):
    return json.loads(asyncio.run(tool.call(arguments)))


def test_the_served_program_answers_with_the_exact_posterior_under_enumerate():
    tool = served("--policy", "enumerate")
    assert tool.endpoint == "mcp:swarm-program/program"
    assert tool.input_schema["properties"]["at_least"] == {"default": 8, "title": "At Least", "type": "integer"}
    assert tool.description.startswith("Roll two dice, keep the rolls whose sum is at least")
    answer = ask(tool, at_least=10)
    # sum ≥ 10: (4,6) (5,5) (5,6) (6,4) (6,5) (6,6), so Z = 6/36 and p(first) = 1/6, 2/6, 3/6
    exact = {6: 3 / 6, 5: 2 / 6, 4: 1 / 6}
    assert answer["answer"] == 6 and answer["policy"] == "Enumerate"
    shares = {row["value"]: row["probability"] for row in answer["marginal"]}
    assert shares.keys() == exact.keys()
    for value, p in exact.items():  # float sums of exact 1/36 terms: equal to ~1 ulp
        assert shares[value] == pytest.approx(p, rel=1e-12)
    assert answer["log_evidence"] == pytest.approx(math.log(6 / 36), rel=1e-12)


def test_a_seeded_smc_answer_is_the_in_process_run():
    tool = served("--policy", "smc", "--particles", "300", "--seed", "7")
    answer = ask(tool, at_least=9)
    local = policies.SMC(num_particles=300, seed=7).run(dice, at_least=9)
    assert answer["log_evidence"] == local.log_evidence and answer["ess"] == local.ess
    assert [(row["value"], row["probability"]) for row in answer["marginal"]] == list(local.marginal().items())
    assert answer == ask(tool, at_least=9)  # same seed, same arguments: the same answer


def test_a_failed_run_is_the_tools_error():
    tool = served("--policy", "enumerate")
    with pytest.raises(MCPCallFailed, match="NoSurvivingParticles: Enumerate: no surviving particles; 'sum' killed 36"):
        asyncio.run(tool.call({"at_least": 13}))


def test_a_missing_program_is_a_usage_error(tmp_path, capsys):
    assert main(["mcp", str(tmp_path / "none.py")]) == 1
    assert "none.py: no such file" in capsys.readouterr().err
    (tmp_path / "prog.py").write_text("def other():\n    return 1\n")
    assert main(["mcp", f"{tmp_path / 'prog.py'}:missing"]) == 1
    assert "has no function named 'missing'" in capsys.readouterr().err


ASKING = '''
import policies
from swarm import Bernoulli, ask_human, guarantee, sample

POLICY = policies.SMC(num_particles=20, seed=0)


async def program(bias: float = 0.5):
    """Keep x or not, as a person says."""
    x = sample("x", Bernoulli(bias))
    answer = await ask_human("keep", f"Keep {x}?", schema={"enum": ["yes", "no"]})
    guarantee("kept", answer == "yes" or x == 1)
    return x
'''


def test_a_served_program_that_would_wait_for_a_person_is_the_tools_error(tmp_path):
    """Nobody can answer inside an MCP call: before the fix the paused run was answered as if it
    had finished ({"answer": null, "marginal": [{"value": null, "probability": 1.0}], "log_evidence":
    0.0}) and each call left a plp-swarm-paused-* directory behind."""
    (tmp_path / "asking.py").write_text(ASKING)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    (tool,) = mcp_tools(command=[sys.executable, "-m", "observability.cli", "mcp", f"{tmp_path / 'asking.py'}:program"],
                        env={"PYTHONPATH": str(REPO), "TMPDIR": str(scratch)}, cwd=str(REPO), timeout_s=120)
    with pytest.raises(MCPCallFailed) as info:
        asyncio.run(tool.call({"bias": 0.3}))
    message = str(info.value)
    assert info.value.reason == "tool_error" and "the run waits for a person" in message
    assert "'keep' (id " in message and "'Keep True?'" in message and "answers=" in message
    assert list(scratch.iterdir()) == []  # the paused run's temporary directory was removed
