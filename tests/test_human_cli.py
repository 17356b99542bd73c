"""`swarm run` of a program that asks a person pauses with exit status 3 and prints the pending
questions; `swarm resume DIR --answer NAME=VALUE`, in a new process, finishes it with the result of
`swarm run ... --answer NAME=VALUE` given the answer up front; a bad answer is refused naming the
question (exit 1) and leaves the run waiting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TASK = '''
import policies
from swarm import Categorical, ask_human, factor, sample

POLICY = policies.SMC(num_particles=60, seed=4, ess_threshold=0.9)


async def program(weight: float = 1.0):
    x = sample("x", Categorical(["a", "b", "c"], probs=[0.5, 0.3, 0.2]))
    factor("f0", 0.0)
    pick = await ask_human("pick", "Which letter do you like?", schema={"enum": ["a", "b", "c"]})
    factor("likes", weight if x == pick else 0.0)
    return x
'''


def swarm_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "observability.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def marginal_lines(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("answer marginal"))
    return lines[start:start + 5]


def test_swarm_run_pauses_and_swarm_resume_finishes_with_the_uninterrupted_result(tmp_path):
    (tmp_path / "task.py").write_text(TASK)
    paused = swarm_cli("run", "task.py", "--checkpoint", "ck", "--arg", "weight=2.0", cwd=tmp_path)
    assert paused.returncode == 3, paused.stderr
    assert "waiting for a person: 1 question(s)" in paused.stdout
    assert "pick: Which letter do you like?  (60 particle(s); answer schema" in paused.stdout
    assert "swarm resume ck --answer pick=VALUE" in paused.stdout

    listed = swarm_cli("resume", "ck", cwd=tmp_path)
    assert listed.returncode == 3 and "pick: Which letter do you like?" in listed.stdout

    refused = swarm_cli("resume", "ck", "--answer", "pick=d", cwd=tmp_path)
    assert refused.returncode == 1
    assert "answer to 'pick' (id " in refused.stderr and "'d' is not one of ['a', 'b', 'c']" in refused.stderr

    resumed = swarm_cli("resume", "ck", "--answer", "pick=b", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    reference = swarm_cli("run", "task.py", "--arg", "weight=2.0", "--answer", "pick=b", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    assert marginal_lines(resumed.stdout) == marginal_lines(reference.stdout)
    assert "'b'" in marginal_lines(resumed.stdout)[1]  # the liked letter leads: the answer was used
