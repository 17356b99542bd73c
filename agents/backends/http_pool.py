"""`HttpPool`: a bounded keep-alive pool of HTTP/1.1 connections to one endpoint, on asyncio protocols.

The hot path of `OpenAICompatible`: thousands of particles each sending a small JSON request and
waiting tens of milliseconds. What a request costs here is one `transport.write` on a connection
taken from a LIFO list of idle ones and one wake-up of the waiting task: the connection is an
`asyncio.Protocol` whose `data_received` frames the reply itself (a small reply arrives in one
segment and is framed in one call) and resolves the request's future, with no stream reader, no
request/response objects, cookie jars or header multidicts on the way. Replies come back as bytes
for `json.loads`.

Why not a library (measured with bench/latency_hiding.py's fake endpoint in its own process, 3 waves
of N requests at concurrency N, medians of interleaved runs, ratio to a minimal asyncio keep-alive
client): httpx (the openai client's transport) 4.9x at N=256 and 28.9x at N=2,048 (its pool scans
every connection per request), aiohttp 1.6x and 1.8x even tuned (DummyCookieJar, no
decompression). This pool began as that minimal client (asyncio streams) with the HTTP/1.1 rules a
real server needs; on protocols it costs less client CPU per request than the streams client
itself (3 waves of N requests, interleaved runs on a quiet host: at N=2,048 92 µs against the
streams pool's 104 and the floor client's 103; at N=1,024 85 against 122 and 111;
bench/latency_hiding.py reports the client's CPU per request).

What it speaks: HTTP/1.1 (and HTTP/1.0 replies) over TCP or TLS (https, the default SSL context,
which verifies the server's certificate: for a private CA set `SSL_CERT_FILE` to its bundle);
request bodies with Content-Length; responses framed by Content-Length, chunked transfer-encoding or
connection close (interim 1xx replies are skipped); gzip/deflate bodies are decoded (it asks for
identity). No proxies, no redirects (a 3xx is returned as a status like any other), no HTTP/2.

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


MAX_HEAD = 1 << 20
"""Bytes a reply's status line and headers may take before the reply is refused as malformed."""

_HEAD, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)
"""How the reply in flight is framed: its head is still coming; a body of Content-Length bytes;
chunked transfer-encoding; a body that ends when the server closes the connection."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight (`send`), whose reply
    `data_received` frames as its bytes arrive and hands to the request's future as an `HttpReply`.
    After the reply, `keep` says whether the connection may carry another request."""

    __slots__ = ("loop", "transport", "closed", "waiter", "replies", "received", "keep", "framing",
                 "buffer", "parts", "need", "status", "headers")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        """The server closed it, the transport was lost, or it was abandoned (never reused)."""
        self.waiter: asyncio.Future | None = None
        self.replies = 0
        """Replies this connection carried (a request on a reused one may meet a server's close)."""
        self.received = False
        """Whether any byte of the reply in flight has arrived."""
        self.keep = False
        self.framing = _HEAD
        self.buffer = b""
        self.parts: list[bytes] = []
        self.need = 0
        self.status = 0
        self.headers: dict[str, str] = {}

    # -- the pool's side --------------------------------------------------------------------------
    def send(self, data: bytes) -> asyncio.Future:
        """Write one request; the future gets its `HttpReply` (or the transport's failure)."""
        self.waiter = waiter = self.loop.create_future()
        self.received, self.keep, self.framing, self.buffer, self.parts = False, False, _HEAD, b"", []
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio's side ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():  # bytes no request asked for (or after a cancel)
            self.close()
            return
        self.received = True
        try:
            reply = self._frame(data)
        except (ValueError, zlib.error) as exc:
            self._fail(_malformed(exc))
            self.close()
            return
        if reply is not None:
            self.waiter = None
            self.replies += 1
            waiter.set_result(reply)

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    # -- framing ----------------------------------------------------------------------------------
    def _ended(self, exc: Exception | None) -> None:
        """The server closed the connection (or it broke): that ends a reply framed by the close;
        any other reply in flight failed, invisibly to the caller when nothing of it arrived on a
        reused connection (`_Stale`: the server closed it between requests)."""
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.framing == _UNTIL_CLOSE and exc is None:  # (such a reply never keeps its connection)
            self.waiter = None
            try:
                waiter.set_result(self._reply(b"".join(self.parts)))
            except (ValueError, zlib.error) as error:
                waiter.set_exception(_malformed(error))
            return
        if self.replies and not self.received:
            self._fail(_Stale())
        elif exc is not None:
            self._fail(HttpTransportError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__))
        else:
            self._fail(HttpTransportError("the server closed the connection without a (complete) reply"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _frame(self, data: bytes) -> HttpReply | None:
        """Take `data` into the reply in flight; the reply once it is complete."""
        framing = self.framing
        if framing == _LENGTH:
            self.parts.append(data)
            self.need -= len(data)
            if self.need > 0:
                return None
            body, trailing = b"".join(self.parts), -self.need
            return self._reply(body[:len(body) - trailing] if trailing else body, trailing=trailing)
        if framing == _UNTIL_CLOSE:
            self.parts.append(data)
            return None
        buffer = self.buffer + data if self.buffer else data
        if framing == _HEAD:
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise ValueError(f"no end of the reply's head within {MAX_HEAD} bytes")
                    self.buffer = buffer
                    return None
                status, headers, keep = _parse_head(buffer[:end])
                buffer = buffer[end + 4:]
                if not 100 <= status < 200 or status == 101:
                    break  # an interim 1xx reply is skipped: the final one follows
            self.status, self.headers, self.keep = status, headers, keep
            if "chunked" in headers.get("transfer-encoding", "").lower():
                framing = self.framing = _CHUNKED
            elif "content-length" in headers:
                need = int(headers["content-length"])
                if need < 0:
                    raise ValueError(f"negative Content-Length {need}")
                if len(buffer) >= need:
                    return self._reply(buffer[:need], trailing=len(buffer) - need)
                self.framing, self.need, self.parts, self.buffer = _LENGTH, need - len(buffer), [buffer], b""
                return None
            elif status in (204, 304) or 100 <= status < 200:
                return self._reply(b"", trailing=len(buffer))
            else:
                self.framing, self.keep, self.parts, self.buffer = _UNTIL_CLOSE, False, [buffer], b""
                return None
        return self._chunks(buffer)

    def _chunks(self, buffer: bytes) -> HttpReply | None:
        """Chunked transfer-encoding: take every complete chunk of `buffer`; the reply after the
        last chunk and its trailers."""
        at = 0
        while True:
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                break
            size = int(buffer[at:line_end].split(b";", 1)[0], 16)
            if size < 0:
                raise ValueError(f"negative chunk size {size}")
            start = line_end + 2
            if size == 0:
                if buffer[start:start + 2] == b"\r\n":
                    end = start + 2
                else:
                    trailers = buffer.find(b"\r\n\r\n", start)
                    if trailers < 0:
                        break
                    end = trailers + 4
                return self._reply(b"".join(self.parts), trailing=len(buffer) - end)
            if len(buffer) < start + size + 2:
                break
            if buffer[start + size:start + size + 2] != b"\r\n":
                raise ValueError("a chunk does not end where its size says")
            self.parts.append(buffer[start:start + size])
            at = start + size + 2
        self.buffer = buffer[at:]
        if len(self.buffer) > MAX_HEAD:
            raise ValueError(f"no end of a chunk's size line within {MAX_HEAD} bytes")
        return None

    def _reply(self, body: bytes, trailing: int = 0) -> HttpReply:
        """The complete reply; bytes after it (which no request asked for) make the connection
        unfit for another request."""
        if trailing:
            self.keep = False
        self.buffer, self.parts = b"", []
        headers = self.headers
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding in ("gzip", "deflate"):
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        return HttpReply(self.status, headers, body)


def _malformed(exc: BaseException) -> HttpTransportError:
    return HttpTransportError(f"malformed reply: {type(exc).__name__}: {exc}")


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    """Status, headers (lower-cased names) and whether the connection may be reused, from a
    reply's head up to (without) the blank line."""
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
    return status, headers, keep


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
        self._idle: list[_Connection] = []
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
                conn = self._take_idle()
                if conn is None:
                    return await self._exchange(await self._open(), data)
                try:
                    return await self._exchange(conn, data)
                except _Stale:
                    return await self._exchange(await self._open(), data)
            except asyncio.CancelledError:
                if self._deadlines.finish(key) and task.uncancel() == 0:  # cancelled for its deadline only
                    raise HttpTransportError(f"request timed out after {self.timeout:g}s", timed_out=True) from None
                raise
            finally:
                self._deadlines.finish(key)

    def _take_idle(self) -> _Connection | None:
        """The most recently used idle connection the server has not closed, if any."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.transport.is_closing():
                return conn
            conn.close()
        return None

    async def _open(self) -> _Connection:
        try:
            _, conn = await asyncio.get_running_loop().create_connection(_Connection, self.host, self.port, ssl=self.ssl)
        except OSError as exc:
            raise HttpTransportError(f"{type(exc).__name__}: {exc.strerror or exc}") from None
        self.opened += 1
        return conn

    async def _exchange(self, conn: _Connection, data: bytes) -> HttpReply:
        keep = False
        try:
            reply = await conn.send(data)
            keep = conn.keep and not conn.closed
            return reply
        finally:
            if keep:
                self._idle.append(conn)
            else:
                conn.close()
