"""`OtlpHttpSender` against a real HTTP server on 127.0.0.1 that answers with a scripted status per
request: retryable statuses (503, 429) are retried and the body arrives once; a client error (400)
is not retried and never raises; headers and gzip compression from the standard environment
variables reach the collector."""

from __future__ import annotations

import gzip
from http.server import BaseHTTPRequestHandler

import pytest

from observability.otlp_http import OtlpHttpSender
from tests.local_http import LocalHTTPServer


class _CollectorHandler(BaseHTTPRequestHandler):
    """Its server's `owner` is the `ScriptedCollector`."""

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        collector = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        collector.received.append((dict(self.headers), body))
        status = collector.statuses.pop(0) if collector.statuses else 200
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "0")
        self.end_headers()


class ScriptedCollector:
    """A TEST DOUBLE collector: the i-th POST gets `statuses[i]` (200 once the script is used up)."""

    def __init__(self, statuses: list[int], port: int = 0) -> None:
        self.statuses, self.received = list(statuses), []
        self.http = LocalHTTPServer(_CollectorHandler, owner=self, name="scripted-collector", port=port)

    @property
    def endpoint(self) -> str:
        return self.http.url("/v1/traces")

    def __enter__(self) -> "ScriptedCollector":
        self.http.start()
        return self

    def __exit__(self, *exc) -> None:
        self.http.stop()


def test_retryable_statuses_are_retried_until_accepted():
    with ScriptedCollector([503, 429, 200]) as collector:
        sender = OtlpHttpSender(collector.endpoint, max_backoff_s=0.05)
        assert sender.send(b"spans") is True
    assert [body for _, body in collector.received] == [b"spans"] * 3
    assert (sender.requests, sender.failures) == (1, 0)


def test_a_client_error_is_not_retried_and_not_raised(caplog):
    with ScriptedCollector([400]) as collector:
        sender = OtlpHttpSender(collector.endpoint, max_backoff_s=0.05)
        assert sender.send(b"spans") is False
    assert len(collector.received) == 1 and (sender.requests, sender.failures) == (0, 1)
    assert "HTTP 400" in caplog.text


def test_giving_up_after_the_retries():
    with ScriptedCollector([503] * 10) as collector:
        sender = OtlpHttpSender(collector.endpoint, retries=2, max_backoff_s=0.01)
        assert sender.send(b"spans") is False
    assert len(collector.received) == 3 and sender.failures == 1


def test_headers_and_compression_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc%20def,x-team=plp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    with ScriptedCollector([]) as collector:
        assert OtlpHttpSender(collector.endpoint).send(b"spans" * 100)
    (headers, body), = collector.received
    assert headers["api-key"] == "abc def" and headers["x-team"] == "plp"
    assert headers["Content-Encoding"] == "gzip" and headers["Content-Type"] == "application/x-protobuf"
    assert gzip.decompress(body) == b"spans" * 100


def test_bad_compression_is_named():
    with pytest.raises(ValueError, match="compression 'zstd'"):
        OtlpHttpSender("http://127.0.0.1:1/v1/traces", compression="zstd")


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections to it are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_collector_costs_one_backoff_sequence_not_one_per_batch(caplog):
    """Before: every batch went through all its retries (≈ 8 s each with the defaults), so a script
    whose collector was down spent ~70 s at exit. Now the first failed request marks the collector
    unreachable (one warning); later ones are dropped without an attempt until `max_backoff_s` has
    passed, then tried once; the first accepted one clears the mark."""
    port = _closed_port()
    sender = OtlpHttpSender(f"http://127.0.0.1:{port}/v1/traces", retries=3, max_backoff_s=0.3)
    attempts = []
    post = sender.session.post
    sender.session.post = lambda *a, **k: attempts.append(1) or post(*a, **k)
    assert sender.send(b"spans") is False
    assert len(attempts) == 4 and sender.unreachable_since is not None  # the first: all its retries
    assert [sender.send(b"spans") for _ in range(5)] == [False] * 5
    assert len(attempts) == 4 and (sender.failures, sender.dropped) == (6, 5)  # dropped, no attempt
    assert caplog.text.count("the collector is unreachable") == 1

    collector = ScriptedCollector([], port=port)  # the collector comes up where it was expected
    with collector:
        import time
        time.sleep(0.35)  # past max_backoff_s: the next request is tried (once)
        assert sender.send(b"back") is True
    assert len(attempts) == 5 and sender.unreachable_since is None and sender.requests == 1
    assert [body for _, body in collector.received] == [b"back"]
    assert "answers again" in caplog.text and "(6 requests lost meanwhile)" in caplog.text


def test_a_retryable_status_does_not_mark_the_collector_unreachable():
    """The control: a collector that answers 503 is reachable; each request keeps its retries."""
    with ScriptedCollector([503] * 3 + [503] * 3) as collector:
        sender = OtlpHttpSender(collector.endpoint, retries=2, max_backoff_s=0.01)
        assert sender.send(b"a") is False and sender.send(b"b") is False
    assert len(collector.received) == 6 and sender.unreachable_since is None and sender.dropped == 0
