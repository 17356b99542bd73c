"""What the MCP tests share: starting the calc server (stdio or streamable HTTP on 127.0.0.1),
counting the calls it received, a TEST DOUBLE model that asks for tool calls, the worked examples
that make the embedded model call the calc server's `add`, and the temporary shim for lost particles. (Free ports and stopping a server: tests/llama_server.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from agents import ChatMessage
from agents.backends.scripted import Scripted
from tests.llama_server import _stop, free_port

REPO = Path(__file__).resolve().parents[2]
CALC = [sys.executable, "-m", "tests.mcp_servers.calc_server"]

WORKED_EXAMPLES = [
    ChatMessage(role="user", content="What is 4 plus 9?"),
    ChatMessage(role="assistant", content='<tool_call>{"name": "add", "arguments": {"a": 4, "b": 9}}</tool_call>'),
    ChatMessage(role="tool", content="13", name="add"),
    ChatMessage(role="assistant", content="The answer is 13."),
    ChatMessage(role="user", content="What is 12 plus 30?"),
    ChatMessage(role="assistant", content='<tool_call>{"name": "add", "arguments": {"a": 12, "b": 30}}</tool_call>'),
    ChatMessage(role="tool", content="42", name="add"),
    ChatMessage(role="assistant", content="The answer is 42."),
]
"""Two worked tool calls in the history (the call in `agents.tools`' text protocol, the tool's
answer, the reply): the 135M model does not call tools from instructions alone, but with these it
writes a well-formed `add` call for a new question (tests/test_mcp_llm.py: 6 of 6 at temperature 0.7)."""


class CallLog:
    """The calc server's call log (one line `<tool> <parent pid> <server pid> <json arguments>` a call)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def env(self) -> dict[str, str]:
        """The server's environment: the log path, and the repo on its import path."""
        return {"MCP_CALL_LOG": str(self.path), "PYTHONPATH": str(REPO)}

    def rows(self) -> list[tuple[str, int, int, dict]]:
        """(tool, pid of the process that started the server, server pid, arguments) per call."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            name, parent, server, args = line.split(" ", 3)
            out.append((name, int(parent), int(server), json.loads(args)))
        return out

    def calls(self, tool: str | None = None) -> list[tuple[str, dict]]:
        return [(name, args) for name, _, _, args in self.rows() if tool is None or name == tool]

    def callers(self) -> set[int]:
        """The processes whose server sessions received the calls."""
        return {parent for _, parent, _, _ in self.rows()}

    def servers(self) -> set[int]:
        """The server processes that received the calls."""
        return {server for _, _, server, _ in self.rows()}


def calc_stdio(log: CallLog) -> dict[str, Any]:
    """`mcp_tools` keyword arguments for the calc server as a stdio child process."""
    return {"command": CALC, "env": log.env, "cwd": str(REPO)}


@contextlib.contextmanager
def calc_http(log: CallLog, timeout_s: float = 60.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """The calc server on streamable HTTP at 127.0.0.1:<free port>/mcp; yields (url, process)."""
    port = free_port()
    process = subprocess.Popen([*CALC, "--http", str(port)], env={**os.environ, **log.env}, cwd=REPO,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = time.monotonic()
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None:
                raise RuntimeError(f"the calc server exited ({process.returncode}): {process.stderr.read().decode()[-2000:]}")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"the calc server did not listen on 127.0.0.1:{port} within {timeout_s:g} s")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp", process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    _stop(process)
    if process.stderr is not None:
        process.stderr.close()


def tool_caller(pick: Callable[[int], tuple[str, dict]]) -> Scripted:
    """A TEST DOUBLE model: its first turn asks for the tool call `pick(request seed)`, and after a
    tool result it answers "The answer is <result>." (no model: the tool call is what is tested)."""

    def reply(request: Any) -> str:
        last = request.messages[-1]
        if last.role == "tool":
            return f"The answer is {last.content}."
        name, arguments = pick(request.seed)
        return f'<tool_call>{json.dumps({"name": name, "arguments": arguments})}</tool_call>'

    return Scripted(reply)


def adds(seed: int) -> tuple[str, dict]:
    """Every particle adds two numbers that depend on its random stream."""
    return "add", {"a": seed % 50, "b": 7}
