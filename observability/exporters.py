"""`instrument()`: one call that sends every run's spans somewhere.

    inst = observability.exporters.instrument("otlp", project="my-experiment")   # Phoenix on :6006
    policies.SMC(...).run(model)
    inst.shutdown()                       # flush and detach

The exporter is chosen by the `exporter` argument, else `PLP_OTEL_EXPORTER`, else "otlp":
- "otlp":    OTLP/HTTP (protobuf) to `endpoint`, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as
             is), else `OTEL_EXPORTER_OTLP_ENDPOINT` + "/v1/traces", else Phoenix's default
             http://127.0.0.1:6006/v1/traces. The runs' spans are encoded straight into OTLP
             protobuf and sent in batches (`observability.span_sinks.OtlpSink`, no SDK span objects:
             about ten times cheaper); `batch=False` sends them through the SDK instead, one export
             per span. Spans you create yourself with `inst.provider` are exported to the same
             endpoint by `BackpressureSpanProcessor` (the SDK's BatchSpanProcessor *drops* spans
             once its queue is full; this one exports full batches in the thread that ends them).
- "console": JSON spans on stdout (SimpleSpanProcessor).
- "memory":  an `InMemorySpanExporter` on `.memory_exporter`, for tests (SimpleSpanProcessor).
- "none":    no export and no listener (zero cost).

Spans are planned (and encoded) by the listener's background thread (`background=True`, see
observability.otel), which also does the export; the listener flushes after every run, so a run's
spans reach the collector without waiting for `shutdown()`. `particle_sampling` < 1 is opt-in
(observability.lineage_sampler). `session_id` names the Phoenix session of the runs (default: one
per `instrument()` call; an OpenInference `using_session` context wins).

The provider carries the resource attributes `service.name="plp-swarm"` and
`openinference.project.name=<project>` (how Phoenix picks the project); the OTLP sink sends the same
resource. The provider is private to the returned handle unless `set_global=True`, so tests and
other instrumentation do not interfere.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from urllib.parse import urlparse

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observability.otel import SCOPE, OTelListener
from observability.otlp_http import OtlpHttpSender
from observability.span_sinks import OtlpSink, SdkSink
from swarm.listeners import add_listener, remove_listener

log = logging.getLogger("observability.exporters")
EXPORTERS = ("otlp", "console", "memory", "none")
DEFAULT_BATCH = 256
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

    @property
    def sink(self) -> OtlpSink | SdkSink | None:
        return None if self.listener is None else self.listener.sink

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Build the spans of every record received so far, then export every finished span now
        (the spans of runs still open are not finished yet)."""
        built = self.listener.flush(timeout_millis / 1000) if self.listener is not None else True
        if self.listener is not None:
            self.listener.sink.flush()
        return self.provider.force_flush(timeout_millis) and built

    def shutdown(self) -> None:
        """Detach the listener, end runs left open, flush every span and shut the provider down."""
        if self._closed:
            return
        self._closed = True
        if self.listener is not None:
            remove_listener(self.listener)
            self.listener.close()
            if isinstance(self.listener.sink, OtlpSink):
                self.listener.sink.shutdown()
        self.provider.force_flush()
        self.provider.shutdown()  # an in-memory exporter's spans stay readable after this

    def __enter__(self) -> "Instrumentation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class BackpressureSpanProcessor(SpanProcessor):
    """Batches ended spans and exports every full batch synchronously, in the thread that ended
    the batch's last span: never drops a span (the SDK's `BatchSpanProcessor` drops them once its
    queue is full, and one SMC step of a large population ends thousands of spans at once), and
    needs no export thread of its own. With `OTelListener`'s background worker (the default) that
    thread is the worker, so encoding and sending run in the time the coordinator leaves idle
    instead of in an export thread that takes the GIL from it.

    A batch is exported when it holds `batch_size` spans (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default
    256, at most `queue_size` = `OTEL_BSP_MAX_QUEUE_SIZE`, default 2048) or when its oldest span
    waited `max_delay_s` (`OTEL_BSP_SCHEDULE_DELAY` ms, default 5000; checked when a span ends);
    `force_flush` exports the rest (the listener calls it after every run). `flushes` counts exports.
    """

    def __init__(self, exporter: SpanExporter, queue_size: int | None = None, batch_size: int | None = None,
                 max_delay_s: float | None = None) -> None:
        self.exporter = exporter
        self.queue_size = queue_size or int(os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE") or 2048)
        batch = batch_size or int(os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or DEFAULT_BATCH)
        self.batch_size = max(1, min(self.queue_size, batch))
        self.max_delay_s = max_delay_s if max_delay_s is not None else \
            float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY") or 5000) / 1000
        self.flushes = 0
        self._spans: list[ReadableSpan] = []
        self._oldest = 0.0
        self._shutdown = False
        self._lock = threading.Lock()
        self._export_lock = threading.Lock()

    def on_start(self, span, parent_context=None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled) or self._shutdown:
            return
        now = time.monotonic()
        with self._lock:
            self._spans.append(span)
            if len(self._spans) == 1:
                self._oldest = now
            if len(self._spans) < self.batch_size and now - self._oldest < self.max_delay_s:
                return
            batch, self._spans = self._spans, []
        self._export(batch)

    def _export(self, spans: list[ReadableSpan]) -> None:
        """Export `spans` in batches, one export at a time, with instrumentation suppressed (the
        exporter's own HTTP calls are not traced)."""
        with self._export_lock:
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                for i in range(0, len(spans), self.batch_size):
                    self.flushes += 1
                    self.exporter.export(spans[i:i + self.batch_size])
            except Exception:  # an exporter must never cost the user the run
                log.exception("exporting %d spans failed", len(spans))
            finally:
                detach(token)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export the spans buffered now; returns after any export in progress has finished."""
        with self._lock:
            spans, self._spans = self._spans, []
        if spans:
            self._export(spans)
        else:
            with self._export_lock:
                pass
        return True

    def shutdown(self) -> None:
        self.force_flush()
        self._shutdown = True
        self.exporter.shutdown()


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The OTLP/HTTP traces URL: argument, then the standard OTel environment variables, then
    Phoenix's default. A bare base URL (no path) gets "/v1/traces" appended."""
    if endpoint is None:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if endpoint is None and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    endpoint = endpoint or DEFAULT_ENDPOINT
    check_endpoint(endpoint)
    if urlparse(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def check_endpoint(url: str) -> None:
    """A `ValueError` now for an OTLP endpoint that is no http(s) URL: every export would fail, after
    the run, with a warning per batch and the spans lost."""
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in url:
        raise ValueError(f"OTLP endpoint {url!r}: expected an http(s) URL such as http://127.0.0.1:6006/v1/traces")


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
               set_global: bool = False, register: bool = True, particle_sampling: float = 1.0,
               background: bool = True, session_id: str | None = None) -> Instrumentation:
    """Export every run's spans: build a TracerProvider, attach `exporter`, register an
    `OTelListener` globally (unless `register=False`; the handle's `.listener` can then be passed
    to a policy's `listeners=[...]`). Prompts and completions are exported only with
    `capture_content=True`. Spans are built on a background thread unless `background=False`;
    `particle_sampling` < 1 (opt-in) keeps every span on a surviving lineage and that fraction of
    the other particles' spans (see observability.lineage_sampler)."""
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
        sink = OtlpSink(OtlpHttpSender(url), dict(resource.attributes), SCOPE) if name == "otlp" and batch \
            else SdkSink(provider, SCOPE)
        listener = OTelListener(provider, capture_content=capture_content, particle_sampling=particle_sampling,
                                background=background, sink=sink, session_id=session_id)
        if register:
            add_listener(listener)
    memory = span_exporter if isinstance(span_exporter, InMemorySpanExporter) else None
    handle = Instrumentation(provider, listener, name, url, memory)
    if listener is not None:
        _flush_at_exit(handle)
    return handle


def _flush_at_exit(handle: Instrumentation) -> None:
    """Export what a handle still holds when the interpreter exits normally (a script that never
    calls `shutdown()` loses no span); the handle itself is not kept alive by this."""
    ref = weakref.ref(handle)

    def flush() -> None:
        inst = ref()
        if inst is not None and not inst._closed:
            inst.force_flush(timeout_millis=10_000)

    atexit.register(flush)
