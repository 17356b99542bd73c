"""The tools of an MCP server as agent tools.

    from agents import Agent, mcp_tools

    calc = mcp_tools(command=["python", "calc_server.py"])          # a stdio server
    web = mcp_tools(url="http://127.0.0.1:8000/mcp", include=["search"])   # streamable HTTP
    solver = Agent(name="solver", tools=[*calc, *web])

`mcp_tools` connects once, lists the server's tools (their names, descriptions and input schemas
become what the agent is shown, exactly as for typed Python tools) and returns one `MCPTool` per
tool. The list is fetched once (like the OpenAI Agents SDK's `cache_tools_list=True`): the prompt
an agent is given does not change in the middle of a run.

A call is what any tool call is (`agents.tools`): an `interact` event from the agent to
"mcp:SERVER/TOOL" with the arguments, a point-mass sample site whose value is the result (so replay
and resume feed the recorded result back and never call the server again), and an `interact` event
back. Arguments that do not fit the tool's input schema are answered to the agent as
"error: invalid arguments ..." without reaching the server (that is the model's doing). A server that
cannot be reached, crashes, outlives `timeout_s` or answers with a JSON-RPC error raises
`MCPCallFailed` (a `ParticleLost`): the particle that made the call is lost, the others go on. A
tool that reports its own failure (`isError`) does the same with `errors="lose"` (the default), or
is answered to the agent as "error: ..." with `errors="reply"` (for tools whose errors the agent
should read and act on, e.g. "no such file").
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Callable, Iterable, Literal, Sequence

import jsonschema
import mcp_types as types
from pydantic import BaseModel, Field

from agents.mcp.connection import ServerSession, with_session, with_session_sync
from agents.mcp.errors import MCPCallFailed, MCPServerError, describe_cause
from agents.mcp.params import MCPServerParams
from agents.tools import Tool, parse_arguments
from swarm.errors import SwarmError

ErrorPolicy = Literal["lose", "reply"]
Approval = bool | Callable[[Any, Any], bool]
"""`requires_approval`: True (every call), or `callable(tool, arguments) -> bool` (`agents.approvals`)."""


class MCPTool(Tool):
    """One tool of one MCP server. Holds only how to reach the server (no live connection), so it
    pickles: a Ray segment worker that receives it opens its own session at its first call."""

    fn: Callable[..., Any] | None = None
    args_model: type[BaseModel] | None = None
    server: MCPServerParams
    server_name: str
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    timeout_s: float = Field(30.0, gt=0)
    """Seconds a call may take before the particle is lost."""
    errors: ErrorPolicy = "lose"
    remote_name: str = ""
    """The tool's name on the server when the agent knows it by another (`mcp_tools(prefix=...)`)."""

    @property
    def tool_name(self) -> str:
        """The name the server knows the tool by."""
        return self.remote_name or self.name

    @property
    def endpoint(self) -> str:
        return f"mcp:{self.server_name}/{self.tool_name}"

    def parameters_schema(self) -> dict[str, Any]:
        return self.input_schema

    async def call(self, arguments: Any) -> str:
        """Validate the arguments against the input schema, call the server, return its text."""
        args, problem = self.validated(arguments)
        if problem is not None:
            return f"error: invalid arguments for {self.name}: {problem}"

        async def call_on(session: ServerSession) -> types.CallToolResult:
            return await session.call_tool(self.server_name, self.tool_name, args, self.timeout_s)

        result = await with_session(self.server, call_on)
        text = render_result(result)
        if result.is_error:
            if self.errors == "reply":
                return f"error: {text}"
            raise MCPCallFailed(text or "the tool reported an error without a message",
                                server=self.server_name, tool=self.tool_name, reason="tool_error")
        return text

    def validated(self, arguments: Any) -> tuple[dict[str, Any], str | None]:
        """(arguments as a dict, None) or ({}, what is wrong with them)."""
        arguments, problem = parse_arguments(arguments)
        if problem is not None:
            return {}, problem
        validator = jsonschema.validators.validator_for(self.input_schema)(self.input_schema)
        problems = sorted(validator.iter_errors(arguments), key=lambda e: list(e.path))
        if problems:
            return {}, "; ".join(f"{'/'.join(map(str, e.path)) or 'arguments'}: {e.message}" for e in problems[:5])
        return arguments, None


def render_result(result: types.CallToolResult) -> str:
    """The text an agent reads: the text blocks, one per line; other blocks as a bracketed note;
    the structured content as JSON when there is no text."""
    parts = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, (types.ImageContent, types.AudioContent)):
            parts.append(f"[{block.type} {block.mime_type}, {len(block.data)} base64 characters]")
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            parts.append(resource.text if isinstance(resource, types.TextResourceContents) else f"[resource {resource.uri}]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource link {block.uri}]")
        else:  # a block type newer than this code
            parts.append(f"[{getattr(block, 'type', type(block).__name__)} content]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, sort_keys=True, default=str))
    return "\n".join(parts)


def _params(command: Sequence[str] | str | None, url: str | None, **options: Any) -> MCPServerParams:
    """Validated server parameters (header values registered as secrets)."""
    try:
        params = MCPServerParams(command=command, url=url, **{k: v for k, v in options.items() if v is not None})
    except ValueError as exc:  # pydantic names the field
        raise MCPServerError(f"mcp_tools: {exc}") from None
    if params.headers:
        from agents.secrets import register_secret

        for value in params.headers.values():
            register_secret(value)
    return params


class _ListingFailed(SwarmError):
    """Why a server's tools could not be listed: the innermost cause, and the server's last stderr."""


def _unlisted(params: MCPServerParams, name: str | None, exc: BaseException) -> MCPServerError:
    reason = str(exc) if isinstance(exc, _ListingFailed) else describe_cause(exc)
    return MCPServerError(f"MCP server {name or params.describe()!r}: could not list its tools: {reason}")


def build_tools(params: MCPServerParams, server_name: str, specs: list[types.Tool], *, name: str | None,
                include: Iterable[str] | None, timeout_s: float, errors: ErrorPolicy,
                requires_approval: Approval = False, prefix: str = "") -> list[MCPTool]:
    """One `MCPTool` per listed tool (those in `include`, in its order, when given), named
    `prefix + its name` for the agent."""
    server = name or server_name or params.describe()
    if not server or "/" in server:
        raise MCPServerError(f"mcp_tools: the server name must be non-empty without '/', got {server!r} (pass name=...)")
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_.-]*", prefix):
        raise MCPServerError(f"mcp_tools: prefix must be letters, digits, '_', '-' or '.', got {prefix!r}")
    by_name = {spec.name: spec for spec in specs}
    wanted = list(include) if include is not None else list(by_name)
    missing = [t for t in wanted if t not in by_name]
    if missing:
        raise MCPServerError(f"MCP server {server!r} has no tool {missing[0]!r}; its tools: {', '.join(by_name) or 'none'}")
    tools = []
    for tool_name in wanted:
        spec = by_name[tool_name]
        try:
            jsonschema.validators.validator_for(spec.input_schema).check_schema(spec.input_schema)
        except jsonschema.SchemaError as exc:
            raise MCPServerError(f"MCP server {server!r}, tool {tool_name!r}: invalid input schema: {exc.message}") from None
        tools.append(MCPTool(name=prefix + tool_name, remote_name=tool_name if prefix else "", description=spec.description or spec.title or "", server=params,
                             server_name=server, input_schema=dict(spec.input_schema), timeout_s=timeout_s,
                             errors=errors, requires_approval=requires_approval))
    return tools


async def _listing(session: ServerSession) -> tuple[str, list[types.Tool]]:
    """The server's name and tools; on failure the cause and what the server wrote to stderr (a
    stdio server's stderr goes to a file, not the terminal: e.g. "can't open file" is only there)."""
    try:
        return await session.list_tools()
    except Exception as exc:  # noqa: BLE001 - reported by mcp_tools, named
        reason = describe_cause(exc)
        if tail := session.stderr_tail().strip():
            reason += f"\nserver stderr (last lines):\n{tail}"
        raise _ListingFailed(reason) from exc


def mcp_tools(command: Sequence[str] | str | None = None, *, url: str | None = None, name: str | None = None,
              include: Iterable[str] | None = None, timeout_s: float = 30.0, errors: ErrorPolicy = "lose",
              env: dict[str, str] | None = None, cwd: str | None = None, headers: dict[str, str] | None = None,
              connect_timeout_s: float | None = None, requires_approval: Approval = False,
              prefix: str = "") -> list[MCPTool]:
    """The tools of the MCP server started by `command` (stdio) or reached at `url` (streamable
    HTTP), for `Agent(tools=...)`.

    `name` is the server's name in traces (default: the name it reports); `include` keeps only
    these tools; `timeout_s` bounds each call; `errors` is what a tool's own error result does
    ("lose" the particle, or "reply" to the agent). `env`/`cwd` (stdio) and `headers` (HTTP) as in
    `MCPServerParams`. `requires_approval` (True, or `callable(tool, arguments) -> bool`): a person
    approves calls first (`agents.approvals`). `prefix` is put before every tool's name as the agent
    sees it (e.g. "edge_" for two servers that both have `add`: in one agent the first tool of a
    name shadows the others); calls still go to the server's own name. The session opened here
    stays open for the process's later calls.
    """
    params = _params(command, url, env=env, cwd=cwd, headers=headers, connect_timeout_s=connect_timeout_s)
    try:
        server_name, specs = with_session_sync(params, _listing, params.connect_timeout_s + timeout_s)
    except Exception as exc:  # noqa: BLE001 - the server could not be started or listed
        raise _unlisted(params, name, exc) from exc
    return build_tools(params, server_name, specs, name=name, include=include, timeout_s=timeout_s, errors=errors,
                       requires_approval=requires_approval, prefix=prefix)


async def mcp_tools_async(command: Sequence[str] | str | None = None, *, url: str | None = None,
                          name: str | None = None, include: Iterable[str] | None = None, timeout_s: float = 30.0,
                          errors: ErrorPolicy = "lose", env: dict[str, str] | None = None, cwd: str | None = None,
                          headers: dict[str, str] | None = None, connect_timeout_s: float | None = None,
                          requires_approval: Approval = False, prefix: str = "") -> list[MCPTool]:
    """`mcp_tools` for async code (the same arguments)."""
    params = _params(command, url, env=env, cwd=cwd, headers=headers, connect_timeout_s=connect_timeout_s)
    try:
        server_name, specs = await asyncio.wait_for(with_session(params, _listing), params.connect_timeout_s + timeout_s)
    except Exception as exc:  # noqa: BLE001
        raise _unlisted(params, name, exc) from exc
    return build_tools(params, server_name, specs, name=name, include=include, timeout_s=timeout_s, errors=errors,
                       requires_approval=requires_approval, prefix=prefix)
