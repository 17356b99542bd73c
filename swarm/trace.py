"""The trace τ of one execution: an ordered list of events, one per primitive statement.

Events are slotted dataclasses (cheap to build in the hot path); the `Trace` pydantic model
validates and serialises them wherever a trace crosses a boundary (trace files, Ray, checkpoints).

The trace's weights (docs/theory.md §1.3, factorised form):

    log π(τ)   = Σ_sample log q_i(τ_i | τ_pa(i))           (`proposal_log_prob`)
    log Φ(τ)   = Σ_target-factor ℓ_f(τ) + Σ_guarantee log 1[c]   (`log_potential`)
    log w(τ)   = log Φ(τ) + Σ_sample (log p_i − log q_i)    (`log_weight`)

The last sum is zero unless a site was drawn from a proposal q other than its distribution p (a
custom proposal, or an LLM sampled at temperature ≠ 1 whose target is the base model).
Shaping factors (twists) are recorded but excluded: they telescope and leave the target unchanged.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Iterator, Literal, Union

from dataclasses import dataclass, field

from pydantic import Field, TypeAdapter

from swarm import weights


def _event(cls):
    """Events are slotted, keyword-only dataclasses: building one costs well under a microsecond
    (a pydantic model costs ~10 µs), and pydantic still validates and serialises them wherever a
    trace crosses a boundary (trace files, Ray, checkpoints) through the `Trace` model below."""
    return dataclass(slots=True, kw_only=True)(cls)


@_event
class SampleEvent:
    """`sample(name, dist)`: a value drawn from the proposal, with its log-probabilities."""

    address: str
    """The site's full address: its name, prefixed by enclosing plates as `plate[i]/name`."""
    value: Any
    log_prob: float
    """log q(value): the log-probability under the distribution the value was actually drawn from."""
    target_log_prob: float | None = None
    """log p(value) under the site's model distribution when it differs from the proposal; None
    when the value was drawn from the model itself (the weight then does not change)."""
    dist: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    """Backend metadata for generations: tokens, per-token log-probs, usage, latency, model."""
    type: Literal["sample"] = "sample"

    @property
    def log_weight_increment(self) -> float:
        """log p − log q: the importance correction this site adds to the trace weight."""
        if self.target_log_prob is None:
            return 0.0
        return self.target_log_prob - self.log_prob


@_event
class FactorEvent:
    """`factor(name, ℓ)`: a log-potential. Target factors define p; shaping factors only guide."""

    address: str
    log_potential: float
    shaping: bool = False
    scale: float = 1.0
    """Multiplier applied by a `scale`/temper handler (β in π·Φ^β); the weight gains scale·ℓ."""
    type: Literal["factor"] = "factor"


@_event
class GuaranteeEvent:
    """`guarantee(name, condition)`: a hard constraint, Φ ∈ {0, 1}."""

    address: str
    satisfied: bool
    type: Literal["guarantee"] = "guarantee"

    @property
    def log_potential(self) -> float:
        return 0.0 if self.satisfied else -math.inf


@_event
class InteractEvent:
    """`interact(sender, receiver, content)`: a message between agents, or a tool/environment step."""

    address: str
    sender: str
    receiver: str
    content: Any = None
    kind: str = "message"
    """"message", "tool_call", "tool_result", "observation", …"""
    info: dict[str, Any] = field(default_factory=dict)
    type: Literal["interact"] = "interact"


@_event
class ErrorEvent:
    """The program raised: the particle dies and the exception is kept here."""

    address: str
    error_type: str
    message: str
    type: Literal["error"] = "error"


_new = object.__new__


def sample_event(address: str, value: Any, log_prob: float, target_log_prob: float | None, dist: str,
                 info: dict[str, Any]) -> SampleEvent:
    """A `SampleEvent` built without keyword arguments (the engine's hot path; ~3x faster)."""
    event = _new(SampleEvent)
    event.address, event.value, event.log_prob, event.target_log_prob = address, value, log_prob, target_log_prob
    event.dist, event.info, event.type = dist, info, "sample"
    return event


def factor_event(address: str, log_potential: float, shaping: bool, scale: float) -> FactorEvent:
    event = _new(FactorEvent)
    event.address, event.log_potential, event.shaping, event.scale, event.type = \
        address, log_potential, shaping, scale, "factor"
    return event


def guarantee_event(address: str, satisfied: bool) -> GuaranteeEvent:
    event = _new(GuaranteeEvent)
    event.address, event.satisfied, event.type = address, satisfied, "guarantee"
    return event


Event = Annotated[
    Union[SampleEvent, FactorEvent, GuaranteeEvent, InteractEvent, ErrorEvent],
    Field(discriminator="type"),
]
WEIGHTING_TYPES = ("factor", "guarantee")


@dataclass(slots=True)
class Trace:
    """The events of one execution, in program order.

    A slotted dataclass (a snapshot costs a list copy); pydantic validates and serialises it inside
    any model that holds it, or directly through `TRACE_ADAPTER`.
    """

    events: list[Event] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, address: str) -> Any:
        for event in self.events:
            if event.address == address:
                return event
        raise KeyError(f"no site {address!r} in this trace")

    def __contains__(self, address: object) -> bool:
        return any(event.address == address for event in self.events)

    def samples(self) -> dict[str, Any]:
        """{address: value} for every sample site."""
        return {e.address: e.value for e in self.events if e.type == "sample"}

    def of_type(self, type_: str) -> list[Any]:
        return [e for e in self.events if e.type == type_]

    @property
    def proposal_log_prob(self) -> float:
        """log π(τ): the sum of the log-probabilities of every sampled value under its proposal."""
        return math.fsum(e.log_prob for e in self.events if e.type == "sample")

    @property
    def log_potential(self) -> float:
        """log Φ(τ): target factors plus guarantees (shaping factors excluded), each scaled."""
        return weights.log_potential(self.events)

    @property
    def log_weight(self) -> float:
        """log w(τ) = log Φ(τ) + Σ (log p − log q): the importance weight against the proposal."""
        return weights.log_weight(self.events)

    @property
    def error(self) -> ErrorEvent | None:
        for e in self.events:
            if e.type == "error":
                return e
        return None

    def killed_by(self) -> str | None:
        """The address of the first statement that set this trace's weight to zero, if any."""
        for e in self.events:
            if weights.event_kills(e):
                return e.address
            if e.type == "error":
                return f"{e.address} raised {e.error_type}"
        return None


class LazyTrace(Trace):
    """A `Trace` whose events are built the first time they are read (`_materialise`), so a large
    population's traces cost nothing until looked at. Pickles as a plain `Trace`."""

    __slots__ = ("_events",)

    def __init__(self) -> None:
        self._events: list[Any] | None = None

    def _materialise(self) -> list[Any]:
        raise NotImplementedError

    @property  # type: ignore[override]
    def events(self) -> list[Any]:
        if self._events is None:
            self._events = self._materialise()
        return self._events

    @events.setter
    def events(self, value: list[Any]) -> None:
        self._events = value

    def __reduce__(self) -> tuple:
        return (Trace, (self.events,))

    def __repr__(self) -> str:
        return f"Trace(events={self.events!r})"


TRACE_ADAPTER: TypeAdapter[Trace] = TypeAdapter(Trace)
"""`TRACE_ADAPTER.dump_json(trace)` / `TRACE_ADAPTER.validate_json(text)` for a trace on its own."""
