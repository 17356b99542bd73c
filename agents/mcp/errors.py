"""What can go wrong with an MCP server, as errors that name the server, the tool and the reason."""

from __future__ import annotations

from typing import Literal

from swarm.errors import ParticleLost, SwarmError

Reason = Literal["unavailable", "crashed", "timeout", "protocol_error", "tool_error"]


class MCPCallFailed(ParticleLost):
    """An MCP tool call failed for a reason outside the program: the server could not be started or
    reached ("unavailable"), closed the connection mid-call ("crashed"), did not answer within the
    timeout ("timeout"), answered with a JSON-RPC error ("protocol_error"), or reported the tool's
    own failure (`isError`, "tool_error", unless the tools were made with `errors="reply"`).

    Raised inside the particle that made the call. It is a `ParticleLost`: that particle is lost
    (missing data, excluded from normalisation and from Ẑ), not killed, and the other particles go
    on; the message (with the server's last stderr lines for a crash) is the particle's ErrorEvent.
    """

    def __init__(self, message: str, *, server: str, tool: str, reason: Reason) -> None:
        super().__init__(f"MCP server {server!r}, tool {tool!r}: {reason}: {message}", source=f"mcp:{server}")
        self.server = server
        self.tool = tool
        self.reason = reason
        self.detail = message

    def __reduce__(self):  # keep the fields across pickling (Ray ships errors between processes)
        return (_rebuild, (self.detail, self.server, self.tool, self.reason))


def _rebuild(detail: str, server: str, tool: str, reason: Reason) -> MCPCallFailed:
    return MCPCallFailed(detail, server=server, tool=tool, reason=reason)


class MCPServerError(SwarmError):
    """An MCP server could not be used to make tools at all (`mcp_tools`): it could not be started
    or reached, or its tool list is unusable. Raised to the caller, outside any particle."""


def describe_cause(exc: BaseException) -> str:
    """"<Error>: <message>" of the first leaf of an exception group (the SDK's task groups wrap the
    cause: a server that exited before its handshake is `ExceptionGroup(... MCPError('Connection
    closed'))`, an unreachable URL `ExceptionGroup(... ConnectError(...))`), or of `exc` itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
