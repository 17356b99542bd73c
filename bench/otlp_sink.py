"""A local OTLP/HTTP collector stand-in for benchmarks and tests: `OTLPSink` (in process) and
`SinkProcess` (the same in a child process, as a real collector is: receiving and reading the
requests then costs the measured process nothing, in particular not its GIL)."""

from __future__ import annotations

import multiprocessing
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.local_http import LocalHTTPServer

__all__ = ["OTLPSink", "SinkProcess"]


class _SinkHandler(BaseHTTPRequestHandler):
    """Its server's `owner` is the `OTLPSink` (tests/local_http.py)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """No access log."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sink = self.server.owner
        with sink.lock:
            sink.requests += 1
            sink.bytes += len(body)
            if sink.keep_bodies:
                sink.bodies.append(body)
        status = 200 if self.path.rstrip("/") == "/v1/traces" else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")   # an empty ExportTraceServiceResponse
        self.end_headers()


class OTLPSink:
    """A local OTLP/HTTP endpoint that accepts and counts what exporters send (127.0.0.1, free port).
    `keep_bodies=True` keeps every request body (protobuf bytes), e.g. to grep them for secrets."""

    def __init__(self, keep_bodies: bool = False) -> None:
        self.keep_bodies = keep_bodies
        self.bodies: list[bytes] = []
        self.requests = 0
        self.bytes = 0
        self.lock = threading.Lock()
        self._http = LocalHTTPServer(_SinkHandler, owner=self, name="OTLPSink", request_queue_size=64)

    @property
    def endpoint(self) -> str:
        return self._http.url("/v1/traces")

    def __enter__(self) -> "OTLPSink":
        self._http.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.stop()


def _sink_child(conn) -> None:
    with OTLPSink() as sink:
        conn.send(sink.endpoint)
        conn.recv()   # serve until told to stop
        conn.send((sink.requests, sink.bytes))


class SinkProcess:
    """An `OTLPSink` in a child process, as a real collector (Phoenix) is: receiving and reading
    the requests then costs the measured process nothing, in particular not its GIL (an
    in-process sink's handler threads compete with the coordinator and the span worker)."""

    def __enter__(self) -> "SinkProcess":
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_sink_child, args=(child,), name="otlp-sink", daemon=True)
        self._proc.start()
        self.endpoint: str = self._conn.recv()
        self.requests = self.bytes = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self.requests, self.bytes = self._conn.recv()
        self._proc.join(timeout=10)
