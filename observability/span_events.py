"""What happened inside one particle step, as spans and span events: `ParticleStepContents`.

For the `plp.particle` span of a `ParticleStep` (see observability.span_plan):

- a `SampleEvent` whose `info` carries LLM metadata (`model` or `backend`) becomes a child span
  `chat <model>` [LLM, kind CLIENT]. Its span id is the one the call carried to its agent actor
  when there was one (`info["served_by"]["parent_span_id"]`, same trace: see
  `agents.agent_actor.trace_carrier`), so the actor's own span nests under it; else a new id;
- a `tool_call` `InteractEvent` (paired with its `tool_result`) becomes a child span `tool <name>`
  [TOOL];
- factors, guarantees, other samples and messages, and errors become span events (`plp.factor`,
  `plp.guarantee`, `plp.sample`, `plp.interact`, `exception`) on the particle span; an error sets
  its status to ERROR.

An event without times is placed, with zero duration, after the previous timed event of its step
(the last event, the weighting statement that ended the step, at the step's end).
"""

from __future__ import annotations

from typing import Any, Callable

from observability.otel_attributes import attributes, event_times, llm_attributes, pair_tools, text, tool_attributes
from observability.span_data import CLIENT, ERROR, INTERNAL, SpanData
from swarm.errors import redact_text
from swarm.listeners import ParticleStep


class ParticleStepContents:
    """Builds the child spans and span events of particle-step spans (one instance per planner)."""

    def __init__(self, new_span_id: Callable[[], int], capture_content: bool) -> None:
        self.new_span_id = new_span_id
        self.capture_content = capture_content

    def fill(self, span: SpanData, p: ParticleStep, out: list[SpanData]) -> None:
        """Add `p.new_events` to `span` (events, status) and their child spans to `out`."""
        events, cursor, last = p.new_events, p.started_at_ns, len(p.new_events) - 1
        pairs: dict[int, Any] | None = None
        paired: set[int] = set()
        error = None
        span_events = span.events = []
        for i, e in enumerate(events):
            kind = e.type
            if kind == "sample" and ("model" in e.info or "backend" in e.info):
                cursor = self._llm_span(span, e, cursor, out)
            elif kind == "interact" and e.kind in ("tool_call", "tool_result"):
                if pairs is None:
                    pairs = pair_tools(events)
                    paired = {id(result) for result in pairs.values()}
                if id(e) not in paired:
                    cursor = self._tool_span(span, e, pairs.get(i), cursor, out)
            else:  # the statement that ended the step happened at its end
                span_events.append(self._span_event(e, p.ended_at_ns if i == last else cursor))
                if kind == "error" and error is None:
                    error = e
        if error is not None:
            span.status_code = ERROR
            span.status_message = redact_text(f"{error.error_type}: {error.message}")

    def _llm_span(self, parent: SpanData, e: Any, cursor: int, out: list[SpanData]) -> int:
        start, end = event_times(e.info, cursor)
        model = e.info.get("model")
        name = f"chat {model}" if model else "chat"
        span = SpanData(name, parent.trace_id, self._call_span_id(parent.trace_id, e.info), parent.span_id,
                        start, end, attributes(llm_attributes(e, self.capture_content)), kind=CLIENT)
        out.append(span)
        return end

    def _call_span_id(self, trace_id: int, info: dict[str, Any]) -> int:
        """The span id the call's agent actor was told about (same trace only: a response replayed
        from another run's journal carries that run's ids), else a new one."""
        served = info.get("served_by")
        if served:
            traceparent = served.get("parent_span_id"), served.get("trace_id")
            if traceparent[0] and traceparent[1] == format(trace_id, "032x"):
                try:
                    return int(traceparent[0], 16) or self.new_span_id()
                except (TypeError, ValueError):
                    pass
        return self.new_span_id()

    def _tool_span(self, parent: SpanData, e: Any, result: Any | None, cursor: int, out: list[SpanData]) -> int:
        """A TOOL span from a tool_call to its result (or for an unpaired call or result)."""
        call = e if e.kind == "tool_call" else None
        result = result if call is not None else e
        start, end = event_times(e.info, cursor)
        if call is not None and result is not None:
            end = event_times(result.info, start)[1]
        end = max(start, end)
        name = f"tool {call.receiver if call is not None else e.sender}"
        out.append(SpanData(name, parent.trace_id, self.new_span_id(), parent.span_id, start, end,
                            attributes(tool_attributes(call, result, self.capture_content)), kind=INTERNAL))
        return end

    def _span_event(self, e: Any, at_ns: int) -> tuple[str, int, dict[str, Any]]:
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
        return name, at_ns, attributes(attrs)
