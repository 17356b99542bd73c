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
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from swarm.errors import redact_text
from swarm.listeners import ParticleStep, RunFinished, RunListener, RunStarted, StepRecord

KIND = "openinference.span.kind"
SCOPE = "plp-swarm.observability"
_LOG_QUANTITIES = ("plp.log_weight", "plp.log_evidence", "plp.log_increment", "plp.log_potential")


def attributes(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Make `raw` exportable: drop None, turn non-finite floats into `plp.nonfinite`/`plp.dead`
    (see the module docstring), stringify other values that OTel attributes cannot carry, and mask
    registered secrets (API keys) in every string."""
    out: dict[str, Any] = {}
    nonfinite: list[str] = []
    for key, value in raw.items():
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            nonfinite.append(f"{key}={value}")
            if value == -math.inf and key in _LOG_QUANTITIES:
                out["plp.dead"] = True
        elif isinstance(value, str):
            out[key] = redact_text(value)
        elif isinstance(value, (bool, int, float)):
            out[key] = value
        elif isinstance(value, (list, tuple)) and _homogeneous(value):
            out[key] = [redact_text(v) if isinstance(v, str) else v for v in value]
        else:
            out[key] = redact_text(_text(value))
    if nonfinite:
        out["plp.nonfinite"] = nonfinite
    return out


def _homogeneous(values: Any) -> bool:
    """True when a sequence can be an OTel array attribute: one scalar type, finite floats."""
    types = {type(v) for v in values}
    return len(types) <= 1 and types <= {str, bool, int, float} and all(
        math.isfinite(v) for v in values if isinstance(v, float))


def _text(value: Any) -> str:
    """Content as text: strings as they are, anything else as JSON (repr as a last resort)."""
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return json.dumps(value, default=str)


def _get(obj: Any, *keys: str) -> Any:
    """The first of `keys` present in a mapping or as an attribute of an object."""
    for key in keys:
        value = obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)
        if value is not None:
            return value
    return None


def llm_attributes(event: Any, capture_content: bool) -> dict[str, Any]:
    """OpenTelemetry GenAI and OpenInference attributes of one LLM generation (a SampleEvent)."""
    info, usage = event.info, event.info.get("usage") or {}
    n_in, n_out = _get(usage, "input_tokens", "prompt_tokens"), _get(usage, "output_tokens", "completion_tokens")
    reason = info.get("finish_reason")
    attrs: dict[str, Any] = {
        KIND: "LLM", "gen_ai.operation.name": "chat",
        "gen_ai.system": info.get("backend"), "gen_ai.provider.name": info.get("backend"),
        "gen_ai.request.model": info.get("model"), "gen_ai.response.model": info.get("model"),
        "gen_ai.usage.input_tokens": n_in, "gen_ai.usage.output_tokens": n_out,
        "gen_ai.request.temperature": info.get("temperature"),
        "gen_ai.request.max_tokens": info.get("max_tokens"), "gen_ai.request.top_p": info.get("top_p"),
        "gen_ai.response.finish_reasons": [reason] if reason else None,
        "llm.model_name": info.get("model"), "llm.system": info.get("backend"),
        "llm.token_count.prompt": n_in, "llm.token_count.completion": n_out,
        "llm.token_count.total": n_in + n_out if n_in is not None and n_out is not None else None,
        "plp.site": event.address, "plp.log_prob": event.log_prob,
        "plp.target_log_prob": event.target_log_prob, "plp.latency_s": info.get("latency_s"),
    }
    if capture_content:
        attrs.update(_prompt_attributes(info.get("prompt")))
        if info.get("completion") is not None:
            attrs["output.value"] = _text(info["completion"])
            attrs["llm.output_messages.0.message.role"] = "assistant"
            attrs["llm.output_messages.0.message.content"] = _text(info["completion"])
    return attrs


def _prompt_attributes(prompt: Any) -> dict[str, Any]:
    """`input.value`, plus OpenInference `llm.input_messages.*` when the prompt is a message list."""
    if prompt is None:
        return {}
    attrs: dict[str, Any] = {"input.value": _text(prompt)}
    if isinstance(prompt, (list, tuple)):
        attrs["input.mime_type"] = "application/json"
        for i, message in enumerate(prompt):
            attrs[f"llm.input_messages.{i}.message.role"] = _get(message, "role")
            attrs[f"llm.input_messages.{i}.message.content"] = _get(message, "content")
    return attrs


def tool_attributes(call: Any, result: Any | None, capture_content: bool) -> dict[str, Any]:
    """OpenInference TOOL and GenAI execute_tool attributes of a tool_call (and its tool_result)."""
    first = call if call is not None else result
    name = call.receiver if call is not None else result.sender
    attrs: dict[str, Any] = {
        KIND: "TOOL", "gen_ai.operation.name": "execute_tool", "tool.name": name,
        "gen_ai.tool.name": name, "gen_ai.tool.call.id": first.info.get("tool_call_id"),
        "plp.site": first.address, "plp.tool.paired": call is not None and result is not None,
    }
    if capture_content:
        attrs["input.value"] = _text(call.content) if call is not None else None
        attrs["output.value"] = _text(result.content) if result is not None else None
    return attrs


def _times(info: Mapping[str, Any], cursor: int) -> tuple[int, int]:
    """(start, end) in ns of an event from its `info`, or a zero-length interval at `cursor`."""
    start = info.get("started_at_ns")
    start = int(start) if start is not None else cursor
    if info.get("ended_at_ns") is not None:
        return start, int(info["ended_at_ns"])
    if info.get("latency_s") is not None:
        return start, start + int(float(info["latency_s"]) * 1e9)
    return start, start


def _pair_tools(events: list[Any]) -> dict[int, Any]:
    """{index of a tool_call: its tool_result event}, matched by `tool_call_id`, else by order:
    the first unmatched result sent by the tool the call was addressed to."""
    pairs: dict[int, Any] = {}
    used: set[int] = set()
    for i, call in enumerate(events):
        if getattr(call, "kind", None) != "tool_call":
            continue
        cid = call.info.get("tool_call_id")
        for j in range(i + 1, len(events)):
            res = events[j]
            if j in used or getattr(res, "kind", None) != "tool_result":
                continue
            if (cid is not None and res.info.get("tool_call_id") == cid) or (
                    cid is None and res.sender == call.receiver):
                pairs[i] = res
                used.add(j)
                break
    return pairs


@dataclass
class _Run:
    """What the listener keeps per open run."""

    span: Span
    last_ctx: dict[int, SpanContext] = field(default_factory=dict)
    """particle_id -> context of its latest particle-step span."""
    resampled_from: dict[int, tuple[int, SpanContext]] = field(default_factory=dict)
    """offspring particle_id -> (parent particle_id, parent's last particle-step span context)."""
    last_ns: int = 0


class OTelListener(RunListener):
    """Builds spans from `RunStarted` / `StepRecord` / `RunFinished` records (thread-safe).

    The run span opens at `on_run_start` (under whatever span is current, so a user's own span can
    enclose a run) and ends at `on_run_end`; step, particle-step, LLM and tool spans are created and
    ended inside `on_step` with the records' exact times. `close()` ends runs that never finished.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None, *,
                 capture_content: bool = False) -> None:
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        self.capture_content = capture_content
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    # -- RunListener -------------------------------------------------------------------------
    def on_run_start(self, record: RunStarted) -> None:
        config = {f"plp.config.{k}": v for k, v in record.config.items()
                  if isinstance(v, (str, bool, int, float))}
        attrs = {KIND: "CHAIN", "plp.run_id": record.run_id, "plp.policy": record.policy,
                 "plp.program": record.program, "plp.num_particles": record.num_particles,
                 "plp.runtime": record.runtime, **config}
        span = self.tracer.start_span(f"plp.run {record.policy}", attributes=attributes(attrs),
                                      start_time=record.started_at_ns)
        with self._lock:
            self._runs[record.run_id] = _Run(span, last_ns=record.started_at_ns)

    def on_step(self, record: StepRecord) -> None:
        with self._lock:
            run = self._run(record.run_id, record.started_at_ns)
            step_span = self._step_span(run, record)
            parent = trace.set_span_in_context(step_span)
            contexts = [self._particle_span(run, p, parent) for p in record.particles]
            if record.resampled and record.ancestors is not None:
                self._resample(run, record, step_span, contexts)
            step_span.end(end_time=record.ended_at_ns)
            run.last_ns = max(run.last_ns, record.ended_at_ns)

    def on_run_end(self, record: RunFinished) -> None:
        with self._lock:
            run = self._runs.pop(record.run_id, None)
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
        with self._lock:
            runs, self._runs = list(self._runs.values()), {}
        for run in runs:
            run.span.set_status(Status(StatusCode.ERROR, "run did not report its end"))
            run.span.end(end_time=run.last_ns)

    # -- spans ----------------------------------------------------------------------------------
    def _run(self, run_id: str, start_ns: int) -> _Run:
        """The open run `run_id`; a placeholder run span when the listener missed its start."""
        if run_id not in self._runs:
            span = self.tracer.start_span("plp.run", start_time=start_ns,
                                          attributes={KIND: "CHAIN", "plp.run_id": run_id})
            self._runs[run_id] = _Run(span, last_ns=start_ns)
        return self._runs[run_id]

    def _step_span(self, run: _Run, record: StepRecord) -> Span:
        """The step span (ESS and evidence are the population's; counts are of the particles that
        moved in this step: waiting finished particles are not in the record)."""
        died = sum(p.status == "dead" for p in record.particles)
        attrs = {KIND: "CHAIN", "plp.run_id": record.run_id, "plp.step": record.step,
                 "plp.ess": record.ess, "plp.log_evidence": record.log_evidence,
                 "plp.resampled": record.resampled, "plp.num_moved": len(record.particles),
                 "plp.num_died": died, "plp.tokens": record.tokens, "plp.llm_calls": record.llm_calls}
        return self.tracer.start_span(f"plp.step {record.step}", context=trace.set_span_in_context(run.span),
                                      attributes=attributes(attrs), start_time=record.started_at_ns)

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
            attrs["output.value"] = _text(p.value)
        span = self.tracer.start_span(f"plp.particle {p.particle_id}", context=parent, links=links,
                                      attributes=attributes(attrs), start_time=p.started_at_ns)
        self._events(span, p)
        span.end(end_time=p.ended_at_ns)
        run.last_ctx[p.particle_id] = span.get_span_context()
        return span.get_span_context()

    def _links(self, run: _Run, p: ParticleStep) -> tuple[list[Link], int | None]:
        """Links of a particle step: to its resampling parent's last span (first step after the
        resampling), else to its own previous step; and the parent id to record as attribute."""
        origin = run.resampled_from.pop(p.particle_id, None)
        parent_id = p.parent_id if p.parent_id is not None else (origin[0] if origin else None)
        if origin is None and p.parent_id is not None and p.particle_id not in run.last_ctx \
                and p.parent_id in run.last_ctx:
            origin = (p.parent_id, run.last_ctx[p.parent_id])
        if origin is not None:
            return [Link(origin[1], {"plp.link.type": "resampled_from",
                                     "plp.parent_particle_id": origin[0]})], parent_id
        previous = run.last_ctx.get(p.particle_id)
        if previous is not None:
            return [Link(previous, {"plp.link.type": "previous_step"})], parent_id
        return [], parent_id

    def _resample(self, run: _Run, record: StepRecord, span: Span, contexts: list[SpanContext]) -> None:
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

    def _events(self, span: Span, p: ParticleStep) -> None:
        """Child spans (LLM, TOOL) and span events (factor, guarantee, sample, message, error)."""
        parent = trace.set_span_in_context(span)
        events, cursor = list(p.new_events), p.started_at_ns
        pairs = _pair_tools(events)
        paired = {id(result) for result in pairs.values()}
        for i, e in enumerate(events):
            if e.type == "sample" and ("model" in e.info or "backend" in e.info):
                cursor = self._child(f"chat {e.info.get('model', '')}".strip(), SpanKind.CLIENT,
                                     llm_attributes(e, self.capture_content), e.info, cursor, parent)
            elif e.type == "interact" and e.kind in ("tool_call", "tool_result"):
                if id(e) not in paired:
                    cursor = self._tool_span(e, pairs.get(i), cursor, parent)
            else:  # the statement that ended the step happened at its end
                self._span_event(span, e, p.ended_at_ns if i == len(events) - 1 else cursor)
        error = next((e for e in events if e.type == "error"), None)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, redact_text(f"{error.error_type}: {error.message}")))

    def _tool_span(self, e: Any, result: Any | None, cursor: int, parent: Any) -> int:
        """A TOOL span from a tool_call to its result (or for an unpaired call or result)."""
        call = e if e.kind == "tool_call" else None
        result = result if call is not None else e
        start, end = _times(e.info, cursor)
        if call is not None and result is not None:
            end = _times(result.info, start)[1]
        name = f"tool {call.receiver if call is not None else e.sender}"
        return self._child(name, SpanKind.INTERNAL, tool_attributes(call, result, self.capture_content),
                           {"started_at_ns": start, "ended_at_ns": max(start, end)}, cursor, parent)

    def _child(self, name: str, kind: SpanKind, attrs: dict[str, Any], info: Mapping[str, Any],
               cursor: int, parent: Any) -> int:
        """Create and end one child span; returns the new time cursor (its end)."""
        start, end = _times(info, cursor)
        span = self.tracer.start_span(name, context=parent, kind=kind, attributes=attributes(attrs),
                                      start_time=start)
        span.end(end_time=end)
        return end

    def _span_event(self, span: Span, e: Any, at_ns: int) -> None:
        """Events that are not spans of their own become span events on the particle-step span."""
        if e.type == "factor":
            name, attrs = "plp.factor", {"plp.log_potential": e.log_potential,
                                         "plp.shaping": getattr(e, "shaping", None),
                                         "plp.scale": getattr(e, "scale", None)}
        elif e.type == "guarantee":
            name, attrs = "plp.guarantee", {"plp.satisfied": e.satisfied,
                                            "plp.scale": getattr(e, "scale", None)}
            attrs["plp.dead"] = True if not e.satisfied else None
        elif e.type == "sample":
            name, attrs = "plp.sample", {"plp.log_prob": e.log_prob, "plp.target_log_prob": e.target_log_prob,
                                         "plp.dist": e.dist}
            attrs["plp.value"] = _text(e.value) if self.capture_content else None
        elif e.type == "error":
            name, attrs = "exception", {"exception.type": e.error_type, "exception.message": e.message}
        else:
            name, attrs = "plp.interact", {"plp.sender": e.sender, "plp.receiver": e.receiver,
                                           "plp.kind": e.kind}
            attrs["plp.content"] = _text(e.content) if self.capture_content else None
        span.add_event(name, attributes({"plp.site": e.address, **attrs}), timestamp=at_ns)

