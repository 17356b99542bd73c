"""One OpenTelemetry trace per request: the request span, with the run's spans under it.

    swarm.chat <model>      [CHAIN, SERVER]  the request (swarm.responses <model> for /v1/responses):
                                             model, n, usage, run id, log Ẑ, ESS
      plp.run SMC           [CHAIN]          built by observability.otel from the run's records
        plp.step 1 ...

The run span's parent is the OTel context current when the run starts (`OTelListener.on_run_start`),
so the service makes the request span current exactly while the run's task is created
(`RequestSpan.current()`), never across a `yield`. A W3C `traceparent` header on the request makes
the request span a child of the caller's span. Without an exporter (no provider given) the
request span is id-only: a non-recording span with real, fresh ids (the caller's trace id under a
`traceparent`), so the response still names a trace id and a run span made by a listener of the
policy still has its parent, while the request pays for no attributes that nothing would export
(~25 µs a request).
Prompts and answers are recorded only with `capture_content=True`.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from observability.otel_attributes import KIND, attributes

SCOPE = "plp-swarm.serving"


class RequestSpan:
    """The span of one request; `end` is idempotent."""

    def __init__(self, span: trace.Span, tracing: "RequestTracing") -> None:
        self.span = span
        self._tracing = tracing
        self._ended = False

    @property
    def trace_id(self) -> str:
        return f"{self.span.get_span_context().trace_id:032x}"

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Make this span the current context (for creating the run's task inside it)."""
        token = otel_context.attach(trace.set_span_in_context(self.span))
        try:
            yield
        finally:
            otel_context.detach(token)

    def set(self, attrs: Mapping[str, Any]) -> None:
        if self.span.is_recording():
            self.span.set_attributes(attributes(attrs))

    def end(self, error: BaseException | None = None, message: str | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        if not self.span.is_recording():
            return
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, message or f"{type(error).__name__}: {error}"))
            self.span.set_attribute("error.type", getattr(error, "code", None) or type(error).__name__)
        else:
            self.span.set_status(Status(StatusCode.OK))
        self.span.end()
        self._tracing.exported()


class RequestTracing:
    """Makes request spans with `provider` (the one the run spans go to, so both are exported
    together), or id-only spans when none is given (nothing is exported then)."""

    def __init__(self, provider: TracerProvider | None = None, *, capture_content: bool = False,
                 export: bool = False) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(SCOPE) if provider is not None else None
        self._ids = RandomIdGenerator()
        self.capture_content = capture_content
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="plp-serve-flush") if export else None
        self._propagator = TraceContextTextMapPropagator()

    def start(self, model: str, headers: Mapping[str, str], route: str = "/v1/chat/completions") -> RequestSpan:
        """The request span (`swarm.chat <model>`; `swarm.responses <model>` for /v1/responses)."""
        parent = self._propagator.extract({k.lower(): v for k, v in headers.items()})
        if self.tracer is None:
            return RequestSpan(self._id_only(trace.get_current_span(parent).get_span_context()), self)
        name = "swarm.responses" if route == "/v1/responses" else "swarm.chat"
        span = self.tracer.start_span(f"{name} {model}", context=parent, kind=SpanKind.SERVER,
                                      attributes=attributes({KIND: "CHAIN", "gen_ai.operation.name": "chat",
                                                             "gen_ai.system": "plp-swarm", "http.route": route}))
        return RequestSpan(span, self)

    def _id_only(self, caller: SpanContext) -> NonRecordingSpan:
        """A span that records nothing, with a fresh span id in the caller's trace (or a fresh one),
        sampled as the SDK's default parent-based sampler would decide (so a run span under it is)."""
        if caller.is_valid:
            return NonRecordingSpan(SpanContext(caller.trace_id, self._ids.generate_span_id(), is_remote=False,
                                                trace_flags=caller.trace_flags))
        return NonRecordingSpan(SpanContext(self._ids.generate_trace_id(), self._ids.generate_span_id(),
                                            is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)))

    def exported(self) -> None:
        """Send finished spans now (the batching processor would hold the request span otherwise);
        on one worker thread, so the event loop never waits for the exporter."""
        if self._flusher is not None and self.provider is not None:
            self._flusher.submit(self.provider.force_flush)

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.shutdown(wait=True)
