"""`OTelListener`: a run's records turned into OpenTelemetry spans, after the fact, with exact times.

Span tree (OpenInference kind in brackets; `plp.*` attributes carry the weights):

    plp.run <policy>               [CHAIN]  RunStarted .. RunFinished
      plp.step <k>                 [CHAIN]  one SMC step; event `plp.resample` when it resampled
        plp.particle <id>          [CHAIN]  one particle advanced to its next weighting statement
          chat <model>             [LLM]    a SampleEvent whose `info` carries LLM metadata
          tool <name>              [TOOL]   an InteractEvent tool_call (paired with its tool_result)

Choices, and why:
- Particle steps are CHAIN, not AGENT: a particle step is a segment of an arbitrary program (it may
  run several agents, or none when it only samples distributions); AGENT is left for agent spans.
- Factors and guarantees are span *events* (`plp.factor`, `plp.guarantee`) on the particle-step
  span, not EVALUATOR spans: they are instantaneous statements with no duration of their own (a
  judge's LLM call behind a factor is already its own LLM span), and the step that ends at a site
  already carries `plp.site`, `plp.log_increment` and `plp.log_weight`.
- Non-finite floats are never exported (-inf does not survive every exporter and JSON backend, and
  a string "-inf" would change the attribute's type). Such an attribute is *omitted*, its key is
  listed as "<key>=-inf" (or inf/nan) in the string-array attribute `plp.nonfinite`, and a -inf
  log weight / log evidence / log increment / potential also sets `plp.dead=True` on that span or
  event. Span links and `plp.parent_particle_id` both record resampling ancestry (Phoenix drops links).
- Content (prompts, completions, tool arguments and results, message contents, particle values,
  marginals) is exported only with `capture_content=True`.

`SampleEvent.info` keys read for LLM spans (an event is an LLM generation when `info` has `model`
or `backend`): `backend` (gen_ai.system / gen_ai.provider.name), `model`, `usage` ({input_tokens,
output_tokens}, or prompt_tokens/completion_tokens), `latency_s`, `started_at_ns`, optional
`finish_reason`, `temperature`, `max_tokens`, `top_p`, and with capture_content `prompt` (a string
or a list of {role, content} messages) and `completion`. `InteractEvent.info` keys read for tool
spans: `started_at_ns`, `ended_at_ns`, `latency_s`, `tool_call_id`. An event without times is
placed, with zero duration, after the previous timed event of its particle step (the last event,
the weighting statement that ended the step, at the step's end).

Cost, and where it is paid (bench/otel_overhead.py): the SDK spends ~15-45 µs per span (attribute
validation, ids, span events, the processor) and OTLP ~70 µs more to encode it, while a particle
step of a program without I/O costs ~25 µs. So by default the listener only *enqueues* each
(immutable) record, and one background thread (`OrderedWorker`, which yields the GIL to a busy
coordinator) builds and ends the spans, with the records' times, and runs the exporter's batches,
while the coordinator goes on with the next step and awaits its LLM calls. `on_run_end` returns
only once every span of the run is built and ended (so a `force_flush` or an in-memory exporter
read right after `.run()` sees them all), then the worker flushes the provider (the run's last
partial batch) without the caller waiting; `flush()` waits for everything queued so far.
`background=False` builds spans synchronously in the caller. With Python's GIL the worker cannot
run while the coordinator computes, so a run that never waits (no LLM, no tool) pays the full
cost either way. Attribute values are handed to the SDK already clean (see otel_attributes): the
SDK's validation (`BoundedAttributes`) still runs and cannot be bypassed through its public API
(building `ReadableSpan`s directly, which its docs forbid, would also skip samplers and
processors' `on_start`).

`particle_sampling` (opt-in, default 1.0 = every span): for huge populations, export the
particle-step spans (and their LLM/tool child spans) of a deterministic fraction of particle ids
(a multiplicative hash of the id), so a kept particle keeps all its steps until resampling gives
it a new id. Run and step spans are always complete (ESS, evidence, counts of *all* particles that
moved); with sampling on, the run span has `plp.particle_sampling` and each step span
`plp.particle_spans` (how many particle-step spans it has). A link to a parent whose span was
not kept is omitted; `plp.parent_particle_id` is always set.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from observability.ordered_worker import OrderedWorker
from observability.otel_attributes import KIND, attributes, event_times, llm_attributes, pair_tools, text, \
    tool_attributes
from swarm.errors import redact_text
from swarm.gc_tuning import relaxed_gc
from swarm.listeners import ParticleStep, RunFinished, RunListener, RunStarted, StepRecord

__all__ = ["OTelListener", "SpanBuilder", "attributes", "llm_attributes", "tool_attributes", "KIND", "SCOPE"]

SCOPE = "plp-swarm.observability"
_PREVIOUS_STEP = {"plp.link.type": "previous_step"}   # the SDK copies link attributes: safe to share
_HASH, _MASK = 0x9E3779B97F4A7C15, (1 << 64) - 1


@dataclass
class _Run:
    """What the builder keeps per open run."""

    span: Span
    last_ctx: dict[int, SpanContext] = field(default_factory=dict)
    """particle_id -> context of its latest (exported) particle-step span."""
    resampled_from: dict[int, tuple[int, SpanContext | None]] = field(default_factory=dict)
    """offspring particle_id -> (parent particle_id, parent's last particle-step span context)."""
    last_ns: int = 0


class SpanBuilder:
    """Builds and ends the spans of runs from their records, with the records' times. Not
    thread-safe: `OTelListener` calls it from one thread at a time (its worker, or under a lock)."""

    def __init__(self, tracer: trace.Tracer, capture_content: bool = False, particle_sampling: float = 1.0) -> None:
        if not 0.0 < particle_sampling <= 1.0:
            raise ValueError(f"OTelListener: particle_sampling={particle_sampling!r} must be in (0, 1]")
        self.tracer = tracer
        self.capture_content = capture_content
        self.particle_sampling = particle_sampling
        self._threshold = int(particle_sampling * (1 << 64))
        self.runs: dict[str, _Run] = {}

    def keeps(self, particle_id: int) -> bool:
        """Whether the particle-step spans of `particle_id` are exported (always, unless sampling)."""
        return self._threshold > _MASK or ((particle_id * _HASH) & _MASK) < self._threshold

    # -- runs -----------------------------------------------------------------------------------
    def start_run(self, record: RunStarted, parent: otel_context.Context | None) -> None:
        config = {f"plp.config.{k}": v for k, v in record.config.items()
                  if isinstance(v, (str, bool, int, float))}
        attrs = {KIND: "CHAIN", "plp.run_id": record.run_id, "plp.policy": record.policy,
                 "plp.program": record.program, "plp.num_particles": record.num_particles,
                 "plp.runtime": record.runtime, **config}
        if self.particle_sampling < 1.0:
            attrs["plp.particle_sampling"] = self.particle_sampling
        span = self.tracer.start_span(f"plp.run {record.policy}", context=parent, attributes=attributes(attrs),
                                      start_time=record.started_at_ns)
        self.runs[record.run_id] = _Run(span, last_ns=record.started_at_ns)

    def end_run(self, record: RunFinished) -> None:
        run = self.runs.pop(record.run_id, None)
        if run is None:
            return
        attrs = {"plp.log_evidence": record.log_evidence, "plp.ess": record.ess,
                 "plp.final_num_particles": record.num_particles, "plp.tokens": record.tokens,
                 "plp.llm_calls": record.llm_calls, "plp.error": record.error}
        if self.capture_content and record.marginal:
            attrs["plp.marginal"] = json.dumps(record.marginal, default=str)
        run.span.set_attributes(attributes(attrs))
        run.span.set_status(Status(StatusCode.ERROR, redact_text(record.error)) if record.error
                            else Status(StatusCode.OK))
        run.span.end(end_time=record.ended_at_ns)

    def close(self) -> None:
        """End (with status ERROR) the spans of runs that started but never reported their end."""
        runs, self.runs = list(self.runs.values()), {}
        for run in runs:
            run.span.set_status(Status(StatusCode.ERROR, "run did not report its end"))
            run.span.end(end_time=run.last_ns)

    def _run(self, run_id: str, start_ns: int) -> _Run:
        """The open run `run_id`; a placeholder run span when the listener missed its start."""
        if run_id not in self.runs:
            span = self.tracer.start_span("plp.run", start_time=start_ns,
                                          attributes={KIND: "CHAIN", "plp.run_id": run_id})
            self.runs[run_id] = _Run(span, last_ns=start_ns)
        return self.runs[run_id]

    # -- steps ----------------------------------------------------------------------------------
    def step(self, record: StepRecord) -> None:
        """The step span, one span per particle step (unless sampled out), the resampling event."""
        for _ in self.step_parts(record):
            pass

    def step_parts(self, record: StepRecord) -> Iterator[None]:
        """`step` as a generator that yields after each particle step (the worker's quanta)."""
        run = self._run(record.run_id, record.started_at_ns)
        kept = [self.keeps(p.particle_id) for p in record.particles]
        step_span = self._step_span(run, record, sum(kept))
        parent = trace.set_span_in_context(step_span)
        contexts: list[SpanContext | None] = []
        for p, keep in zip(record.particles, kept):
            contexts.append(self._particle_span(run, p, parent) if keep else self._skip(run, p))
            yield
        if record.resampled and record.ancestors is not None:
            self._resample(run, record, step_span, contexts)
        step_span.end(end_time=record.ended_at_ns)
        run.last_ns = max(run.last_ns, record.ended_at_ns)

    def _step_span(self, run: _Run, record: StepRecord, exported: int) -> Span:
        """The step span (ESS and evidence are the population's; counts are of the particles that
        moved in this step: waiting finished particles are not in the record)."""
        died = sum(p.status == "dead" for p in record.particles)
        attrs = {KIND: "CHAIN", "plp.run_id": record.run_id, "plp.step": record.step,
                 "plp.ess": record.ess, "plp.log_evidence": record.log_evidence,
                 "plp.resampled": record.resampled, "plp.num_moved": len(record.particles),
                 "plp.num_died": died, "plp.tokens": record.tokens, "plp.llm_calls": record.llm_calls}
        if self.particle_sampling < 1.0:
            attrs["plp.particle_spans"] = exported
        return self.tracer.start_span(f"plp.step {record.step}", context=trace.set_span_in_context(run.span),
                                      attributes=attributes(attrs), start_time=record.started_at_ns)

    def _skip(self, run: _Run, p: ParticleStep) -> None:
        """A sampled-out particle step: forget what would have linked it."""
        run.resampled_from.pop(p.particle_id, None)
        return None

    def _particle_span(self, run: _Run, p: ParticleStep, parent: Any) -> SpanContext:
        """One particle step, its links, its events and child spans; returns its span context."""
        links, parent_id = self._links(run, p)
        attrs = {KIND: "CHAIN", "plp.particle_id": p.particle_id, "plp.parent_particle_id": parent_id,
                 "plp.index": p.index, "plp.step": p.step, "plp.status": p.status, "plp.site": p.site,
                 "plp.log_weight": p.log_weight, "plp.log_increment": p.log_increment,
                 "plp.normalized_weight": p.normalized_weight, "plp.killed_by": p.killed_by}
        if p.status == "dead":
            attrs["plp.dead"] = True
        if self.capture_content and p.status == "finished":
            attrs["output.value"] = text(p.value)
        span = self.tracer.start_span(f"plp.particle {p.particle_id}", context=parent, links=links,
                                      attributes=attributes(attrs), start_time=p.started_at_ns)
        if p.new_events:
            self._events(span, p)
        span.end(end_time=p.ended_at_ns)
        ctx = run.last_ctx[p.particle_id] = span.get_span_context()
        return ctx

    def _links(self, run: _Run, p: ParticleStep) -> tuple[list[Link], int | None]:
        """Links of a particle step: to its resampling parent's last span (first step after the
        resampling), else to its own previous step; and the parent id to record as attribute."""
        origin = run.resampled_from.pop(p.particle_id, None)
        parent_id = p.parent_id if p.parent_id is not None else (origin[0] if origin else None)
        if origin is None and p.parent_id is not None and p.particle_id not in run.last_ctx \
                and p.parent_id in run.last_ctx:
            origin = (p.parent_id, run.last_ctx[p.parent_id])
        if origin is not None:
            if origin[1] is None:  # the parent's span was sampled out
                return [], parent_id
            return [Link(origin[1], {"plp.link.type": "resampled_from",
                                     "plp.parent_particle_id": origin[0]})], parent_id
        previous = run.last_ctx.get(p.particle_id)
        if previous is not None:
            return [Link(previous, _PREVIOUS_STEP)], parent_id
        return [], parent_id

    def _resample(self, run: _Run, record: StepRecord, span: Span, contexts: list[SpanContext | None]) -> None:
        """The `plp.resample` event on the step span; remember each offspring's parent span.
        `plp.parent_particle_ids` has -1 where the parent did not move in this step (unknown id)."""
        ancestors = list(record.ancestors or [])
        offspring = list(record.offspring_ids or [])
        by_index = {p.index: (p.particle_id, ctx) for p, ctx in zip(record.particles, contexts)}
        # the previous generation's ids are obsolete now: keep only what offspring will need
        run.resampled_from = {child: by_index[a] for child, a in zip(offspring, ancestors) if a in by_index}
        run.last_ctx.clear()
        span.add_event("plp.resample", attributes(
            {"plp.ancestors": ancestors, "plp.offspring_ids": offspring, "plp.ess": record.ess,
             "plp.num_unique_ancestors": len(set(ancestors)),
             "plp.parent_particle_ids": [by_index[a][0] if a in by_index else -1 for a in ancestors]}),
            timestamp=record.ended_at_ns)

    # -- events ---------------------------------------------------------------------------------
    def _events(self, span: Span, p: ParticleStep) -> None:
        """Child spans (LLM, TOOL) and span events (factor, guarantee, sample, message, error)."""
        events, cursor, last = p.new_events, p.started_at_ns, len(p.new_events) - 1
        parent = pairs = paired = error = None
        for i, e in enumerate(events):
            kind = e.type
            if kind == "sample" and ("model" in e.info or "backend" in e.info):
                parent = parent if parent is not None else trace.set_span_in_context(span)
                cursor = self._child(f"chat {e.info.get('model', '')}".strip(), SpanKind.CLIENT,
                                     llm_attributes(e, self.capture_content), e.info, cursor, parent)
            elif kind == "interact" and e.kind in ("tool_call", "tool_result"):
                if pairs is None:
                    pairs = pair_tools(events)
                    paired = {id(result) for result in pairs.values()}
                if id(e) not in paired:
                    parent = parent if parent is not None else trace.set_span_in_context(span)
                    cursor = self._tool_span(e, pairs.get(i), cursor, parent)
            else:  # the statement that ended the step happened at its end
                self._span_event(span, e, p.ended_at_ns if i == last else cursor)
                if kind == "error" and error is None:
                    error = e
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, redact_text(f"{error.error_type}: {error.message}")))

    def _tool_span(self, e: Any, result: Any | None, cursor: int, parent: Any) -> int:
        """A TOOL span from a tool_call to its result (or for an unpaired call or result)."""
        call = e if e.kind == "tool_call" else None
        result = result if call is not None else e
        start, end = event_times(e.info, cursor)
        if call is not None and result is not None:
            end = event_times(result.info, start)[1]
        name = f"tool {call.receiver if call is not None else e.sender}"
        return self._child(name, SpanKind.INTERNAL, tool_attributes(call, result, self.capture_content),
                           {"started_at_ns": start, "ended_at_ns": max(start, end)}, cursor, parent)

    def _child(self, name: str, kind: SpanKind, attrs: dict[str, Any], info: Any, cursor: int, parent: Any) -> int:
        """Create and end one child span; returns the new time cursor (its end)."""
        start, end = event_times(info, cursor)
        span = self.tracer.start_span(name, context=parent, kind=kind, attributes=attributes(attrs),
                                      start_time=start)
        span.end(end_time=end)
        return end

    def _span_event(self, span: Span, e: Any, at_ns: int) -> None:
        """Events that are not spans of their own become span events on the particle-step span."""
        kind = e.type
        if kind == "factor":
            name, attrs = "plp.factor", {"plp.site": e.address, "plp.log_potential": e.log_potential,
                                         "plp.shaping": getattr(e, "shaping", None),
                                         "plp.scale": getattr(e, "scale", None)}
        elif kind == "guarantee":
            name, attrs = "plp.guarantee", {"plp.site": e.address, "plp.satisfied": e.satisfied,
                                            "plp.scale": getattr(e, "scale", None),
                                            "plp.dead": True if not e.satisfied else None}
        elif kind == "sample":
            name, attrs = "plp.sample", {"plp.site": e.address, "plp.log_prob": e.log_prob,
                                         "plp.target_log_prob": e.target_log_prob, "plp.dist": e.dist,
                                         "plp.value": text(e.value) if self.capture_content else None}
        elif kind == "error":
            name, attrs = "exception", {"plp.site": e.address, "exception.type": e.error_type,
                                        "exception.message": e.message}
        else:
            name, attrs = "plp.interact", {"plp.site": e.address, "plp.sender": e.sender,
                                           "plp.receiver": e.receiver, "plp.kind": e.kind,
                                           "plp.content": text(e.content) if self.capture_content else None}
        span.add_event(name, attributes(attrs), timestamp=at_ns)


class OTelListener(RunListener):
    """Turns `RunStarted` / `StepRecord` / `RunFinished` records into spans (thread-safe).

    The run span opens under whatever span is current in the thread that starts the run (so a
    user's own span can enclose a run). By default a background thread builds the spans (see the
    module docstring) and `on_run_end` waits for them; `background=False` builds them in the
    caller. `close()` ends runs that never finished. `particle_sampling` < 1 is opt-in.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None, *, capture_content: bool = False,
                 particle_sampling: float = 1.0, background: bool = True) -> None:
        self.builder = SpanBuilder(trace.get_tracer(SCOPE, tracer_provider=tracer_provider),
                                   capture_content, particle_sampling)
        self.worker = OrderedWorker("plp-otel-spans") if background else None
        self._provider = tracer_provider
        self._lock = threading.Lock()

    @property
    def tracer(self) -> trace.Tracer:
        return self.builder.tracer

    @property
    def capture_content(self) -> bool:
        return self.builder.capture_content

    def _do(self, fn: Any, *args: Any, weight: int = 1) -> int:
        """Run `fn(*args)` on the worker (returns its call number) or here, under the lock."""
        if self.worker is not None:
            return self.worker.submit(fn, *args, weight=weight)
        with self._lock:
            fn(*args)
        return 0

    def _export_run(self) -> None:
        """Hand the finished run's spans to the exporter (`force_flush` of the provider): batching
        processors would otherwise keep the last partial batch until the next spans end."""
        provider = self._provider if self._provider is not None else trace.get_tracer_provider()
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            flush()

    # -- RunListener -------------------------------------------------------------------------
    def on_run_start(self, record: RunStarted) -> None:
        self._do(self.builder.start_run, record, otel_context.get_current())

    def on_step(self, record: StepRecord) -> None:
        if self.worker is not None:
            self.worker.submit(self.builder.step_parts, record, weight=1 + len(record.particles))
        else:
            self._do(self.builder.step, record)

    def on_run_end(self, record: RunFinished) -> None:
        """Returns once every span of the run is built and ended; the export that follows runs on
        the worker, not waited for (in the caller with `background=False`)."""
        built = self._do(self.builder.end_run, record)
        self._do(self._export_run)
        self.flush(until=built)

    def flush(self, timeout_s: float | None = None, until: int | None = None) -> bool:
        """Wait until the spans of every record received so far are built and ended (not exported:
        that is the provider's `force_flush`). False if `timeout_s` passed first."""
        if self.worker is None:
            return True
        with relaxed_gc():
            return self.worker.drain(timeout_s, until)

    def close(self) -> None:
        """Build what is queued, then end (with status ERROR) runs that never reported their end."""
        self._do(self.builder.close)
        self.flush()
