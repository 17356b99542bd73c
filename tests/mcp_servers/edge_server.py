"""A real MCP server for the edge-case tests (tests/test_mcp_edges.py), written with the official
SDK's `MCPServer`. Its tools answer with what a text-only client has to cope with:

- `image()`            an image block (a 1x1 PNG);
- `resource(binary)`   an embedded resource, text or binary;
- `structured()`       structured content only (a `CallToolResult` without text blocks);
- `huge(n)`            a text of `n` characters;
- `noisy()`            prints to stdout (the stdio protocol's channel) and answers;
- `slow_exit(seconds)` sleeps, then kills the server process in the middle of the call;
- `add(a, b)`          the same name as calc_server's tool (a name collision);
- `nested(point, tags, mode)`  an object argument, a list and a Literal, for schema checks.

    python -m tests.mcp_servers.edge_server                 # stdio (the default)
    python -m tests.mcp_servers.edge_server --http PORT     # streamable HTTP on 127.0.0.1:PORT/mcp
    python -m tests.mcp_servers.edge_server --die-at-start  # exits (code 4) before the handshake
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from typing import Literal

from mcp.server.mcpserver import MCPServer
from mcp_types import BlobResourceContents, CallToolResult, EmbeddedResource, ImageContent, TextResourceContents
from pydantic import BaseModel

server = MCPServer("edge", log_level="WARNING")

PNG_1X1 = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()


class Point(BaseModel):
    x: int
    y: int


@server.tool()
def image() -> CallToolResult:
    """Answer with a 1x1 PNG image."""
    return CallToolResult(content=[ImageContent(type="image", data=PNG_1X1, mime_type="image/png")])


@server.tool()
def resource(binary: bool = False) -> CallToolResult:
    """Answer with an embedded resource, text or binary."""
    if binary:
        contents = BlobResourceContents(uri="file:///data.bin", blob=base64.b64encode(b"\x00\x01").decode(),
                                        mime_type="application/octet-stream")
    else:
        contents = TextResourceContents(uri="file:///notes.txt", text="the notes", mime_type="text/plain")
    return CallToolResult(content=[EmbeddedResource(type="resource", resource=contents)])


@server.tool()
def structured() -> CallToolResult:
    """Answer with structured content and no text blocks."""
    return CallToolResult(content=[], structured_content={"temperature": 21.5, "unit": "C"})


@server.tool()
def huge(n: int) -> str:
    """Answer with a text of n characters."""
    return "x" * n


@server.tool()
def noisy() -> str:
    """Print to stdout (the protocol's channel), then answer."""
    print("debug: this line is not JSON-RPC", flush=True)
    return "quiet now"


@server.tool()
async def slow_exit(seconds: float) -> str:
    """Sleep, then kill the server process in the middle of the call."""
    await asyncio.sleep(seconds)
    os._exit(5)


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers (edge's own add: the name collides with calc's)."""
    return 1000 + a + b


@server.tool()
def nested(point: Point, tags: list[str], mode: Literal["fast", "slow"] = "fast") -> str:
    """Take an object, a list and a literal."""
    return f"{point.x},{point.y} {'/'.join(tags)} {mode}"


@server.tool()
def pid() -> int:
    """This server's process id."""
    return os.getpid()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, default=None, help="serve streamable HTTP on 127.0.0.1:PORT")
    parser.add_argument("--die-at-start", action="store_true", help="exit with code 4 before the handshake")
    args = parser.parse_args()
    if args.die_at_start:
        print("edge server: refusing to start (--die-at-start)", file=sys.stderr, flush=True)
        sys.exit(4)
    if args.http is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.http)


if __name__ == "__main__":
    main()
