"""MCP tools over streamable HTTP (a real server on 127.0.0.1) and under `runtime="ray"` (the tools
are pickled to the segment workers, which open their own sessions). The model asking for the calls
is the `Scripted` TEST DOUBLE; server, client, policies and Ray are real."""

from __future__ import annotations

import asyncio
import os
import pickle

import pytest

import policies
from agents import Agent, mcp_tools
from agents.mcp import MCPCallFailed, close_all
from agents.mcp.connection import server_starts
from agents.secrets import redact
from swarm import factor
from tests.mcp_servers.harness import CallLog, adds, calc_http, calc_stdio, tool_caller


@pytest.fixture
def log(tmp_path):
    yield CallLog(tmp_path / "calls.log")
    close_all()


def _adding_program(tools):
    agent = Agent(name="solver", backend=tool_caller(adds), tools=tools, max_tool_rounds=1, hosting="local")

    async def program():
        reply = await agent.ask("Add two numbers.", name="q")
        factor("small", -int(reply.split()[-1].rstrip(".")) / 10)
        return reply

    return program


def _check_calls(result, log):
    """Every particle's recorded call reached the server once, and its result is the sum."""
    received = sorted((a["a"], a["b"]) for _, a in log.calls("add"))
    recorded = []
    for p in result.particles:
        (call,) = [e for e in p.trace.of_type("interact") if e.kind == "tool_call"]
        assert call.receiver == "mcp:calc/add"
        recorded.append((call.content["a"], call.content["b"]))
        assert p.trace["q/call0/result"].value == str(call.content["a"] + call.content["b"])
    return received, recorded


@pytest.mark.server
def test_streamable_http_server_on_loopback(log):
    with calc_http(log) as (url, process):
        tools = mcp_tools(url=url, include=["add"], headers={"X-Test-Token": "token-abcdef-123456"}, timeout_s=60)
        assert [t.endpoint for t in tools] == ["mcp:calc/add"]
        assert "token-abcdef-123456" not in repr(tools[0]) and redact("token-abcdef-123456") == "**********"
        n = 8
        r = policies.SMC(num_particles=n, seed=2).run(_adding_program(tools))
        received, recorded = _check_calls(r, log)
        # SMC resamples without calling again: the server saw one call per initial particle, and
        # every surviving particle's call is one of them
        assert len(received) == n and set(recorded) <= set(received)
        process.terminate()
        process.wait(timeout=20)
        with pytest.raises(MCPCallFailed) as info:  # the server is gone: the call is lost, not answered
            asyncio.run(tools[0].call({"a": 1, "b": 2}))
        assert info.value.reason in ("crashed", "unavailable") and info.value.server == "calc"


@pytest.mark.server
def test_tools_pickle_without_their_session(log):
    tools = mcp_tools(**calc_stdio(log), include=["add"])
    copy = pickle.loads(pickle.dumps(tools[0]))  # what a Ray worker receives: the server's address only
    assert copy.server == tools[0].server and copy.input_schema == tools[0].input_schema
    assert asyncio.run(copy.call({"a": 20, "b": 22})) == "42"
    assert list(server_starts().values()) == [1]  # in this process the copy uses the open session
    assert log.callers() == {os.getpid()}


@pytest.mark.ray
@pytest.mark.server
def test_under_ray_each_worker_opens_its_own_session(log):
    from tests.ray_fixtures import local_ray

    tools = mcp_tools(**calc_stdio(log), include=["add"], timeout_s=60)
    n = 8
    with local_ray(num_cpus=2):
        r = policies.SMC(num_particles=n, seed=4, runtime="ray").run(_adding_program(tools))
    received, recorded = _check_calls(r, log)
    assert len(received) == n and set(recorded) <= set(received)
    # the driver listed the tools; the calls came from servers the segment workers started
    assert os.getpid() not in log.callers() and len(log.callers()) >= 1
    reference = policies.SMC(num_particles=n, seed=4).run(_adding_program(tools))
    assert [(p.value, p.log_weight) for p in r.particles] == [(p.value, p.log_weight) for p in reference.particles]
