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

    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.received = list(statuses), []
        self.http = LocalHTTPServer(_CollectorHandler, owner=self, name="scripted-collector")

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
