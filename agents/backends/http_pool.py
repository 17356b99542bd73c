"""`HttpPool`: a bounded keep-alive pool of HTTP/1.1 connections to one endpoint, on asyncio streams.

The hot path of `OpenAICompatible`: thousands of particles each sending a small JSON request and
waiting tens of milliseconds. What a request costs here is one write and two reads on a connection
taken from a LIFO list of idle ones; responses come back as bytes for `json.loads`, with no
request/response objects, cookie jars or header multidicts on the way.

Why not a library (measured with bench/latency_hiding.py's fake endpoint in its own process, 3 waves
of N requests at concurrency N, medians of interleaved runs, ratio to a minimal asyncio keep-alive
client): httpx (the openai client's transport) 4.9x at N=256 and 28.9x at N=2,048 (its pool scans
every connection per request), aiohttp 1.6x and 1.8x even tuned (DummyCookieJar, no
decompression). This pool is that minimal client with the HTTP/1.1 rules a real server needs.

What it speaks: HTTP/1.1 (and HTTP/1.0 replies) over TCP or TLS (https, the default SSL context);
request bodies with Content-Length; responses framed by Content-Length, chunked transfer-encoding or
connection close; gzip/deflate bodies are decoded (it asks for identity). No proxies, no redirects
(a 3xx is returned as a status like any other), no HTTP/2.

Connections: at most `max_connections` open at once (callers wait for a free one); an idle
connection the server closed meanwhile is detected when taken, and a request that fails on a
*reused* connection before any byte of the reply arrived is sent once more on a fresh one (the
server closed it between requests: nothing was processed). The pool is bound to the event loop it
was made on; `OpenAICompatible` makes one per loop.

Time limits: a request (from taking a connection slot to the end of its reply, retry on a fresh
connection included) is cancelled after `timeout` seconds and raises `HttpTransportError(timed_out=
True)`, as `asyncio.timeout` would, but without a timer per request: every request of a pool has
the same limit and starts later than the ones before it, so the deadlines are in start order and
one timer, set for the earliest, serves them all (`_Deadlines`). At thousands of requests in
flight that is a dict insert and delete per request instead of a timer scheduled and cancelled.
"""

from __future__ import annotations

from swarm.errors import SwarmError

import asyncio
import ssl
import urllib.parse
import zlib
from typing import NamedTuple


class HttpTransportError(SwarmError):
    """A request got no HTTP reply: connection refused or reset, a malformed reply, or a timeout
    (`timed_out`). The message carries no header or body of the request."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class HttpReply(NamedTuple):
    status: int
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes


class _Stale(SwarmError):
    """A reused connection was closed by the server before it replied (retry on a fresh one)."""


class _Deadlines:
    """The deadlines of a pool's requests in flight, in start order (= deadline order: one timeout
    for all), with one loop timer set for the earliest. A request past its deadline has its task
    cancelled and its key in `expired`."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.expired: set[int] = set()
        self._pending: dict[int, tuple[float, asyncio.Task]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._next_key = 0

    def start(self, task: asyncio.Task) -> int:
        loop = task.get_loop()
        key = self._next_key = self._next_key + 1
        deadline = loop.time() + self.timeout
        self._pending[key] = (deadline, task)
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire, loop)
        return key

    def finish(self, key: int) -> bool:
        """Forget request `key`; whether it had expired."""
        self._pending.pop(key, None)
        if key in self.expired:
            self.expired.discard(key)
            return True
        return False

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        while self._pending:
            key = next(iter(self._pending))
            deadline, task = self._pending[key]
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire, loop)
                return
            del self._pending[key]
            self.expired.add(key)
            task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class HttpPool:
    """Keep-alive connections to the host of `base_url`; `post(path, body)` → `HttpReply`."""

    def __init__(self, base_url: str, *, max_connections: int, timeout: float,
                 headers: dict[str, str] | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"HttpPool: base_url must be http(s)://host[:port]/path, got scheme {parts.scheme!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/")
        self.timeout = float(timeout)
        host_header = self.host if parts.port is None else f"{self.host}:{parts.port}"
        fixed = {"Host": host_header, "User-Agent": "plp-swarm", "Accept": "application/json",
                 "Accept-Encoding": "identity", "Connection": "keep-alive", **(headers or {})}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._idle: list[_Conn] = []
        self._gate = asyncio.Semaphore(max_connections)
        self._deadlines = _Deadlines(self.timeout)
        self.opened = 0
        """Connections opened so far (keep-alive reuse keeps it near the concurrency)."""

    async def post(self, path: str, body: bytes, content_type: str = "application/json") -> HttpReply:
        head = (f"POST {self.prefix}{path} HTTP/1.1\r\n{self._head}Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        return await self._request(head + body)

    async def get(self, path: str) -> HttpReply:
        return await self._request(f"GET {self.prefix}{path} HTTP/1.1\r\n{self._head}\r\n".encode("latin-1"))

    async def close(self) -> None:
        self._deadlines.close()
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # ---- one exchange ---------------------------------------------------------------------------
    async def _request(self, data: bytes) -> HttpReply:
        async with self._gate:
            task = asyncio.current_task()
            assert task is not None, "HttpPool requests run in a task"
            key = self._deadlines.start(task)
            try:
                return await self._exchange_with_retry(data)
            except asyncio.CancelledError:
                if self._deadlines.finish(key) and task.uncancel() == 0:  # cancelled for its deadline only
                    raise HttpTransportError(f"request timed out after {self.timeout:g}s", timed_out=True) from None
                raise
            finally:
                self._deadlines.finish(key)

    async def _exchange_with_retry(self, data: bytes) -> HttpReply:
        conn = self._take_idle()
        if conn is None:
            return await self._exchange(await self._open(), data, reused=False)
        try:
            return await self._exchange(conn, data, reused=True)
        except _Stale:
            return await self._exchange(await self._open(), data, reused=False)

    def _take_idle(self) -> _Conn | None:
        """The most recently used idle connection the server has not closed, if any."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
        return None

    async def _open(self) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl, limit=1 << 20)
        except OSError as exc:
            raise HttpTransportError(f"{type(exc).__name__}: {exc.strerror or exc}") from None
        self.opened += 1
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, data: bytes, reused: bool) -> HttpReply:
        keep = False
        try:
            conn.writer.write(data)
            try:
                head = await conn.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                if reused and not getattr(exc, "partial", b""):
                    raise _Stale() from None
                raise HttpTransportError(_closed_message(exc)) from None
            reply, keep = await _read_reply(conn.reader, head)
            return reply
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError) as exc:
            raise HttpTransportError(_closed_message(exc)) from None
        finally:
            if keep:
                self._idle.append(conn)
            else:
                conn.close()


async def _read_reply(reader: asyncio.StreamReader, head: bytes) -> tuple[HttpReply, bool]:
    """Status, headers (from `head`, up to the blank line) and body of one reply; also whether the
    connection may be reused."""
    status_line, _, raw = head.decode("latin-1").partition("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/"):
        raise ValueError(f"not an HTTP reply: {status_line[:40]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in raw.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep = version == "HTTP/1.1" and connection != "close" or connection == "keep-alive"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        body, keep = await reader.read(), False  # framed by the connection's end
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "deflate"):
        body = zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    return HttpReply(status, headers, body), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _closed_message(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the server closed the connection without a (complete) reply"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
