"""One MCP session per server per process, all owned by one background event loop.

Particles run in many event loops (one per `policy.run`, one per Ray segment worker, ...), while an
MCP session is an anyio task group bound to the loop that opened it, and a stdio server is a child
process that should start once, not once per run or per particle. So every session of a process
lives in one daemon thread running its own asyncio loop ("swarm-mcp"); a call from any loop or
thread is a coroutine submitted there (`asyncio.run_coroutine_threadsafe`) and awaited through
`asyncio.wrap_future` (a cancelled caller cancels its call). The hop is lost in the JSON-RPC round
trip: bench/mcp_overhead.py measured `MCPTool.call` at 1.02x the SDK's own `call_tool` one call at a
time (9.7 vs 9.5 ms on a loaded 2-core machine) and 0.70x with 50 calls in flight.

Lifecycle of a server's session:
- started on first use (lazily: in a Ray segment worker, at the first call made there), by one
  task that enters the SDK's `Client` context and, as anyio requires, is also the one to exit it;
- shared by every particle of the process: the SDK multiplexes concurrent requests by id;
- after the server closed the connection (a crash), dropped: the call in flight fails, and the
  next call starts the server again;
- started by one attempt at a time, which every call that finds no session awaits (a server that
  exits or hangs at start fails them all once, `tests/test_mcp_edges.py`);
- closed by `close_all()` and at interpreter exit (atexit): the stdio server's stdin is closed and
  the process terminated, the HTTP session deleted.

Failures are raised as `MCPCallFailed` (a `ParticleLost`) naming the server, the tool and the
reason, with the last lines a stdio server wrote to stderr when it crashed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import tempfile
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, CallToolResult
from mcp_types import Tool as ToolSpec

from agents.mcp.errors import MCPCallFailed, Reason, describe_cause
from agents.mcp.params import MCPServerParams

T = TypeVar("T")
_CLOSE_TIMEOUT_S = 5.0
_STDERR_TAIL_BYTES = 1500


class ServerSession:
    """The connection to one server, shared by every particle of this process."""

    def __init__(self, params: MCPServerParams) -> None:
        self.params = params
        self.client: Client | None = None
        self.starts = 0
        """How many times the server was started (or reached) in this process."""
        self._stop: asyncio.Event | None = None
        self._owner: asyncio.Task | None = None
        self._starting: asyncio.Task[Client] | None = None
        """The start under way, which every caller that finds no client awaits."""
        self._stderr = tempfile.TemporaryFile() if params.command is not None else None

    # -- opening and closing -----------------------------------------------------------------------
    async def connected(self) -> Client:
        """The live client, starting (or restarting) the server first when there is none. Callers
        that find a start under way wait for that one attempt and share its outcome: a server that
        hangs or exits at start fails every waiting call once, not one connect timeout after another."""
        if self.client is not None:
            return self.client
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start_attempt())
            self._starting.add_done_callback(_retrieve)  # read even when every caller gave up
        return await asyncio.shield(self._starting)

    async def _start_attempt(self) -> Client:
        try:
            return await self._start()
        finally:
            self._starting = None

    async def _start(self) -> Client:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Client] = loop.create_future()
        stop = asyncio.Event()
        owner = loop.create_task(self._own(ready, stop), name=f"mcp {self.params.describe()}")
        try:
            async with asyncio.timeout(self.params.connect_timeout_s):
                client = await asyncio.shield(ready)
        except BaseException as exc:
            ready.cancel()
            stop.set()
            owner.cancel()
            await asyncio.gather(owner, return_exceptions=True)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"no MCP handshake within {self.params.connect_timeout_s:g} s "
                                   "(connect_timeout_s)") from None
            raise
        self.client, self._stop, self._owner = client, stop, owner
        self.starts += 1
        return client

    async def _own(self, ready: asyncio.Future, stop: asyncio.Event) -> None:
        """Enter the client's context, hand the client out, wait for `stop`, exit the context."""
        try:
            async with Client(self._transport()) as client:
                if ready.done():  # the caller gave up (connect timeout) as the handshake finished
                    return
                ready.set_result(client)
                await stop.wait()
        except BaseException as exc:  # noqa: BLE001 - reported through `ready`, or the session is gone
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
        finally:
            if self._owner is asyncio.current_task():
                self.client = self._stop = self._owner = None

    def _transport(self) -> Any:
        p = self.params
        if p.command is not None:
            return stdio_client(StdioServerParameters(command=p.command[0], args=list(p.command[1:]),
                                                      env=dict(p.env) or None, cwd=p.cwd),
                                errlog=self._stderr)
        return _http_transport(p.url, p.headers)

    async def discard(self, client: Client | None = None) -> None:
        """Close the session (only if it is still `client`, when given); the next call reconnects."""
        if self._owner is None or (client is not None and self.client is not client):
            return
        owner, stop = self._owner, self._stop
        self.client = self._stop = self._owner = None
        assert stop is not None
        stop.set()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await asyncio.gather(owner, return_exceptions=True)
        except TimeoutError:
            owner.cancel()
            await asyncio.gather(owner, return_exceptions=True)

    def stderr_tail(self) -> str:
        """The last lines a stdio server wrote to its stderr (empty for HTTP servers)."""
        if self._stderr is None:
            return ""
        fd = self._stderr.fileno()
        size = os.fstat(fd).st_size
        tail = os.pread(fd, _STDERR_TAIL_BYTES, max(0, size - _STDERR_TAIL_BYTES)).decode("utf-8", "replace")
        return tail if size <= _STDERR_TAIL_BYTES else "..." + tail.split("\n", 1)[-1]

    # -- requests ----------------------------------------------------------------------------------
    async def list_tools(self) -> tuple[str, list[ToolSpec]]:
        """(the server's own name, every tool it lists), walking all pages."""
        client = await self.connected()
        tools: list[ToolSpec] = []
        cursor = None
        for _ in range(1000):
            page = await client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        info = client.server_info
        return (info.name if info is not None else ""), tools

    async def call_tool(self, server: str, tool: str, arguments: dict[str, Any], timeout_s: float) -> CallToolResult:
        """Call `tool`; any failure of the server or the connection raises `MCPCallFailed`."""
        try:
            client = await self.connected()
        except Exception as exc:  # noqa: BLE001 - whatever stopped the server from starting
            raise self._failed(server, tool, "unavailable", exc) from exc
        try:
            async with asyncio.timeout(timeout_s + _CLOSE_TIMEOUT_S):  # a backstop: the SDK's timeout fires first
                return await client.call_tool(tool, arguments, read_timeout_seconds=timeout_s)
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise self._failed(server, tool, "timeout", f"no answer within {timeout_s:g} s") from exc
            if exc.code == CONNECTION_CLOSED:
                await self.discard(client)
                raise self._failed(server, tool, "crashed", exc) from exc
            raise self._failed(server, tool, "protocol_error", exc) from exc
        except TimeoutError as exc:
            raise self._failed(server, tool, "timeout", f"no answer within {timeout_s:g} s") from exc
        except Exception as exc:  # noqa: BLE001 - the transport broke (e.g. the HTTP server went away)
            await self.discard(client)
            raise self._failed(server, tool, "crashed", exc) from exc

    def _failed(self, server: str, tool: str, reason: Reason, cause: Any) -> MCPCallFailed:
        text = describe_cause(cause) if isinstance(cause, BaseException) else str(cause)
        if reason in ("crashed", "unavailable") and (tail := self.stderr_tail().strip()):
            text += f"\nserver stderr (last lines):\n{tail}"
        return MCPCallFailed(text, server=server, tool=tool, reason=reason)


def _retrieve(task: asyncio.Task) -> None:
    """Mark a finished task's exception as retrieved (its callers report it, if any are left)."""
    if not task.cancelled():
        task.exception()


@contextlib.asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    """The SDK's streamable-HTTP transport with our headers (its default timeouts: 30 s, 300 s read)."""
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with httpx2.AsyncClient(headers=dict(headers), timeout=timeout) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            yield streams


# -- the process's MCP loop ------------------------------------------------------------------------
class _Home:
    """The background loop of this process and the sessions it owns (keyed by `params.key()`)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.sessions: dict[str, ServerSession] = {}
        self.thread = threading.Thread(target=self.loop.run_forever, name="swarm-mcp", daemon=True)
        self.thread.start()

    def session(self, params: MCPServerParams) -> ServerSession:  # called on the home loop only
        key = params.key()
        if key not in self.sessions:
            self.sessions[key] = ServerSession(params)
        return self.sessions[key]

    async def close_sessions(self) -> None:
        sessions, self.sessions = list(self.sessions.values()), {}
        await asyncio.gather(*(s.discard() for s in sessions), return_exceptions=True)


_home: _Home | None = None
_home_lock = threading.Lock()


def _current_home() -> _Home:
    global _home
    with _home_lock:
        if _home is None or _home.pid != os.getpid() or not _home.thread.is_alive():
            _home = _Home()  # first use, or a forked child: the parent's thread did not come along
        return _home


def _submit(params: MCPServerParams, fn: Callable[[ServerSession], Awaitable[T]]):
    home = _current_home()

    async def job() -> T:
        return await fn(home.session(params))

    return asyncio.run_coroutine_threadsafe(job(), home.loop)


async def with_session(params: MCPServerParams, fn: Callable[[ServerSession], Awaitable[T]]) -> T:
    """Run `fn(session)` on the MCP loop and await its result from any event loop."""
    return await asyncio.wrap_future(_submit(params, fn))


def with_session_sync(params: MCPServerParams, fn: Callable[[ServerSession], Awaitable[T]],
                      timeout_s: float | None = None) -> T:
    """The same, blocking the calling thread (not to be called from the MCP loop itself)."""
    future = _submit(params, fn)
    try:
        return future.result(timeout_s)
    except TimeoutError:
        future.cancel()
        raise TimeoutError(f"MCP server {params.describe()!r}: no answer within {timeout_s:g} s") from None


def close_all() -> None:
    """Close every MCP session of this process (stdio servers are terminated); later calls reconnect."""
    home = _home
    if home is None or home.pid != os.getpid() or not home.thread.is_alive():
        return
    future = asyncio.run_coroutine_threadsafe(home.close_sessions(), home.loop)
    try:
        future.result(2 * _CLOSE_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - best effort at shutdown
        future.cancel()


def server_starts() -> dict[str, int]:
    """{server description: times started in this process}, for tests and diagnostics."""
    home = _home
    if home is None or home.pid != os.getpid():
        return {}
    return {s.params.describe(): s.starts for s in list(home.sessions.values())}


atexit.register(close_all)
