"""A stdlib HTTP server on 127.0.0.1 (a free port) served from a daemon thread, for the test
doubles and stand-ins of tests/ and bench/ (`FaultServer`, `OTLPSink`, the scripted collector of
tests/test_otlp_http.py). Standard library only.

    with LocalHTTPServer(Handler, owner=state) as http:   # handlers reach `state` as self.server.owner
        url = http.url("/v1/traces")
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["LocalHTTPServer"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True      # a handler still running never keeps the process alive
    block_on_close = False     # server_close does not wait for handlers (a test's sleeping one)
    owner: Any


class LocalHTTPServer:
    """`handler` served on 127.0.0.1 at a free port (or `port`), one thread per connection, from `start()`
    (or `with`) to `stop()`. `request_queue_size` is the listen backlog (socketserver's default
    is 5: more concurrent connections than that are refused by the kernel, a fault nobody
    scheduled); `poll_interval` is how often the serving loop checks for `stop()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, owner: Any = None, name: str = "local-http",
                 request_queue_size: int = 64, poll_interval: float = 0.05, port: int = 0) -> None:
        self.handler, self.owner, self.name, self.requested_port = handler, owner, name, port
        self.request_queue_size, self.poll_interval = request_queue_size, poll_interval
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{self.name} is not running: use it as a context manager or call start()")
        return self._httpd.server_address[1]

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> "LocalHTTPServer":
        server_class = type("_Server", (_Server,), {"request_queue_size": self.request_queue_size})
        self._httpd = server_class(("127.0.0.1", self.requested_port), self.handler)
        self._httpd.owner = self.owner
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": self.poll_interval},
                                        name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> "LocalHTTPServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
