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
from agents.mcp import MCPCallFailed, MCPServerParams, MCPTool, close_all
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
