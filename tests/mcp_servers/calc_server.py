"""A real MCP server for the tests, written with the official SDK's `MCPServer` (mcp 2.x's name for
FastMCP). Tools:

- `add(a, b)`        works: returns a + b;
- `fail(reason)`     always raises: the server answers with an error result (`isError: true`);
- `hang(seconds)`    sleeps, to run past a client's timeout;
- `crash()`          kills the server process (exit code 3) in the middle of the call.

Every call that reaches a tool appends one line `<tool> <parent pid> <server pid> <json arguments>`
to the file named by the environment variable `MCP_CALL_LOG` (O_APPEND, one write per line), so a
test counts the calls that really reached a server, which server process received them and which
process had started it.

    python -m tests.mcp_servers.calc_server                 # stdio (the default)
    python -m tests.mcp_servers.calc_server --http PORT     # streamable HTTP on 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("calc", log_level="WARNING")


def _log_call(tool: str, arguments: dict) -> None:
    path = os.environ.get("MCP_CALL_LOG")
    if path:
        line = f"{tool} {os.getppid()} {os.getpid()} {json.dumps(arguments, sort_keys=True)}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers and return their sum."""
    _log_call("add", {"a": a, "b": b})
    return a + b


@server.tool()
def fail(reason: str) -> str:
    """A tool that always fails."""
    _log_call("fail", {"reason": reason})
    raise ToolError(f"the fail tool failed on purpose: {reason}")  # a ToolError's message reaches the client


@server.tool()
async def hang(seconds: float) -> str:
    """Sleep for `seconds`, then answer."""
    _log_call("hang", {"seconds": seconds})
    await asyncio.sleep(seconds)
    return "woke up"


@server.tool()
def crash() -> str:
    """Kill the server process."""
    _log_call("crash", {})
    os._exit(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, default=None, help="serve streamable HTTP on 127.0.0.1:PORT")
    args = parser.parse_args()
    if args.http is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.http)


if __name__ == "__main__":
    main()
