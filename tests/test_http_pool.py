"""`HttpPool`'s connection protocol frames replies as bytes arrive (`agents.backends.http_pool`):
Content-Length, chunked (extensions, trailers), interim 1xx, gzip, bodiless statuses and
close-framed replies, whatever segments they arrive in; bytes nobody asked for retire the
connection; malformed replies and mid-reply resets fail the request, named, and are never retried
as a stale connection. The framing tests feed a `_Connection` through a recording transport (a
test double standing in for the socket); the rest run against small asyncio servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from agents.backends.http_pool import HttpPool, HttpTransportError, _Connection

BODY = b'{"choices": [{"text": "ok ok"}]}'
REPLIES = {
    "content-length": (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                       % (len(BODY), BODY), 200, BODY, True),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n" + BODY[:5] + b"\r\n"
                + b"%x\r\n" % (len(BODY) - 5) + BODY[5:] + b"\r\n0\r\nX-Trailer: 1\r\n\r\n", 200, BODY, True),
    "interim 100 first": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(BODY), BODY), 200, BODY, True),
    "gzip": (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gzip.compress(BODY))
             + gzip.compress(BODY), 200, BODY, True),
    "no content": (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", True),
    "connection close": (b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy", 503, b"busy", False),
}


class RecordingTransport:
    """A test double for the socket transport: records what the connection writes and closes."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _connected() -> _Connection:
    """A `_Connection` on a recording transport (call inside a running loop)."""
    conn = _Connection()
    conn.connection_made(RecordingTransport())
    return conn


def _feed(pieces: list[bytes], eof: bool = False):
    """Send one request on a fresh `_Connection` and feed it `pieces`; (the future, the connection)."""
    async def go():
        conn = _connected()
        waiter = conn.send(b"POST / HTTP/1.1\r\n\r\n")
        for piece in pieces:
            conn.data_received(piece)
        if eof:
            conn.eof_received()
        return waiter, conn

    return asyncio.run(go())


def _splits(raw: bytes):
    """Every way of cutting `raw` in two, and byte by byte."""
    yield [raw]
    for i in range(1, len(raw)):
        yield [raw[:i], raw[i:]]
    yield [raw[i:i + 1] for i in range(len(raw))]


@pytest.mark.parametrize("name", list(REPLIES))
def test_a_reply_is_framed_the_same_whatever_segments_it_arrives_in(name):
    raw, status, body, keep = REPLIES[name]
    for pieces in _splits(raw):
        waiter, conn = _feed(pieces)
        assert waiter.done(), (name, [len(p) for p in pieces])
        reply = waiter.result()
        assert (reply.status, reply.body, conn.keep) == (status, body, keep), (name, [len(p) for p in pieces])


def test_a_reply_framed_by_the_close_ends_when_the_server_closes():
    raw = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + BODY
    for pieces in _splits(raw):
        waiter, conn = _feed(pieces)
        assert not waiter.done()  # no length: the body may go on
        conn.eof_received()
        assert waiter.result().body == BODY and not conn.keep and conn.closed


def test_bytes_after_a_reply_retire_the_connection():
    raw = REPLIES["content-length"][0]
    for pieces in ([raw + b"HTTP/1.1 200 OK\r\n"], [raw[:40], raw[40:] + b"junk"]):
        waiter, conn = _feed(pieces)
        assert waiter.result().body == BODY and not conn.keep


@pytest.mark.parametrize("raw, says", [
    (b"SPDY/3 200 OK\r\n\r\n", "not an HTTP reply"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid literal"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n", "chunk does not end"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n", "negative Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope", "while decompressing"),
])
def test_a_malformed_reply_fails_its_request_naming_what_is_wrong(raw, says):
    waiter, conn = _feed([raw])
    with pytest.raises(HttpTransportError, match="malformed reply") as info:
        waiter.result()
    assert says in str(info.value) and conn.closed


def test_a_reply_cut_short_fails_and_only_a_silent_reused_connection_is_stale():
    from agents.backends.http_pool import _Stale

    raw = REPLIES["content-length"][0]
    waiter, _ = _feed([raw[:60]], eof=True)  # the server closed mid-reply
    with pytest.raises(HttpTransportError, match="without a \\(complete\\) reply"):
        waiter.result()

    async def reused_then_closed():
        conn = _connected()
        first = conn.send(b"GET / HTTP/1.1\r\n\r\n")
        conn.data_received(raw)
        second = conn.send(b"GET / HTTP/1.1\r\n\r\n")
        conn.eof_received()  # not a byte of the second reply: the server closed it between requests
        return first.result(), second

    first, second = asyncio.run(reused_then_closed())
    assert first.body == BODY
    with pytest.raises(_Stale):
        second.result()


class PiecewiseServer:
    """An asyncio server on 127.0.0.1 answering the k-th request (k = 1, 2, …, over all connections)
    with the pieces `answer(body, k)` returns, written one at a time; with `close` true the
    connection is closed after them."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.requests = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                self.requests += 1
                pieces, close = self.answer(await reader.readexactly(length), self.requests)
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def run(self, client, tls=None):
        """`await client(url)` while the server runs (over TLS with the server context `tls`); its result."""
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=tls)
        async with server:
            scheme = "https" if tls is not None else "http"
            return await client(f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")


def test_replies_sent_in_pieces_over_a_socket_are_read_on_one_kept_connection():
    pieces_of = {name: [raw[i:i + 7] for i in range(0, len(raw), 7)] for name, (raw, *_) in REPLIES.items()
                 if name != "connection close"}
    server = PiecewiseServer(lambda body, k: (pieces_of[body.decode()], False))

    async def client(url):
        pool = HttpPool(url, max_connections=1, timeout=5)
        replies = {name: await pool.post("/x", name.encode()) for name in pieces_of}
        await pool.close()
        return replies, pool.opened

    replies, opened = asyncio.run(server.run(client))
    assert {name: (r.status, r.body) for name, r in replies.items()} == \
        {name: REPLIES[name][1:3] for name in pieces_of}
    assert server.connections == opened == 1


def test_a_reset_in_the_middle_of_a_reply_is_an_error_not_a_silent_retry():
    raw = REPLIES["content-length"][0]
    server = PiecewiseServer(lambda body, k: ([raw], False) if k == 1 else ([raw[:50]], True))  # then half a reply

    async def client(url):
        pool = HttpPool(url, max_connections=1, timeout=5)
        first = await pool.post("/x", b"{}")
        # the server's close after half a reply arrives as an end of stream (or, on some systems, a reset)
        with pytest.raises(HttpTransportError, match="without a \\(complete\\) reply|Reset"):
            await pool.post("/x", b"{}")
        await pool.close()
        return first, pool.opened

    first, opened = asyncio.run(server.run(client))
    assert first.body == BODY and server.requests == 2 and opened == 1  # part of a reply came: never resent


@pytest.fixture(scope="module")
def tls_server_context(tmp_path_factory):
    """(a server TLS context, its self-signed certificate for 127.0.0.1), made with the openssl
    command line (skip without it)."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    return tls, cert


def test_https_replies_are_framed_on_a_kept_tls_connection_verified_by_the_default_context(tls_server_context,
                                                                                          monkeypatch):
    tls, cert = tls_server_context
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the default context trusts it, as a private CA would be
    names = ["content-length", "chunked", "gzip", "no content"]
    server = PiecewiseServer(lambda body, k: ([REPLIES[body.decode()][0][i:i + 7]
                                               for i in range(0, len(REPLIES[body.decode()][0]), 7)], False))

    async def client(url):
        pool = HttpPool(url, max_connections=1, timeout=5)
        replies = {name: await pool.post("/x", name.encode()) for name in names}
        await pool.close()
        return replies, pool.opened

    replies, opened = asyncio.run(server.run(client, tls))
    assert {name: (r.status, r.body) for name, r in replies.items()} == {name: REPLIES[name][1:3] for name in names}
    assert server.connections == opened == 1


def test_an_untrusted_certificate_fails_the_request_naming_the_verification(tls_server_context, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = PiecewiseServer(lambda body, k: ([REPLIES["content-length"][0]], False))

    async def client(url):
        pool = HttpPool(url, max_connections=1, timeout=5)
        try:
            with pytest.raises(HttpTransportError, match="SSLCertVerificationError.*certificate verify failed"):
                await pool.post("/x", b"{}")
        finally:
            await pool.close()

    asyncio.run(server.run(client, tls_server_context[0]))
    assert server.requests == 0
