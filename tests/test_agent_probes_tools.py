"""Probes of Python function tools: whatever a tool returns, the agent reads a result and the
particle lives."""

import asyncio

import policies
from agents import Agent, Scripted, tool


class Unshowable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@tool
def raw_bytes() -> bytes:
    """Bytes that are not UTF-8."""
    return b"\xff\x00"


@tool
def nested_bytes() -> dict:
    """A dict holding bytes that are not UTF-8."""
    return {"data": b"\xfe"}


@tool
def unshowable() -> object:
    """An object that cannot be written at all."""
    return Unshowable()


def test_a_result_that_is_not_json_comes_back_as_text_not_a_crash():
    assert asyncio.run(raw_bytes.call({})) == '"b\'\\\\xff\\\\x00\'"'
    assert "\\\\xfe" in asyncio.run(nested_bytes.call({}))
    assert asyncio.run(unshowable.call({})).startswith("error: the result of unshowable (Unshowable) cannot be shown")


def test_a_tool_returning_bytes_does_not_kill_its_particle():
    def reply(request):
        last = request.messages[-1]
        return f"got {last.content}" if last.role == "tool" else '<tool_call>{"name": "raw_bytes"}</tool_call>'

    agent = Agent(name="a", backend=Scripted(reply), tools=[raw_bytes])

    async def program():
        return await agent.ask("go")

    r = policies.Importance(num_particles=1, seed=0).run(program)
    assert r.particles[0].status == "finished" and r.particles[0].value == "got \"b'\\\\xff\\\\x00'\""
