"""The hand-written OTLP encoder (observability.otlp_wire) writes what the SDK's encoder writes.

The same planned spans (`SpanData` of the synthetic run of tests/test_otel.py, with content, a dead
particle, links, events, an error status, plus a span of awkward attribute values) go two ways:
our `WireEncoder` -> bytes, and `SdkSink` -> SDK spans -> the SDK's `encode_spans` -> bytes. Both
are decoded with the official protobuf classes (opentelemetry-proto) and compared span by span,
as messages (field order on the wire may differ; protobuf equality does not care).
"""

from __future__ import annotations

import math

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from observability.otel import SCOPE, OTelListener
from observability.otel_attributes import attributes
from observability.otlp_wire import WireEncoder, any_value, request, varint
from observability.span_data import CLIENT, ERROR, SpanData
from observability.span_sinks import SdkSink
from tests.test_otel import replay, synthetic_run

RESOURCE = {"service.name": "plp-swarm", "openinference.project.name": "wire-test"}


class Collect:
    """A TEST DOUBLE sink: keeps the planned spans."""

    def __init__(self) -> None:
        self.ids, self.spans = RandomIdGenerator(), []

    def emit(self, spans) -> None:
        self.spans.extend(spans)

    def flush(self) -> None:
        pass


def awkward_span(trace_id: int) -> SpanData:
    """Attribute values at the edges of the wire format."""
    attrs = attributes({"neg": -5, "big": 2**63 - 1, "most_negative": -(2**63), "zero": 0, "f0": 0.0,
                        "fneg": -1.5e-300, "t": True, "f": False, "empty": "", "unicode": "é ∑ 🐍",
                        "long": "x" * 300, "ints": [1, -2, 3], "floats": [0.5, -0.25], "strs": ["a", "", "ü"],
                        "bools": [True, False], "dead": -math.inf})
    return SpanData("awkward ∑", trace_id, 0xFFFF_FFFF_FFFF_FFFF, 1, 1, 2**63, attrs, kind=CLIENT,
                    events=[("e", 5, {"k": "v"})], links=[(trace_id, 7, {})], status_code=ERROR,
                    status_message="boom ∑", parent_remote=True)


@pytest.fixture(scope="module")
def planned() -> list[SpanData]:
    sink = Collect()
    listener = OTelListener(sink=sink, capture_content=True, background=False)
    replay(synthetic_run(), listener)
    assert len(sink.spans) == 22
    return [*sink.spans, awkward_span(sink.spans[0].trace_id)]


def _decoded(body: bytes) -> tuple[dict, dict, dict]:
    """(resource attributes, scope, {span_id: Span}) of a one-resource, one-scope request."""
    (rs,) = ExportTraceServiceRequest.FromString(body).resource_spans
    (ss,) = rs.scope_spans
    return ({kv.key: kv.value for kv in rs.resource.attributes}, (ss.scope.name, ss.scope.version),
            {s.span_id: s for s in ss.spans})


def test_wire_encoding_equals_the_sdk_encoder(planned):
    encoder = WireEncoder()
    ours = request(encoder.header(RESOURCE, SCOPE), [encoder.span(s) for s in planned])
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource(RESOURCE))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    SdkSink(provider, SCOPE).emit(planned)
    sdk_spans = exporter.get_finished_spans()
    assert len(sdk_spans) == len(planned)
    theirs = encode_spans(sdk_spans).SerializeToString()
    resource_a, scope_a, spans_a = _decoded(ours)
    resource_b, scope_b, spans_b = _decoded(theirs)
    assert resource_a == resource_b and scope_a == scope_b == (SCOPE, "")
    assert spans_a.keys() == spans_b.keys() and len(spans_a) == len(planned)
    for span_id, span in spans_a.items():
        assert span == spans_b[span_id], f"{span.name}:\nours   {span}\ntheirs {spans_b[span_id]}"


def test_encoder_caches_change_nothing(planned):
    """Encoding twice with one encoder (warm caches) gives the same bytes as a fresh encoder."""
    warm = WireEncoder()
    first = [warm.span(s) for s in planned]
    assert [warm.span(s) for s in planned] == first == [WireEncoder().span(s) for s in planned]


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**63 - 1, -1, -(2**63), True, False, 0.0, -2.5, "",
                                   "é", "x" * 200, [1, 2], ["a", "b"], [0.5], []])
def test_any_value_decodes_to_the_value(value):
    decoded = AnyValue.FromString(any_value(value))
    field = decoded.WhichOneof("value")
    if isinstance(value, list):
        assert field == "array_value"
        assert [getattr(v, v.WhichOneof("value")) for v in decoded.array_value.values] == value
    else:
        assert getattr(decoded, field) == value and type(getattr(decoded, field)) is type(value)


def test_varint_and_bad_values():
    assert varint(0) == b"\x00" and varint(127) == b"\x7f" and varint(128) == b"\x80\x01"
    assert varint(2**64 - 1) == b"\xff" * 9 + b"\x01"
    with pytest.raises(TypeError, match="dict"):
        any_value({"a": 1})
