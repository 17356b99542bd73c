"""OTLP protobuf encoding of `SpanData`, written directly in the protobuf wire format.

Why not the SDK's encoder: `opentelemetry-exporter-otlp-proto-common`'s `encode_spans` builds a
protobuf object per span, attribute, value, event and link (about 130 µs for a particle-step span
on the 2-core test machine, more than the SDK spends building the span itself), and an SMC step
of a few hundred particles ends a few hundred such spans at once. The wire format of the few
messages a span needs is small and stable (opentelemetry-proto `trace/v1`, `common/v1`,
`collector/trace/v1`), so this module writes the bytes itself, caching what repeats (the encoded
attribute keys, string and bool attributes such as `plp.status`/`plp.site`, the per-key prefix of
float attributes): ~10x cheaper per span (bench/otel_overhead.py). What it writes is exactly what
the SDK's encoder writes for the same span: `tests/test_otlp_wire.py` decodes both with the
official protobuf classes and compares them message by message.

Field numbers (opentelemetry-proto v1):

    ExportTraceServiceRequest  1 resource_spans
    ResourceSpans              1 resource, 2 scope_spans          Resource   1 attributes
    ScopeSpans                 1 scope, 2 spans                   Scope      1 name, 2 version
    Span   1 trace_id, 2 span_id, 3 trace_state, 4 parent_span_id, 5 name, 6 kind, 7 start (fixed64),
           8 end (fixed64), 9 attributes, 11 events, 13 links, 15 status, 16 flags (fixed32)
    Event  1 time (fixed64), 2 name, 3 attributes
    Link   1 trace_id, 2 span_id, 4 attributes, 6 flags (fixed32)
    Status 2 message, 3 code              KeyValue 1 key, 2 value           ArrayValue 1 values
    AnyValue (oneof) 1 string, 2 bool, 3 int (int64 varint), 4 double (fixed64), 5 array
"""

from __future__ import annotations

import struct
from typing import Any, Iterable

from observability.span_data import SpanData

_SMALL = [bytes((i,)) for i in range(128)]
_MASK64 = (1 << 64) - 1
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
"""`SpanFlags`: the SDK's encoder marks every span and link as knowing whether its parent is remote."""
_pack_q, _pack_d, _pack_i = struct.Struct("<Q").pack, struct.Struct("<d").pack, struct.Struct("<I").pack
_FLAGS_LOCAL = b"\x85\x01" + _pack_i(_HAS_IS_REMOTE)
_FLAGS_REMOTE = b"\x85\x01" + _pack_i(_HAS_IS_REMOTE | _IS_REMOTE)
_LINK_FLAGS = b"\x35" + _pack_i(_HAS_IS_REMOTE)
_STATUS_UNSET = b"\x7a\x00"
_CACHE_LIMIT = 16_384


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (< 2**64)."""
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 128 else varint(n)) + payload


def _text(tag: bytes, value: str) -> bytes:
    return _field(tag, value.encode("utf-8", "surrogatepass"))


def any_value(value: Any) -> bytes:
    """An `AnyValue` message (str, bool, int, float or a list of them)."""
    cls = type(value)
    if cls is str:
        return _text(b"\x0a", value)
    if cls is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if cls is int:
        return b"\x18" + varint(value & _MASK64)
    if cls is float:
        return b"\x21" + _pack_d(value)
    if isinstance(value, (list, tuple)):
        return _field(b"\x2a", b"".join(_field(b"\x0a", any_value(v)) for v in value))
    if isinstance(value, bool):   # subclasses, after the exact-type fast paths
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(int(value) & _MASK64)
    if isinstance(value, float):
        return b"\x21" + _pack_d(float(value))
    if isinstance(value, str):
        return _text(b"\x0a", str(value))
    raise TypeError(f"OTLP attribute value of type {cls.__name__} cannot be encoded: {value!r}")


class WireEncoder:
    """Encodes spans into OTLP protobuf bytes; keeps caches of what repeats (not thread-safe: one
    encoder per sink, used by one thread at a time)."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._constants: dict[tuple[bytes, str, Any], bytes] = {}
        self._double_prefix: dict[tuple[bytes, str], bytes] = {}

    # -- attributes -----------------------------------------------------------------------------
    def _key(self, key: str) -> bytes:
        encoded = self._keys.get(key)
        if encoded is None:
            encoded = self._keys[key] = _text(b"\x0a", key)
        return encoded

    def key_value(self, key: str, value: Any) -> bytes:
        """A `KeyValue` message (unwrapped)."""
        return self._key(key) + _field(b"\x12", any_value(value))

    def attributes(self, tag: bytes, attrs: dict[str, Any], out: list[bytes]) -> None:
        """Append each attribute as a field `tag` (9 in a span, 3 in an event, 4 in a link). The
        encoded field is cached for str, bool and tuple values (statuses, sites, lineages repeat),
        its prefix for floats (the key's bytes and the value's tag)."""
        constants, prefixes = self._constants, self._double_prefix
        for key, value in attrs.items():
            cls = type(value)
            if cls is float:
                prefix = prefixes.get((tag, key))
                if prefix is None:
                    encoded_key = self._key(key)
                    prefix = prefixes[(tag, key)] = tag + varint(len(encoded_key) + 11) + encoded_key + b"\x12\x09\x21"
                out.append(prefix + _pack_d(value))
            elif cls is str or cls is bool or cls is tuple:   # tuples: lineages (ints), never mixed types
                cached = constants.get((tag, key, value))
                if cached is None:
                    cached = _field(tag, self.key_value(key, value))
                    if len(constants) >= _CACHE_LIMIT:
                        constants.clear()
                    constants[(tag, key, value)] = cached
                out.append(cached)
            elif cls is int:
                encoded_key = self._keys.get(key) or self._key(key)
                number = b"\x18" + varint(value & _MASK64)
                kv = encoded_key + b"\x12" + _SMALL[len(number)] + number
                out.append(tag + (_SMALL[len(kv)] if len(kv) < 128 else varint(len(kv))) + kv)
            else:
                out.append(_field(tag, self.key_value(key, value)))

    # -- spans ----------------------------------------------------------------------------------
    def span(self, s: SpanData) -> bytes:
        """One `Span` message (unwrapped)."""
        out = [b"\x0a\x10" + s.trace_id.to_bytes(16, "big"), b"\x12\x08" + s.span_id.to_bytes(8, "big")]
        if s.parent_id is not None:
            out.append(b"\x22\x08" + s.parent_id.to_bytes(8, "big"))
        out.append(_text(b"\x2a", s.name))
        out.append(b"\x30" + _SMALL[s.kind])
        out.append(b"\x39" + _pack_q(s.start_ns) + b"\x41" + _pack_q(s.end_ns))
        self.attributes(b"\x4a", s.attributes, out)
        if s.events:
            for name, at_ns, attrs in s.events:
                inner = [b"\x09" + _pack_q(at_ns), _text(b"\x12", name)]
                self.attributes(b"\x1a", attrs, inner)
                out.append(_field(b"\x5a", b"".join(inner)))
        if s.links:
            for trace_id, span_id, attrs in s.links:
                inner = [b"\x0a\x10" + trace_id.to_bytes(16, "big"), b"\x12\x08" + span_id.to_bytes(8, "big")]
                self.attributes(b"\x22", attrs, inner)
                inner.append(_LINK_FLAGS)
                out.append(_field(b"\x6a", b"".join(inner)))
        if s.status_code or s.status_message:
            status = (_text(b"\x12", s.status_message) if s.status_message else b"") + (
                b"\x18" + _SMALL[s.status_code] if s.status_code else b"")
            out.append(_field(b"\x7a", status))
        else:
            out.append(_STATUS_UNSET)
        out.append(_FLAGS_REMOTE if s.parent_remote else _FLAGS_LOCAL)
        return b"".join(out)

    def header(self, resource: dict[str, Any], scope_name: str) -> tuple[bytes, bytes]:
        """(encoded `Resource`, encoded `InstrumentationScope`), to pass to `request`."""
        attrs: list[bytes] = []
        self.attributes(b"\x0a", resource, attrs)
        return b"".join(attrs), _text(b"\x0a", scope_name)


def request(header: tuple[bytes, bytes], spans: Iterable[bytes]) -> bytes:
    """An `ExportTraceServiceRequest` with one resource and one scope holding `spans` (encoded by
    `WireEncoder.span`)."""
    resource, scope = header
    scope_spans = _field(b"\x0a", scope) + b"".join(_field(b"\x12", s) for s in spans)
    resource_spans = _field(b"\x0a", resource) + _field(b"\x12", scope_spans)
    return _field(b"\x0a", resource_spans)
