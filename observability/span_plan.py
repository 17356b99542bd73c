"""`SpanPlanner`: a run's listener records turned into `SpanData`, a whole step at a time.

Span tree (OpenInference kind in brackets; `plp.*` attributes carry the weights):

    plp.run <policy>               [CHAIN]  RunStarted .. RunFinished; input = program and policy,
                                            output = log Ẑ, ESS, deaths by cause (+ top answers)
      plp.step <k>                 [CHAIN]  one population step; event `plp.resample` when it resampled
        plp.particle <id>          [CHAIN]  one particle advanced to its next weighting statement
          chat <model>             [LLM]    a SampleEvent whose `info` carries LLM metadata
          tool <name>              [TOOL]   an InteractEvent tool_call (paired with its tool_result)
      plp.final <id>               [CHAIN]  a member of the final population, with its final weight

Ids are allocated here, before any span exists: the run's trace and span ids are planned when the
run starts (`plan_run`, called in the coordinator's thread: that context is what agents propagate
to their actors while the run goes on, see observability.otel), every other id when its step is
planned. So a step is planned in one pass over its particles, and a sink turns the `SpanData` into
OTLP bytes or SDK spans without any lookup.

Lineage (Phoenix drops span links): every particle span carries `plp.lineage`, the particle ids
from its first ancestor (at the first step) down to itself (and the same as a string,
`plp.lineage_path` "/a/b/c/", which Phoenix's filters can search), and the first span of an offspring
after resampling `plp.ancestor_span_id`, the span id of its parent's last particle step (also a
`resampled_from` link; a continuing particle links to its own previous step). `plp.final` spans
carry the final normalised weights (a particle that finished early waits: its last step's weight
is not its final one).

Choices, and why (unchanged from the first span builder):
- Particle steps are CHAIN, not AGENT: a particle step is a segment of an arbitrary program (it may
  run several agents, or none); factors and guarantees are span *events*, not EVALUATOR spans
  (observability.span_events).
- Non-finite floats are never exported: such an attribute is omitted, listed as "<key>=-inf" in
  `plp.nonfinite`, and a -inf log weight / log evidence / log increment / potential sets `plp.dead`.
- Content (prompts, completions, tool arguments and results, message contents, particle values,
  answers, program arguments) is exported only with `capture_content=True`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple

from observability.global_trace import _normalized
from observability.otel_attributes import KIND, attributes, particle_output, run_input, run_output, step_output, text
from observability.span_data import ERROR, OK, SpanData, hex_span_id
from observability.span_events import ParticleStepContents
from swarm.errors import redact_text
from swarm.listeners import ParticleStep, RunFinished, RunStarted, StepRecord

Owned = tuple[int | None, SpanData]
"""A planned span and the particle it belongs to (None for run, step and final spans)."""
CHUNK = 32
"""Particles planned between two yields of `SpanPlanner.step` (the background worker's quanta)."""
_PREVIOUS_STEP = {"plp.link.type": "previous_step"}


class PlannedRun(NamedTuple):
    """The ids and context of a run's span, decided when the run starts."""

    trace_id: int
    span_id: int
    parent_id: int | None
    parent_remote: bool
    sampled: bool
    session_id: str | None


@dataclass
class _Run:
    """What the planner keeps per open run (the current generation of particles only)."""

    ids: PlannedRun
    started_at_ns: int
    attrs: dict[str, Any]
    last_ns: int
    last_span: dict[int, int] = field(default_factory=dict)
    """particle id -> span id of its latest particle-step span, in the current generation."""
    origin: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    """offspring id -> (parent id, parent's last particle-step span id), until its first step."""
    lineage: dict[int, tuple[int, ...]] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)
    deaths: Counter = field(default_factory=Counter)
    size: int = 0


def lineage_path(lineage: tuple[int, ...]) -> str:
    """`plp.lineage_path`: the lineage as "/a/b/c/", so that `'/b/' in plp.lineage_path` selects b's
    descendants in Phoenix (whose filters cannot look inside an array of numbers)."""
    return "/" + "/".join(map(str, lineage)) + "/"


def _final_output(status: str, weight: float, value: Any, capture_content: bool) -> str:
    """`output.value` of a final-population span: the value (content), else its weight and status."""
    if capture_content and status == "finished":
        return text(value)
    return f"final weight {weight:.4g}" + ("" if status == "finished" else f" ({status})")


class SpanPlanner:
    """Plans the spans of runs from their records (not thread-safe: the listener calls it from one
    thread at a time). `ids` generates trace and span ids (an OpenTelemetry `IdGenerator`)."""

    def __init__(self, ids: Any, capture_content: bool = False, run_attributes: dict[str, Any] | None = None) -> None:
        self.ids = ids
        self.capture_content = capture_content
        self.run_attributes = dict(run_attributes or {})
        self.contents = ParticleStepContents(ids.generate_span_id, capture_content)
        self.runs: dict[str, _Run] = {}

    # -- runs -----------------------------------------------------------------------------------
    def plan_run(self, parent: Any | None, session_id: str | None) -> PlannedRun:
        """The run span's ids under `parent` (a SpanContext, or None). Thread-safe."""
        if parent is not None and parent.is_valid:
            return PlannedRun(parent.trace_id, self.ids.generate_span_id(), parent.span_id, parent.is_remote,
                              parent.trace_flags.sampled, session_id)
        return PlannedRun(self.ids.generate_trace_id(), self.ids.generate_span_id(), None, False, True, session_id)

    def start_run(self, record: RunStarted, planned: PlannedRun) -> None:
        config = {f"plp.config.{k}": v for k, v in record.config.items() if isinstance(v, (str, bool, int, float))}
        raw = {KIND: "CHAIN", "plp.run_id": record.run_id, "plp.policy": record.policy, "plp.program": record.program,
               "plp.num_particles": record.num_particles, "plp.runtime": record.runtime, "session.id": planned.session_id,
               **config, **self.run_attributes, **run_input(record, self.capture_content)}
        self.runs[record.run_id] = _Run(planned, record.started_at_ns, attributes(raw), record.started_at_ns,
                                        size=record.num_particles)

    def end_run(self, record: RunFinished) -> list[Owned]:
        """The final-population spans and the run span."""
        run = self.runs.pop(record.run_id, None)
        if run is None or not run.ids.sampled:
            return []
        out: list[Owned] = [(None, s) for s in self._final_spans(run, record)]
        attrs = {"plp.log_evidence": record.log_evidence, "plp.ess": record.ess,
                 "plp.final_num_particles": record.num_particles, "plp.tokens": record.tokens,
                 "plp.llm_calls": record.llm_calls, "plp.error": record.error, "plp.run.status": record.status,
                 "plp.pending_questions": [q.get("name") for q in record.pending] or None,
                 **run_output(record, run.deaths, self.capture_content)}
        span = self._run_span(run, record.ended_at_ns, attrs)
        if record.error:
            span.status_code, span.status_message = ERROR, redact_text(record.error)
        else:
            span.status_code = OK
        out.append((None, span))
        return out

    def close(self) -> list[Owned]:
        """The run spans (status ERROR) of runs that started but never reported their end."""
        runs, self.runs = list(self.runs.values()), {}
        out = []
        for run in runs:
            if run.ids.sampled:
                span = self._run_span(run, run.last_ns, {})
                span.status_code, span.status_message = ERROR, "run did not report its end"
                out.append((None, span))
        return out

    def _run_span(self, run: _Run, end_ns: int, end_attrs: dict[str, Any]) -> SpanData:
        ids = run.ids
        return SpanData(f"plp.run {run.attrs.get('plp.policy', '')}".strip(), ids.trace_id, ids.span_id,
                        ids.parent_id, run.started_at_ns, end_ns, {**run.attrs, **attributes(end_attrs)},
                        parent_remote=ids.parent_remote)

    def _run(self, run_id: str, start_ns: int) -> _Run:
        """The open run `run_id`; a placeholder when the listener missed its start."""
        if run_id not in self.runs:
            self.runs[run_id] = _Run(self.plan_run(None, None), start_ns, {KIND: "CHAIN", "plp.run_id": run_id},
                                     start_ns)
        return self.runs[run_id]

    def _final_spans(self, run: _Run, record: RunFinished) -> list[SpanData]:
        """One `plp.final <id>` span per member of the final population, with its final weight."""
        log_w = list(record.log_weights)
        weights = _normalized(log_w).tolist()
        out, ids = [], run.ids
        for k, pid in enumerate(record.particle_ids):
            lw, weight = (log_w[k], weights[k]) if k < len(log_w) else (-math.inf, 0.0)
            status = run.status.get(pid, "finished")
            if lw == -math.inf and status != "lost":   # a lost particle is missing, not dead
                status = "dead"
            value = record.values[k] if k < len(record.values) else None
            raw = {KIND: "CHAIN", "plp.run_id": record.run_id, "plp.particle_id": pid, "plp.final": True,
                   "plp.log_weight": lw, "plp.normalized_weight": weight, "plp.status": status,
                   "output.value": _final_output(status, weight, value, self.capture_content)}
            attrs = attributes(raw)
            attrs["plp.lineage"] = run.lineage.get(pid, (pid,))
            attrs["plp.lineage_path"] = lineage_path(attrs["plp.lineage"])
            last = run.last_span.get(pid) or (run.origin.get(pid) or (None, None))[1]
            links = [(ids.trace_id, last, {"plp.link.type": "last_step"})] if last else None
            out.append(SpanData(f"plp.final {pid}", ids.trace_id, self.ids.generate_span_id(), ids.span_id,
                                record.ended_at_ns, record.ended_at_ns, attrs, links=links))
        return out

    # -- steps ----------------------------------------------------------------------------------
    def step(self, record: StepRecord) -> Iterator[list[Owned]]:
        """The step's spans, in chunks of `CHUNK` particles (the step span comes last, with its
        resampling event). The caller emits each chunk."""
        run = self._run(record.run_id, record.started_at_ns)
        run.last_ns = max(run.last_ns, record.ended_at_ns)
        if not run.ids.sampled:
            return
        step_span = self._step_span(run, record)
        chunk: list[Owned] = []
        for p in record.particles:
            chunk.extend(self._particle(run, p, step_span))
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
        if record.resampled and record.ancestors is not None:
            self._resample(run, record, step_span)
        chunk.append((None, step_span))
        yield chunk

    def _step_span(self, run: _Run, record: StepRecord) -> SpanData:
        """The step span (ESS and evidence are the population's; counts are of the particles that
        moved in this step: waiting finished particles are not in the record)."""
        died = sum(p.status == "dead" for p in record.particles)
        size = len(record.log_weights) or run.size or len(record.particles)
        raw = {KIND: "CHAIN", "plp.run_id": record.run_id, "plp.step": record.step, "plp.ess": record.ess,
               "plp.ess_fraction": record.ess / size if size else None, "plp.log_evidence": record.log_evidence,
               "plp.resampled": record.resampled, "plp.num_moved": len(record.particles), "plp.num_died": died,
               "plp.num_lost": getattr(record, "lost", 0),
               "plp.tokens": record.tokens, "plp.llm_calls": record.llm_calls,
               "output.value": step_output(record.ess, size, record.log_evidence, record.resampled, died)}
        ids = run.ids
        return SpanData(f"plp.step {record.step}", ids.trace_id, self.ids.generate_span_id(), ids.span_id,
                        record.started_at_ns, record.ended_at_ns, attributes(raw), events=[])

    def _particle(self, run: _Run, p: ParticleStep, step_span: SpanData) -> list[Owned]:
        """One particle step: its span (links, lineage, events) and its LLM and tool spans."""
        pid = p.particle_id
        links, parent_id, ancestor_span = self._links(run, p)
        raw = {KIND: "CHAIN", "plp.particle_id": pid, "plp.parent_particle_id": parent_id, "plp.index": p.index,
               "plp.step": p.step, "plp.status": p.status, "plp.site": p.site, "plp.log_weight": p.log_weight,
               "plp.log_increment": p.log_increment, "plp.normalized_weight": p.normalized_weight,
               "plp.killed_by": p.killed_by,
               "output.value": particle_output(p.status, p.site, p.killed_by, p.value, self.capture_content)}
        if p.status == "dead":
            raw["plp.dead"] = True
            run.deaths[p.killed_by or "<unknown>"] += 1
        if ancestor_span is not None:
            raw["plp.ancestor_span_id"] = hex_span_id(ancestor_span)
        attrs = attributes(raw)
        lineage = run.lineage.get(pid)
        if lineage is None:
            base = run.lineage.get(parent_id) if parent_id is not None else None
            lineage = run.lineage[pid] = (base + (pid,)) if base else ((parent_id, pid) if parent_id is not None
                                                                       else (pid,))
        attrs["plp.lineage"] = lineage
        attrs["plp.lineage_path"] = lineage_path(lineage)
        span = SpanData(f"plp.particle {pid}", step_span.trace_id, self.ids.generate_span_id(), step_span.span_id,
                        p.started_at_ns, p.ended_at_ns, attrs, links=links or None)
        children: list[SpanData] = []
        if p.new_events:
            self.contents.fill(span, p, children)
        run.last_span[pid] = span.span_id
        run.status[pid] = p.status
        return [(pid, span), *((pid, c) for c in children)]

    def _links(self, run: _Run, p: ParticleStep) -> tuple[list, int | None, int | None]:
        """(links, parent particle id, ancestor's span id): to the resampling parent's last span on
        an offspring's first step, else to the particle's own previous step."""
        pid, trace_id = p.particle_id, run.ids.trace_id
        origin = run.origin.pop(pid, None)
        parent_id = p.parent_id if p.parent_id is not None else (origin[0] if origin else None)
        if origin is None and p.parent_id is not None and pid not in run.last_span and p.parent_id in run.last_span:
            origin = (p.parent_id, run.last_span[p.parent_id])
        if origin is not None:
            if origin[1] is None:
                return [], parent_id, None
            return [(trace_id, origin[1], {"plp.link.type": "resampled_from", "plp.parent_particle_id": origin[0]})], \
                parent_id, origin[1]
        previous = run.last_span.get(pid)
        if previous is not None:
            return [(trace_id, previous, _PREVIOUS_STEP)], parent_id, None
        return [], parent_id, None

    def _resample(self, run: _Run, record: StepRecord, span: SpanData) -> None:
        """The `plp.resample` event; the new generation's origins, lineages and statuses.
        `plp.parent_particle_ids` has -1 where the parent's id is unknown (a record without
        `particle_ids` whose parent did not move in this step)."""
        ancestors = list(record.ancestors or [])
        offspring = list(record.offspring_ids or [])
        by_index = dict(enumerate(record.particle_ids)) if record.particle_ids else \
            {p.index: p.particle_id for p in record.particles}
        parents = [by_index.get(a, -1) for a in ancestors]
        origin, lineage, status = {}, {}, {}
        for child, parent in zip(offspring, parents):
            if parent < 0:
                continue
            origin[child] = (parent, run.last_span.get(parent))
            lineage[child] = run.lineage.get(parent, (parent,)) + (child,)
            status[child] = run.status.get(parent, "running")
        run.origin, run.lineage, run.status, run.last_span = origin, lineage, status, {}
        span.events.append(("plp.resample", record.ended_at_ns, attributes(
            {"plp.ancestors": ancestors, "plp.offspring_ids": offspring, "plp.ess": record.ess,
             "plp.num_unique_ancestors": len(set(ancestors)), "plp.parent_particle_ids": parents})))
