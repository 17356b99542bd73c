"""`instrument()`: one call that sends every run's spans somewhere.

    inst = observability.exporters.instrument("otlp", project="my-experiment")   # Phoenix on :6006
    policies.SMC(...).run(model)
    inst.shutdown()                       # flush and detach

The exporter is chosen by the `exporter` argument, else `PLP_OTEL_EXPORTER`, else "otlp":
- "otlp":    OTLP/HTTP (protobuf) to `endpoint`, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as
             is), else `OTEL_EXPORTER_OTLP_ENDPOINT` + "/v1/traces", else Phoenix's default
             http://127.0.0.1:6006/v1/traces. A BatchSpanProcessor unless `batch=False`, with
             backpressure: the SDK's processor *drops* spans once its queue (OTEL_BSP_MAX_QUEUE_SIZE,
             2048) is full, and one SMC step of a large population ends thousands of spans at once,
             so every half queue of ended spans is flushed synchronously (nothing is lost; the
             export work moves to the caller's thread when bursts exceed the queue).
- "console": JSON spans on stdout (SimpleSpanProcessor).
- "memory":  an `InMemorySpanExporter` on `.memory_exporter`, for tests (SimpleSpanProcessor).
- "none":    no export and no listener (zero cost).

The provider carries the resource attributes `service.name="plp-swarm"` and
`openinference.project.name=<project>` (how Phoenix picks the project). It is private to the
returned handle unless `set_global=True`, so tests and other instrumentation do not interfere.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from urllib.parse import urlparse

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observability.otel import OTelListener
from swarm.listeners import add_listener, remove_listener

EXPORTERS = ("otlp", "console", "memory", "none")
DEFAULT_ENDPOINT = "http://127.0.0.1:6006/v1/traces"
SERVICE_NAME = "plp-swarm"


@dataclass
class Instrumentation:
    """The handle `instrument()` returns. `shutdown()` flushes, detaches and is idempotent."""

    provider: TracerProvider
    listener: OTelListener | None
    exporter: str
    endpoint: str | None = None
    memory_exporter: InMemorySpanExporter | None = None
    _closed: bool = False

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every finished span now (spans of runs still open are not finished yet)."""
        return self.provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Detach the listener, end runs left open, flush every span and shut the provider down."""
        if self._closed:
            return
        self._closed = True
        if self.listener is not None:
            remove_listener(self.listener)
            self.listener.close()
        self.provider.force_flush()
        self.provider.shutdown()  # an in-memory exporter's spans stay readable after this

    def __enter__(self) -> "Instrumentation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class BackpressureSpanProcessor(SpanProcessor):
    """A `BatchSpanProcessor` that never drops a span: after every `queue_size // 2` ended spans it
    flushes the batch queue synchronously, so the queue can never overflow between two flushes."""

    def __init__(self, exporter: SpanExporter, queue_size: int | None = None) -> None:
        self.queue_size = queue_size or int(os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE") or 2048)
        batch = min(self.queue_size, int(os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 512))
        self.inner = BatchSpanProcessor(exporter, max_queue_size=self.queue_size, max_export_batch_size=batch)
        self.flush_every = max(1, self.queue_size // 2)
        self.pending = 0
        self.flushes = 0
        self._lock = threading.Lock()

    def on_start(self, span, parent_context=None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span) -> None:
        self.inner.on_end(span)
        with self._lock:
            self.pending += 1
            due = self.pending >= self.flush_every
            if due:
                self.pending, self.flushes = 0, self.flushes + 1
        if due:
            self.inner.force_flush()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.pending = 0
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.inner.shutdown()


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The OTLP/HTTP traces URL: argument, then the standard OTel environment variables, then
    Phoenix's default. A bare base URL (no path) gets "/v1/traces" appended."""
    if endpoint is None:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if endpoint is None and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    endpoint = endpoint or DEFAULT_ENDPOINT
    if urlparse(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def _choose(exporter: str | None) -> str:
    """The exporter name: argument, then PLP_OTEL_EXPORTER, then "otlp"; validated."""
    name = (exporter or os.environ.get("PLP_OTEL_EXPORTER") or "otlp").strip().lower()
    if name not in EXPORTERS:
        raise ValueError(f"instrument: exporter={name!r} is not one of {EXPORTERS}")
    return name


def _span_exporter(name: str, endpoint: str | None) -> SpanExporter | None:
    """The SpanExporter for `name` ("none" has none)."""
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint)
    if name == "console":
        return ConsoleSpanExporter()
    if name == "memory":
        return InMemorySpanExporter()
    return None


def instrument(exporter: str | None = None, endpoint: str | None = None, project: str = "default",
               capture_content: bool = False, batch: bool = True, *,
               set_global: bool = False, register: bool = True) -> Instrumentation:
    """Export every run's spans: build a TracerProvider, attach `exporter`, register an
    `OTelListener` globally (unless `register=False`; the handle's `.listener` can then be passed
    to a policy's `listeners=[...]`). Prompts and completions are exported only with
    `capture_content=True`."""
    name = _choose(exporter)
    url = resolve_endpoint(endpoint) if name == "otlp" else None
    resource = Resource.create({"service.name": SERVICE_NAME, "openinference.project.name": project})
    provider = TracerProvider(resource=resource)
    span_exporter = _span_exporter(name, url)
    if span_exporter is not None:
        use_batch = batch and name == "otlp"
        provider.add_span_processor(BackpressureSpanProcessor(span_exporter) if use_batch
                                    else SimpleSpanProcessor(span_exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    listener = None
    if name != "none":
        listener = OTelListener(provider, capture_content=capture_content)
        if register:
            add_listener(listener)
    memory = span_exporter if isinstance(span_exporter, InMemorySpanExporter) else None
    return Instrumentation(provider, listener, name, url, memory)
