"""MCP servers as agent tools (`agents.mcp`), against a real MCP server the tests start
(tests/mcp_servers/calc_server.py as a stdio child process). The model asking for the calls is the
`Scripted` TEST DOUBLE here (tests/test_mcp_llm.py has the embedded model); the server, the MCP
client, the policies and the engine are real. The server logs every call it receives, so the tests
count the calls that really reached it."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

import policies
from agents import Agent, mcp_tools
from agents.mcp import MCPCallFailed, MCPServerError, close_all
from agents.mcp.connection import server_starts
from swarm import factor
from tests.mcp_servers.harness import CALC, CallLog, adds, calc_stdio, tool_caller
from tests.test_checkpoint import CrashingRuntime, SimulatedCrash

pytestmark = pytest.mark.server


@pytest.fixture
def log(tmp_path):
    yield CallLog(tmp_path / "calls.log")
    close_all()  # no server outlives its test


@pytest.fixture
def calc(log):
    return {t.name: t for t in mcp_tools(**calc_stdio(log), timeout_s=60)}


# -- the tools ---------------------------------------------------------------------------------------
def test_tools_come_with_the_servers_schemas_and_calls_reach_it(calc, log):
    assert set(calc) == {"add", "fail", "hang", "crash"}
    add = calc["add"]
    assert add.endpoint == "mcp:calc/add" and add.description == "Add two integers and return their sum."
    schema = add.openai_schema()["function"]["parameters"]
    assert schema["properties"]["a"]["type"] == "integer" and schema["required"] == ["a", "b"]
    assert '"a": {"title": "A", "type": "integer"}' in add.describe()
    assert asyncio.run(add.call({"a": 2, "b": 3})) == "5"
    assert asyncio.run(add.call('{"a": 40, "b": 2}')) == "42"  # JSON text, as a model writes it
    assert log.calls() == [("add", {"a": 2, "b": 3}), ("add", {"a": 40, "b": 2})]


def test_arguments_outside_the_schema_are_answered_to_the_agent_and_never_sent(calc, log):
    bad = asyncio.run(calc["add"].call({"a": 2, "b": "three"}))
    assert bad.startswith("error: invalid arguments for add:") and "b: 'three' is not of type 'integer'" in bad
    missing = asyncio.run(calc["add"].call({"a": 2}))
    assert "'b' is a required property" in missing
    assert asyncio.run(calc["add"].call("{not json")).startswith("error: invalid arguments for add: not JSON")
    assert log.calls() == []


def test_a_tool_error_loses_the_call_or_is_answered_when_asked(calc, log):
    with pytest.raises(MCPCallFailed) as info:
        asyncio.run(calc["fail"].call({"reason": "disk on fire"}))
    err = info.value
    assert (err.server, err.tool, err.reason) == ("calc", "fail", "tool_error")
    assert "the fail tool failed on purpose: disk on fire" in str(err) and err.source == "mcp:calc"
    replying = {t.name: t for t in mcp_tools(**calc_stdio(log), errors="reply", include=["fail"])}
    answer = asyncio.run(replying["fail"].call({"reason": "no such file"}))
    assert answer.startswith("error: ") and "no such file" in answer
    assert [c[0] for c in log.calls()] == ["fail", "fail"]


def test_a_hung_call_times_out_and_the_session_goes_on(log):
    tools = {t.name: t for t in mcp_tools(**calc_stdio(log), timeout_s=60)}
    hang = tools["hang"].model_copy(update={"timeout_s": 1.0})
    started = time.monotonic()
    with pytest.raises(MCPCallFailed, match="'hang': timeout: no answer within 1 s") as info:
        asyncio.run(hang.call({"seconds": 60}))
    # 1 s timeout; the bound leaves room for a loaded machine, far below the 60 s the tool sleeps
    assert info.value.reason == "timeout" and time.monotonic() - started < 20
    assert asyncio.run(tools["add"].call({"a": 1, "b": 2})) == "3"
    assert list(server_starts().values()) == [1]  # a timeout does not restart the server


def test_a_crashed_server_loses_the_call_and_is_restarted_for_the_next(calc, log):
    with pytest.raises(MCPCallFailed) as info:
        asyncio.run(calc["crash"].call({}))
    assert (info.value.tool, info.value.reason) == ("crash", "crashed")
    assert asyncio.run(calc["add"].call({"a": 1, "b": 1})) == "2"
    assert list(server_starts().values()) == [2] and len(log.servers()) == 2
    assert [c[0] for c in log.calls()] == ["crash", "add"]


def test_a_server_that_cannot_start_is_named(tmp_path):
    with pytest.raises(MCPServerError, match="could not list its tools"):
        mcp_tools(command=[str(tmp_path / "no-such-server")], connect_timeout_s=20)
    with pytest.raises(MCPServerError, match="could not list its tools"):
        mcp_tools(command=[*CALC[:2], "-c", "import sys; sys.exit(2)"], connect_timeout_s=20)


def test_a_server_that_exits_at_once_is_named_with_the_cause_and_its_stderr(tmp_path):
    """The SDK reports such a server as an ExceptionGroup around 'Connection closed'; the error
    says that, and what the server wrote to its stderr (captured to a file, not shown otherwise)."""
    missing = tmp_path / "calc_server_typo.py"
    with pytest.raises(MCPServerError) as info:
        mcp_tools(command=[sys.executable, str(missing)], connect_timeout_s=20)
    message = str(info.value)
    assert "could not list its tools: MCPError: Connection closed" in message
    assert "ExceptionGroup" not in message
    assert "server stderr (last lines):" in message and "calc_server_typo.py" in message
    assert "No such file or directory" in message


def test_bad_arguments_to_mcp_tools_name_the_field(log):
    with pytest.raises(MCPServerError, match="exactly one of command"):
        mcp_tools()
    with pytest.raises(MCPServerError, match="exactly one of command"):
        mcp_tools(command=CALC, url="http://127.0.0.1:1/mcp")
    with pytest.raises(MCPServerError, match="url must be an http"):
        mcp_tools(url="ftp://example/mcp")
    with pytest.raises(MCPServerError, match="command must be a non-empty list"):
        mcp_tools(command=[])
    with pytest.raises(MCPServerError, match="headers are for url"):
        mcp_tools(command=CALC, headers={"Authorization": "Bearer abcdefgh"})
    with pytest.raises(MCPServerError, match="has no tool 'sub'; its tools: add, fail, hang, crash"):
        mcp_tools(**calc_stdio(log), include=["add", "sub"])


# -- in a program ------------------------------------------------------------------------------------
def _two_questions(agent):
    async def program():
        first = await agent.ask("Add two numbers.", name="q1")
        factor("small_first", -int(first.split()[-1].rstrip(".")) / 10)  # unequal weights: resampling
        second = await agent.ask("Add two more.", name="q2")
        factor("small_second", -int(second.split()[-1].rstrip(".")) / 10)
        return first, second

    return program


def test_smc_records_every_call_and_replay_never_calls_the_server_again(calc, log):
    agent = Agent(name="solver", backend=tool_caller(adds), tools=[calc["add"]], max_tool_rounds=1)
    n = 12
    r = policies.SMC(num_particles=n, ess_threshold=1.0, seed=3).run(_two_questions(agent))
    assert r.diagnostics.steps[0].resampled  # so step 2 replays resampled prefixes
    # async programs replay their prefix at every step (offspring always): each call site ran once
    # per lineage, n at step 1 and n at step 2; a replay that called again would add n more
    assert len(log.calls("add")) == 2 * n
    received = {(a["a"], a["b"]) for _, a in log.calls("add")}
    for p in r.particles:
        calls = [e for e in p.trace.of_type("interact") if e.kind == "tool_call"]
        results = [e for e in p.trace.of_type("interact") if e.kind == "tool_result"]
        assert [c.receiver for c in calls] == ["mcp:calc/add"] * 2 and [e.sender for e in results] == ["mcp:calc/add"] * 2
        for call, result in zip(calls, results):
            assert (call.content["a"], call.content["b"]) in received
            assert result.content == str(call.content["a"] + call.content["b"])
        site = p.trace["q1/call0/result"]
        assert site.dist == "Tool(mcp:calc/add)" and site.info["endpoint"] == "mcp:calc/add"
        assert p.value == tuple(f"The answer is {e.content}." for e in results)


def test_the_failing_tool_loses_only_its_particle(calc, log):
    agent = Agent(name="solver", tools=[calc["add"], calc["fail"]], max_tool_rounds=1,
                  backend=tool_caller(lambda seed: ("fail", {"reason": f"r{seed}"}) if seed % 3 == 0 else adds(seed)))

    async def program():
        reply = await agent.ask("Add two numbers.", name="q")
        factor("done", 0.0)
        return reply

    n = 12
    # no resampling: the lost particles stay in the population, left out of the weights and of log Z
    r = policies.SMC(num_particles=n, seed=5, ess_threshold=0.0, max_lost_fraction=0.5).run(program)
    lost = [p for p in r.particles if p.status == "lost"]
    done = [p for p in r.particles if p.status == "finished"]
    assert 0 < len(lost) < n and len(lost) + len(done) == n
    assert len(log.calls("fail")) == len(lost) == r.diagnostics.lost and len(log.calls("add")) == len(done)
    assert all(p.log_weight == float("-inf") for p in lost) and r.log_evidence == 0.0   # the n - lost others: Z = 1
    for p in lost:
        error = p.trace.of_type("error")[0]
        assert error.address == "q/call0"  # the tool_call event: the call that never returned
        assert "MCP server 'calc', tool 'fail': tool_error" in error.message
        assert "the fail tool failed on purpose: r" in error.message
    for p in done:
        result = p.trace["q/call0/result"].value
        assert p.value == f"The answer is {result}."


def test_resume_does_not_call_the_server_again(tmp_path, log):
    tools = mcp_tools(**calc_stdio(log), include=["add"])
    reference_log = CallLog(tmp_path / "reference_calls.log")
    reference_tools = mcp_tools(**calc_stdio(reference_log), include=["add"])

    def program(tools_):
        return _two_questions(Agent(name="solver", backend=tool_caller(adds), tools=tools_, max_tool_rounds=1))

    def smc(**kw):
        return policies.SMC(num_particles=10, ess_threshold=1.0, seed=11, **kw)

    reference = smc().run(program(reference_tools))
    with pytest.raises(SimulatedCrash):  # the driver dies as it starts step 2
        smc(checkpoint=tmp_path / "ckpt", runtime=CrashingRuntime(crash_at=2)).run(program(tools))
    assert len(log.calls()) == 10  # step 1's calls, recorded in the checkpoint
    resumed = smc(checkpoint=tmp_path / "ckpt").resume(tmp_path / "ckpt", program(tools))
    assert len(log.calls()) == 20  # only step 2's calls were made again: step 1's came from the trace
    assert sorted(map(str, log.calls())) == sorted(map(str, reference_log.calls()))
    assert resumed.log_evidence == reference.log_evidence
    assert [(p.value, p.log_weight) for p in resumed.particles] == [(p.value, p.log_weight) for p in reference.particles]


def test_tools_work_in_many_runs_and_event_loops_on_one_session(calc, log):
    agent = Agent(name="solver", backend=tool_caller(adds), tools=[calc["add"]], max_tool_rounds=1)

    async def program():
        return await agent.ask("Add.")

    for seed in range(3):  # each run is a new event loop; the session lives on its own loop
        policies.Forward(num_particles=4, seed=seed).run(program)
    assert len(log.calls("add")) == 12 and len(log.servers()) == 1 and list(server_starts().values()) == [1]


def test_a_cold_session_starts_the_server_once_for_many_concurrent_first_calls(calc, log):
    close_all()  # the listing's session is gone: the run's first calls all find no session
    agent = Agent(name="solver", backend=tool_caller(adds), tools=[calc["add"]], max_tool_rounds=1)

    async def program():
        return await agent.ask("Add.")

    r = policies.Forward(num_particles=16, seed=1).run(program)
    assert len(log.calls("add")) == 16 and all(p.status == "finished" for p in r.particles)
    assert list(server_starts().values()) == [1] and len(log.servers()) == 1
