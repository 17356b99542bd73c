"""`SpanData`: one finished span as plain data, what every span sink consumes.

`observability.span_plan` turns a run's records into `SpanData` in bulk (a whole step at a time),
with span ids it allocates itself (so parents, links and the LLM-call spans an agent actor joins
are known before any span object exists); a sink then either encodes them straight into OTLP
protobuf (`observability.otlp_wire`, the fast path of `instrument("otlp")`) or replays them
through an OpenTelemetry SDK tracer (`observability.span_sinks.SdkSink`: in-memory and console
exporters, a user's own TracerProvider and its processors).

Conventions (the OTLP ones): ids are ints (trace 128 bits, span 64 bits, never 0), times are Unix
ns, `kind` is the OTLP `SpanKind` number, `status_code` the OTLP `StatusCode` number, attributes
are already sanitised (`observability.otel_attributes.attributes`: str, bool, int, finite float or
homogeneous lists of them, secrets masked).
"""

from __future__ import annotations

from typing import Any

INTERNAL, SERVER, CLIENT = 1, 2, 3
"""OTLP `Span.SpanKind` numbers."""
UNSET, OK, ERROR = 0, 1, 2
"""OTLP `Status.StatusCode` numbers."""

Event = tuple[str, int, dict[str, Any]]
"""(name, time in ns, attributes)."""
LinkData = tuple[int, int, dict[str, Any]]
"""(trace id, span id, attributes)."""


class SpanData:
    """One finished span (see the module docstring)."""

    __slots__ = ("name", "trace_id", "span_id", "parent_id", "parent_remote", "kind", "start_ns", "end_ns",
                 "attributes", "events", "links", "status_code", "status_message")

    def __init__(self, name: str, trace_id: int, span_id: int, parent_id: int | None, start_ns: int, end_ns: int,
                 attributes: dict[str, Any], *, kind: int = INTERNAL, events: list[Event] | None = None,
                 links: list[LinkData] | None = None, status_code: int = UNSET, status_message: str | None = None,
                 parent_remote: bool = False) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.parent_remote = parent_remote
        self.kind = kind
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.attributes = attributes
        self.events = events
        self.links = links
        self.status_code = status_code
        self.status_message = status_message

    def __repr__(self) -> str:
        return f"SpanData({self.name!r}, span_id={self.span_id:016x}, parent={self.parent_id and f'{self.parent_id:016x}'})"


def hex_span_id(span_id: int) -> str:
    """The W3C / Phoenix spelling of a span id: 16 lowercase hex digits."""
    return format(span_id, "016x")
