"""Where planned spans go: `OtlpSink` (OTLP protobuf bytes straight to a collector) or `SdkSink`
(an OpenTelemetry SDK tracer: its processors and exporters, e.g. in-memory or console).

Both take `SpanData` (observability.span_data) whose ids the planner chose, and keep them:

- `OtlpSink` encodes each span once (observability.otlp_wire), keeps the bytes and sends a request
  when `batch_spans` spans (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default 4096) or `batch_bytes` bytes
  are waiting, and on `flush()` (the listener flushes after every run). No SDK span object is ever built. Resource: `service.name` and
  `openinference.project.name` (how Phoenix picks the project), like `instrument()`'s provider.
- `SdkSink` starts and ends one SDK span per `SpanData`, with its times, parent, links, events and
  status; its tracer's id generator is wrapped (`PlannedIds`) so the SDK uses the planned span and
  trace ids. Spans then go through the provider's sampler and processors as any span does. The
  planner samples a run by its parent (parent-based); a provider whose root sampler drops the run
  span still sees its children, which carry a sampled parent context.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterable

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from observability.otlp_http import OtlpHttpSender
from observability.otlp_wire import WireEncoder, request
from observability.span_data import SpanData

_KINDS = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT, 4: SpanKind.PRODUCER, 5: SpanKind.CONSUMER}
_STATUS = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class OtlpSink:
    """Encodes spans to OTLP protobuf and sends them in batches (see the module docstring)."""

    def __init__(self, sender: OtlpHttpSender, resource: dict[str, Any], scope: str, *, batch_spans: int | None = None,
                 batch_bytes: int = 4 << 20) -> None:
        self.sender = sender
        self.ids = RandomIdGenerator()
        self.encoder = WireEncoder()
        self.header = self.encoder.header(resource, scope)
        self.batch_spans = batch_spans or int(os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 4096)
        self.batch_bytes = batch_bytes
        self.spans_sent = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._lock = threading.Lock()

    def emit(self, spans: Iterable[SpanData]) -> None:
        encode = self.encoder.span
        encoded = [encode(s) for s in spans]
        if not encoded:
            return
        with self._lock:
            self._pending.extend(encoded)
            self._pending_bytes += sum(map(len, encoded))
            if len(self._pending) < self.batch_spans and self._pending_bytes < self.batch_bytes:
                return
            batch, self._pending, self._pending_bytes = self._pending, [], 0
        for k in range(0, len(batch), self.batch_spans):   # at most batch_spans a request
            self._send(batch[k:k + self.batch_spans])

    def _send(self, batch: list[bytes]) -> None:
        if batch and self.sender.send(request(self.header, batch)):
            self.spans_sent += len(batch)

    def flush(self) -> None:
        """Send every span emitted so far."""
        with self._lock:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
        for k in range(0, len(batch), self.batch_spans):
            self._send(batch[k:k + self.batch_spans])

    def shutdown(self) -> None:
        self.flush()
        self.sender.close()


class PlannedIds(IdGenerator):
    """An id generator that returns the ids set in `next_trace_id` / `next_span_id` (once each), and
    otherwise those of the generator it wraps."""

    def __init__(self, wrapped: IdGenerator) -> None:
        self.wrapped = wrapped
        self.next_trace_id: int | None = None
        self.next_span_id: int | None = None

    def generate_span_id(self) -> int:
        span_id, self.next_span_id = self.next_span_id, None
        return span_id if span_id is not None else self.wrapped.generate_span_id()

    def generate_trace_id(self) -> int:
        trace_id, self.next_trace_id = self.next_trace_id, None
        return trace_id if trace_id is not None else self.wrapped.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return self.wrapped.is_trace_id_random()


class SdkSink:
    """Replays spans through an OpenTelemetry SDK tracer (see the module docstring)."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None, scope: str = "plp-swarm") -> None:
        self.provider = tracer_provider
        self.scope = scope
        self.tracer: Any = None
        self.planned: PlannedIds | None = None
        self._tracer()

    def _tracer(self) -> Any:
        """The SDK tracer with planned ids; re-resolved while the global provider is still a proxy."""
        if self.planned is None:
            tracer = trace.get_tracer(self.scope, tracer_provider=self.provider)
            wrapped = getattr(tracer, "id_generator", None)
            if wrapped is not None:
                self.planned = tracer.id_generator = PlannedIds(wrapped)
            self.tracer = tracer
        return self.tracer

    @property
    def ids(self) -> IdGenerator:
        """Where the planner takes ids: the provider's own generator when there is one."""
        self._tracer()
        return self.planned.wrapped if self.planned is not None else RandomIdGenerator()

    def emit(self, spans: Iterable[SpanData]) -> None:
        tracer, planned = self._tracer(), self.planned
        parents: dict[tuple[int, int | None, bool], Any] = {}   # a step's spans share a few parents
        for s in spans:
            if planned is not None:
                planned.next_trace_id, planned.next_span_id = s.trace_id, s.span_id
            key = (s.trace_id, s.parent_id, s.parent_remote)
            parent = parents.get(key)
            if parent is None:
                parent = parents[key] = trace.set_span_in_context(trace.INVALID_SPAN) if s.parent_id is None else \
                    trace.set_span_in_context(NonRecordingSpan(SpanContext(s.trace_id, s.parent_id, s.parent_remote,
                                                                           _SAMPLED)))
            links = [Link(SpanContext(t, i, False, _SAMPLED), a) for t, i, a in s.links] if s.links else None
            span = tracer.start_span(s.name, context=parent, kind=_KINDS.get(s.kind, SpanKind.INTERNAL),
                                     attributes=s.attributes, links=links, start_time=s.start_ns)
            if planned is not None:
                planned.next_trace_id = planned.next_span_id = None
            if s.events:
                for name, at_ns, attrs in s.events:
                    span.add_event(name, attrs, timestamp=at_ns)
            if s.status_code:
                span.set_status(Status(_STATUS[s.status_code], s.status_message))
            span.end(end_time=s.end_ns)

    def flush(self) -> None:
        """Hand the spans to the exporters now (batching processors keep the last partial batch
        until the next spans end)."""
        provider = self.provider if self.provider is not None else trace.get_tracer_provider()
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            flush()

    def shutdown(self) -> None:
        self.flush()
