"""`OTelListener`: a run's records turned into OpenTelemetry spans, after the fact, with exact times.

    records --(coordinator: enqueue)--> worker: SpanPlanner --> [LineageSampler] --> sink

- `observability.span_plan.SpanPlanner` plans a whole step's spans at once (`SpanData`, with span
  ids it allocates; the span tree and the attributes are documented there);
- `observability.lineage_sampler.LineageSampler` (opt-in, `particle_sampling` < 1) keeps every
  span on a surviving lineage and a fraction of the others, never dropping run and step spans;
- a sink turns them into spans: `observability.span_sinks.OtlpSink` encodes OTLP protobuf directly
  and sends it (what `instrument("otlp")` uses), `SdkSink` replays them through an OpenTelemetry
  SDK tracer (in-memory, console, or your own `TracerProvider` and its processors; the default
  when a `tracer_provider` is given).

The run's context while it goes on (the seam between the core, the agents and this listener). When
a run starts, the listener plans the run span's ids in the coordinator's thread and *attaches* an
OpenTelemetry context whose current span is that run span (non-recording, flagged by the W3C
tracestate entry `plp`); it detaches it when the run ends. Everything the run executes in that
context sees it: agents put it in the `traceparent` of their Ray actor calls, with a span id per
call that the actor reports back (`agents.agent_actor.trace_carrier`), and the planner builds the
call's `chat` span with that id, so an actor's span nests under the LLM call that made it; a user's
own spans opened inside a program (or auto-instrumented HTTP clients) nest under the run. The core
(`swarm`) imports no OpenTelemetry: the OpenTelemetry context is itself a context variable. Under
`runtime="ray"` the particles run in segment workers, which get no context from the coordinator:
`segment_handlers(run_id)` gives the picklable `extra_handlers` factory that carries the run's
W3C context to them and makes it current around every segment (`RunTraceContext`), but the core
does not install listeners' segment handlers yet, so calls made there carry no trace context.

The run span's parent is whatever span is current when the run starts (a user's span, or the
request span of a server), and its `session.id` (Phoenix's Sessions view) is the OpenInference
session of that context when there is one (`openinference.instrumentation.using_session`), else
the listener's `session_id` (default: one per listener, so the runs of one script or one
`swarm run` form one session).

Cost, and where it is paid (bench/otel_overhead.py): the listener only *enqueues* each immutable
record; one background thread (`OrderedWorker`, which yields the GIL to a busy coordinator) plans,
encodes and exports while the coordinator goes on with the next step and awaits its LLM calls.
With `wait_at_run_end=True` (the default with an SDK sink), `on_run_end` returns once every span
of the run is planned and handed to the sink, so an in-memory exporter read right after `.run()`
sees them all; with `False` (the default with `OtlpSink`: nothing can be read back in process) it
returns at once and the last step's spans (which no idle time could hide) are built while the
caller goes on: measured at 50 ms steps, the wait was half of what tracing added to `.run()`. The
export itself always runs on the worker; `flush()` waits for everything queued so far (and
`Instrumentation.force_flush`/`shutdown`, and the interpreter's exit, flush the sink too). With
`background=False` everything runs in the caller. With Python's GIL the worker cannot run while the
coordinator computes, so a run that never waits pays the full cost either way.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from agents.agent_actor import RUN_SCOPE_TRACE_KEY, RUN_TRACESTATE_KEY
from observability.lineage_sampler import LineageSampler
from observability.ordered_worker import OrderedWorker
from observability.otel_attributes import KIND, attributes, llm_attributes, tool_attributes
from observability.span_plan import Owned, PlannedRun, SpanPlanner
from observability.span_sinks import SdkSink
from swarm.effects import run_scope
from swarm.gc_tuning import relaxed_gc
from swarm.listeners import RunFinished, RunListener, RunStarted, StepRecord
from swarm.runtime import Handler

__all__ = ["OTelListener", "RunTraceContext", "RunTraceContextHandlers", "attributes", "llm_attributes", "tool_attributes", "KIND", "SCOPE", "SESSION_KEY"]

SCOPE = "plp-swarm.observability"
SESSION_KEY = "session.id"
"""The OpenTelemetry context key of OpenInference's `using_session` (its `SpanAttributes.SESSION_ID`)."""
_RUN_STATE = TraceState([(RUN_TRACESTATE_KEY, "run")])


class RunTraceContext(Handler):
    """A segment handler that makes a run's trace context (W3C headers) current while the segment
    executes, in whatever process it runs (the headers travel with the runner to Ray workers)."""

    def __init__(self, carrier: dict[str, str]) -> None:
        super().__init__()
        self.carrier = carrier
        self._attached: list[object] = []

    def __enter__(self) -> "RunTraceContext":
        super().__enter__()
        self._attached.append(otel_context.attach(propagate.extract(self.carrier)))
        return self

    def __exit__(self, *exc: Any) -> None:
        otel_context.detach(self._attached.pop())
        super().__exit__(*exc)


class RunTraceContextHandlers:
    """A picklable `SegmentRunner.extra_handlers` factory: a `RunTraceContext`, then `inner()`'s."""

    def __init__(self, carrier: dict[str, str], inner: Any = None) -> None:
        self.carrier = carrier
        self.inner = inner

    def __call__(self) -> list[Handler]:
        return [RunTraceContext(self.carrier), *(self.inner() if self.inner is not None else [])]


class OTelListener(RunListener):
    """Turns `RunStarted` / `StepRecord` / `RunFinished` records into spans (thread-safe; see the
    module docstring). `sink` defaults to an `SdkSink` over `tracer_provider` (the global provider
    when None). `close()` ends runs that never finished."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None, *, capture_content: bool = False,
                 particle_sampling: float = 1.0, background: bool = True, sink: Any = None,
                 session_id: str | None = None, wait_at_run_end: bool | None = None) -> None:
        self.sink = sink if sink is not None else SdkSink(tracer_provider, SCOPE)
        self.wait_at_run_end = isinstance(self.sink, SdkSink) if wait_at_run_end is None else wait_at_run_end
        self.sampler = LineageSampler(particle_sampling) if particle_sampling != 1.0 else None
        run_attrs = {"plp.particle_sampling": particle_sampling} if self.sampler is not None else {}
        self.planner = SpanPlanner(self.sink.ids, capture_content, run_attrs)
        self.session_id = session_id or f"plp-{uuid.uuid4().hex[:16]}"
        self.worker = OrderedWorker("plp-otel-spans") if background else None
        self._lock = threading.Lock()
        self._attached: dict[str, tuple[object, SpanContext]] = {}

    @property
    def capture_content(self) -> bool:
        return self.planner.capture_content

    @property
    def particle_sampling(self) -> float:
        return 1.0 if self.sampler is None else self.sampler.rate

    def _do(self, fn: Any, *args: Any, weight: int = 1) -> int:
        """Run `fn(*args)` on the worker (returns its call number) or here, under the lock."""
        if self.worker is not None:
            return self.worker.submit(fn, *args, weight=weight)
        with self._lock:
            result = fn(*args)
            if hasattr(result, "__next__"):
                for _ in result:
                    pass
        return 0

    def _emit(self, run_id: str, owned: list[Owned]) -> None:
        if self.sampler is None:
            self.sink.emit([span for _, span in owned])
        else:
            self.sink.emit(self.sampler.add(run_id, owned))

    # -- the work the worker does ---------------------------------------------------------------
    def _plan_step(self, record: StepRecord):
        for chunk in self.planner.step(record):
            self._emit(record.run_id, chunk)
            yield
        if self.sampler is not None:
            self.sink.emit(self.sampler.after_step(record))

    def _end_run(self, record: RunFinished) -> None:
        if self.sampler is not None:
            self.sink.emit(self.sampler.end_run(record))
        self.sink.emit([span for _, span in self.planner.end_run(record)])

    def _close(self) -> None:
        if self.sampler is not None:
            self.sink.emit(self.sampler.close())
        self.sink.emit([span for _, span in self.planner.close()])
        self.sink.flush()

    # -- the run's context ----------------------------------------------------------------------
    def _attach(self, run_id: str, planned: PlannedRun) -> None:
        """Make the run span current for what the run executes (see the module docstring)."""
        flags = TraceFlags(TraceFlags.SAMPLED if planned.sampled else TraceFlags.DEFAULT)
        state = _RUN_STATE if planned.sampled else TraceState()
        span_context = SpanContext(planned.trace_id, planned.span_id, False, flags, state)
        token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(span_context)))
        self._attached[run_id] = (token, span_context)

    def _detach(self, run_id: str) -> None:
        """Undo `_attach`, if the current context is still the run's (a record delivered from
        another context leaves it to be discarded with that context)."""
        token, span_context = self._attached.pop(run_id, (None, None))
        if token is not None and trace.get_current_span().get_span_context() == span_context:
            otel_context.detach(token)

    def _publish(self, run_id: str) -> None:
        """Put the run's W3C context in the run scope (`RUN_SCOPE_TRACE_KEY`), whose plain values
        travel with the program to the Ray segment workers: calls made there join the run's trace
        (`agents.agent_actor.trace_carrier` reads it when no span is current)."""
        span_context = self._attached.get(run_id, (None, None))[1]
        if span_context is not None:
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(span_context)))
            run_scope()[RUN_SCOPE_TRACE_KEY] = json.dumps(carrier)

    def segment_handlers(self, run_id: str, inner: Any = None) -> RunTraceContextHandlers | None:
        """The `extra_handlers` factory that makes run `run_id`'s context current around each of its
        segments in any process (for segment workers; see the module docstring), or None when the
        run is not open here."""
        span_context = self._attached.get(run_id, (None, None))[1]
        if span_context is None:
            return None
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(span_context)))
        return RunTraceContextHandlers(carrier, inner)

    # -- RunListener -------------------------------------------------------------------------
    def on_run_start(self, record: RunStarted) -> None:
        current = otel_context.get_current()
        parent = trace.get_current_span(current).get_span_context()
        session = otel_context.get_value(SESSION_KEY, current) or self.session_id
        planned = self.planner.plan_run(parent if parent.is_valid else None, str(session))
        self._attach(record.run_id, planned)
        self._publish(record.run_id)
        self._do(self.planner.start_run, record, planned)

    def on_step(self, record: StepRecord) -> None:
        self._do(self._plan_step, record, weight=1 + len(record.particles))

    def on_run_end(self, record: RunFinished) -> None:
        """Returns once every span of the run is planned and handed to the sink when
        `wait_at_run_end`, else at once; the export that follows runs on the worker, not waited
        for (in the caller with `background=False`)."""
        self._detach(record.run_id)
        built = self._do(self._end_run, record)
        self._do(self.sink.flush)
        if self.wait_at_run_end:
            self.flush(until=built)

    def flush(self, timeout_s: float | None = None, until: int | None = None) -> bool:
        """Wait until the spans of every record received so far are handed to the sink (not
        exported: that is the sink's `flush`). False if `timeout_s` passed first."""
        if self.worker is None:
            return True
        with relaxed_gc():
            return self.worker.drain(timeout_s, until)

    def close(self) -> None:
        """Plan what is queued, end (with status ERROR) runs that never reported their end, export;
        detach the contexts of such runs that are still current here (latest first)."""
        for run_id in reversed(list(self._attached)):
            self._detach(run_id)
        self._do(self._close)
        self.flush()
