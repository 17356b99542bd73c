"""Edge cases of agent tools: MCP servers that misbehave (tests/mcp_servers/edge_server.py and
calc_server.py, real `mcp` SDK servers as stdio child processes or on 127.0.0.1), and plain typed
Python tools (`agents.tools`) given what a model really writes. No model is involved except the
`Scripted` TEST DOUBLE where a run needs one; servers, client, engine and policies are real."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Literal, Optional

import pytest
from pydantic import BaseModel

import policies
from agents import Agent, mcp_tools, tool
from agents.mcp import MCPCallFailed, MCPServerError, MCPServerParams, MCPTool, close_all
from agents.mcp.connection import server_starts
from tests.mcp_servers.harness import REPO, CallLog, calc_stdio, tool_caller

EDGE = [sys.executable, "-m", "tests.mcp_servers.edge_server"]


@pytest.fixture
def log(tmp_path):
    yield CallLog(tmp_path / "calls.log")
    close_all()  # no server outlives its test


def edge_stdio(*extra: str) -> dict:
    return {"command": [*EDGE, *extra], "env": {"PYTHONPATH": str(REPO)}, "cwd": str(REPO)}


def children() -> list[str]:
    """The command lines of this process's live child processes (what `ps` shows)."""
    out = subprocess.run(["ps", "-o", "stat=,args=", "--ppid", str(os.getpid())], capture_output=True, text=True).stdout
    return [line.split(None, 1)[1] for line in out.splitlines()
            if line.strip() and not line.startswith("Z") and not line.split(None, 1)[1].startswith("ps ")]


# -- servers that cannot start ------------------------------------------------------------------------
def _sleeper() -> MCPServerParams:
    """A "server" that never answers the handshake (a process that only sleeps)."""
    return MCPServerParams(command=(sys.executable, "-c", "import time; time.sleep(120)"), connect_timeout_s=1.5)


@pytest.mark.server
def test_concurrent_calls_to_a_server_that_hangs_at_start_share_one_attempt(log):
    """Before the fix each waiting caller tried its own start after the previous one timed out:
    N particles waited N x (connect_timeout_s + the SDK's 2 s shutdown), 24 s for 6 calls here."""
    tool_ = MCPTool(name="add", server=_sleeper(), server_name="sleeper", timeout_s=5)

    async def calls(n: int):
        return await asyncio.gather(*(tool_.call({}) for _ in range(n)), return_exceptions=True)

    started = time.monotonic()
    results = asyncio.run(calls(6))
    elapsed = time.monotonic() - started
    assert all(isinstance(r, MCPCallFailed) and r.reason == "unavailable" for r in results)
    assert "no MCP handshake within 1.5 s (connect_timeout_s)" in str(results[0])
    # one attempt: 1.5 s, plus up to 2 s for the SDK to stop the process, and room for a loaded machine
    assert elapsed < 9, f"6 calls waited {elapsed:.1f} s: the start was tried once per caller"
    assert not any("time.sleep(120)" in c for c in children())  # the hung process was stopped


@pytest.mark.server
def test_a_server_that_exits_at_start_is_named_with_its_cause_at_call_time(log):
    """A call (not the listing) to a server that exits before its handshake: the error names the
    cause inside the SDK's exception group, and the server's stderr, once for all concurrent calls."""
    params = MCPServerParams(command=tuple(edge_stdio("--die-at-start")["command"]),
                             env=edge_stdio()["env"], cwd=str(REPO), connect_timeout_s=20)
    tool_ = MCPTool(name="add", server=params, server_name="edge", timeout_s=5)

    async def calls(n: int):
        return await asyncio.gather(*(tool_.call({"a": 1, "b": 2}) for _ in range(n)), return_exceptions=True)

    results = asyncio.run(calls(8))
    assert all(isinstance(r, MCPCallFailed) and r.reason == "unavailable" for r in results), results
    message = str(results[0])
    assert "unavailable: MCPError: Connection closed" in message and "ExceptionGroup" not in message
    # one process was started for the eight calls (each would have written this line to the shared stderr)
    assert message.count("edge server: refusing to start (--die-at-start)") == 1
    assert list(server_starts().values()) == [0]  # never started successfully
    assert not children()


@pytest.mark.server
def test_an_unreachable_http_server_at_call_time_names_the_connection_error(log):
    tool_ = MCPTool(name="add", server=MCPServerParams(url="http://127.0.0.1:9/mcp", connect_timeout_s=5),
                    server_name="gone", timeout_s=5)
    with pytest.raises(MCPCallFailed) as info:
        asyncio.run(tool_.call({}))
    assert info.value.reason == "unavailable" and "ExceptionGroup" not in str(info.value)
    assert "ConnectError: All connection attempts failed" in str(info.value)


# -- plain typed tools (agents.tools) -----------------------------------------------------------------
class Point(BaseModel):
    x: int
    y: int = 0


@tool
def place(point: Point, mode: Literal["fast", "slow"] = "fast", note: Optional[str] = None) -> str:
    """Place a point."""
    return f"{type(point).__name__} {point.x},{point.y} {mode} {note}"  # attribute access: a model, not a dict


@tool
async def shifted(point: Point, by: int = 1) -> Point:
    """Shift a point (async, returns a model)."""
    return Point(x=point.x + by, y=point.y + by)


def test_a_model_parameter_reaches_the_function_as_the_model_and_a_returned_model_as_json():
    """Before the fix the arguments were `model_dump()`ed, so `point` arrived as a dict and
    `point.x` failed; a returned model was rendered with `str` ("x=2 y=1") instead of JSON."""
    assert asyncio.run(place.call({"point": {"x": 1}})) == "Point 1,0 fast None"
    assert asyncio.run(place.call('{"point": {"x": 1, "y": 2}, "mode": "slow", "note": "hi"}')) == "Point 1,2 slow hi"
    assert asyncio.run(shifted.call({"point": {"x": 1}})) == '{"x": 2, "y": 1}'


def test_bad_arguments_to_a_plain_tool_name_the_tool_and_each_field_readably():
    wrong = asyncio.run(place.call({"point": {"x": "one"}, "mode": "medium"}))
    assert wrong.startswith("error: invalid arguments for place: ")
    assert "'point.x': Input should be a valid integer" in wrong and "(got 'one')" in wrong
    assert "'mode': Input should be 'fast' or 'slow' (got 'medium')" in wrong
    assert "{'type':" not in wrong  # not pydantic's raw error list
    assert asyncio.run(place.call({})) == "error: invalid arguments for place: 'point': Field required"
    assert asyncio.run(place.call("{not json")).startswith("error: invalid arguments for place: not JSON (")
    assert asyncio.run(place.call([1, 2])) == "error: invalid arguments for place: expected a JSON object, got list"


def test_a_validation_error_inside_the_tool_is_the_tools_error_not_the_models():
    @tool
    def strict(n: int) -> str:
        """Validate something of its own."""
        return str(Point.model_validate({"x": "not a number"}))

    out = asyncio.run(strict.call({"n": 1}))
    assert out.startswith("error: ValidationError: ") and "invalid arguments" not in out


def test_the_prompt_shows_what_a_referenced_model_parameter_is():
    """`describe()` is the text-protocol prompt (the embedded model): a model parameter is a `$ref`
    into `$defs`, which it left out, so the model saw `{"$ref": "#/$defs/Point"}` and nothing else."""
    text = place.describe()
    assert "#/$defs" not in text
    assert '"point": {"properties": {"x": {"title": "X", "type": "integer"}' in text


@pytest.mark.server
def test_the_prompt_shows_what_a_referenced_mcp_argument_is(log):
    nested = mcp_tools(**edge_stdio(), include=["nested"])[0]
    assert "#/$defs" not in nested.describe() and '"point": {"properties": {"x"' in nested.describe()
    assert asyncio.run(nested.call({"point": {"x": 1, "y": 2}, "tags": ["a", "b"]})) == "1,2 a/b fast"


def test_string_annotations_resolve_in_the_tools_module_or_where_it_is_made():
    """This module has `from __future__ import annotations`: every annotation is a string. Before
    the fix `Point` could not be resolved and every call answered "PydanticUserError: `place_args`
    is not fully defined"; a type defined in the function that makes the tool resolves too, and an
    unknown one is refused when the tool is made, naming it."""
    class Box(BaseModel):
        side: int

    @tool
    def volume(box: Box) -> int:
        """The volume of a box."""
        return box.side ** 3

    assert asyncio.run(volume.call({"box": {"side": 2}})) == "8"
    with pytest.raises(TypeError, match="tool 'bad': cannot resolve the type annotation 'Nowhere'"):
        @tool
        def bad(thing: Nowhere) -> str:  # noqa: F821 - the point of the test
            return ""


# -- what a text-only client is given -------------------------------------------------------------------
@pytest.mark.server
def test_non_text_results_are_rendered_as_notes_and_structured_content_as_json(log):
    edge = {t.name: t for t in mcp_tools(**edge_stdio(), timeout_s=30)}
    assert asyncio.run(edge["image"].call({})).startswith("[image image/png, ")
    assert asyncio.run(edge["resource"].call({})) == "the notes"
    assert asyncio.run(edge["resource"].call({"binary": True})) == "[resource file:///data.bin]"
    assert asyncio.run(edge["structured"].call({})) == '{"temperature": 21.5, "unit": "C"}'
    assert len(asyncio.run(edge["huge"].call({"n": 2_000_000}))) == 2_000_000  # no truncation, no stall
    assert asyncio.run(edge["noisy"].call({})) == "quiet now"  # a print() does not break the protocol


# -- cancelling a run with calls in flight ----------------------------------------------------------------
@pytest.mark.server
def test_cancelling_a_run_with_calls_in_flight_leaves_the_session_usable_and_no_orphan(log):
    tools = {t.name: t for t in mcp_tools(**calc_stdio(log), timeout_s=60)}
    agent = Agent(name="a", backend=tool_caller(lambda seed: ("hang", {"seconds": 60})), tools=[tools["hang"]],
                  max_tool_rounds=1, hosting="local")

    async def program():
        return await agent.ask("Wait.")

    async def cancelled_run():
        task = asyncio.create_task(policies.Forward(num_particles=8, seed=0).run_async(program))
        for _ in range(200):  # until every particle's call reached the server
            await asyncio.sleep(0.05)
            if len(log.calls("hang")) == 8:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(cancelled_run())
    assert len(log.calls("hang")) == 8 and time.monotonic() - started < 30  # not the 60 s the calls sleep
    assert asyncio.run(tools["add"].call({"a": 1, "b": 2})) == "3"  # the same session goes on
    assert list(server_starts().values()) == [1]
    assert any("calc_server" in c for c in children())
    close_all()
    assert not any("calc_server" in c for c in children())  # closing stops the server: no orphan


# -- two servers with a tool of one name --------------------------------------------------------------
@pytest.mark.server
def test_a_prefix_keeps_two_servers_tools_of_one_name_apart(log):
    """calc and edge both have `add`: in one agent the first would shadow the other (docs/mcp.md);
    `prefix` names edge's `edge_add` for the model while the call still goes to the server's `add`."""
    calc = mcp_tools(**calc_stdio(log), include=["add"])
    edge = mcp_tools(**edge_stdio(), include=["add"], prefix="edge_")
    assert [t.name for t in edge] == ["edge_add"] and edge[0].endpoint == "mcp:edge/add"
    assert asyncio.run(edge[0].call({"a": 1, "b": 2})) == "1003"  # edge's add, reached by its own name
    picks = {0: ("add", {"a": 1, "b": 2}), 1: ("edge_add", {"a": 1, "b": 2})}
    agent = Agent(name="solver", backend=tool_caller(lambda seed: picks[seed % 2]), tools=[*calc, *edge],
                  max_tool_rounds=1, hosting="local")

    async def program():
        return await agent.ask("Add.", name="q")

    result = policies.Forward(num_particles=6, seed=0).run(program)
    for p in result.particles:
        (call,) = [e for e in p.trace.of_type("interact") if e.kind == "tool_call"]
        assert p.value == {"mcp:calc/add": "The answer is 3.", "mcp:edge/add": "The answer is 1003."}[call.receiver]
    assert {e.receiver for p in result.particles for e in p.trace.of_type("interact") if e.kind == "tool_call"} \
        == {"mcp:calc/add", "mcp:edge/add"}
    with pytest.raises(MCPServerError, match="prefix must be"):
        mcp_tools(**edge_stdio(), prefix="edge/")


def test_an_argument_the_tool_does_not_take_is_named_not_dropped():
    """`add(a, b=2)` called with a misspelt `bb`: before the fix `bb` was dropped silently and the
    agent read 3 (b's default) as the answer to its call."""
    @tool
    def add(a: int, b: int = 2) -> int:
        """Add two integers."""
        return a + b

    out = asyncio.run(add.call({"a": 1, "bb": 5}))
    assert out == "error: invalid arguments for add: 'bb': Extra inputs are not permitted (got 5)"
    assert add.parameters_schema()["additionalProperties"] is False  # and the model is told so
    assert asyncio.run(add.call({"a": 1, "b": 5})) == "6"
