"""Effect handlers: each a few lines, composed by policies (and by users) as context managers.

    with seed(0), trace() as tr:       # record what a forward run did
        model()
    with replay(tr.trace):             # re-run it with the same sampled values
        model()

- `trace`       records every statement as an event of a `Trace` (duplicate addresses are an error);
- `replay`      feeds recorded sample values back (no distribution, and no LLM, is called) and checks
                that re-executed weighting statements agree with the record (else NondeterminismError);
- `condition`   fixes sample sites to observed values: the site's weight gains log p(value);
- `substitute`  fixes sample sites to given values without weighting (an intervention);
- `block`       hides sites from the handlers outside it;
- `scale`       multiplies target log-potentials by β (tempering: Φ^β);
- `seed`        gives each sample site its own random stream from (seed, stream, address).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

from swarm.errors import DuplicateSiteError, NondeterminismError, redact_text
from swarm.randomness import SiteRandom
from swarm.effects import UNSET, Handler, Message
from swarm.trace import ErrorEvent, InteractEvent, Trace, factor_event, guarantee_event, sample_event

__all__ = ["trace", "replay", "condition", "substitute", "block", "scale", "seed", "event_from_message"]

_SITE_TYPES = ("sample", "factor", "guarantee")


def event_from_message(msg: Message) -> Any:
    """Build the trace event of a processed message (built without re-validation: the primitives
    validated the values already)."""
    kind = msg.type
    if kind == "sample":
        target = msg.target_log_prob
        return sample_event(msg.name, msg.value, float(msg.log_prob), None if target is None else float(target),
                            msg.fn.describe(), msg.info or {})
    if kind == "factor":
        return factor_event(msg.name, msg.value, msg.shaping, msg.scale)
    if kind == "guarantee":
        return guarantee_event(msg.name, msg.value)
    if msg.type == "interact":
        a = msg.args or {}
        return InteractEvent(address=msg.name, sender=a["sender"], receiver=a["receiver"],
                             content=msg.value, kind=a["kind"], info=a["info"])
    raise ValueError(f"no event for message type {msg.type!r}")


class trace(Handler):
    """Record every statement that reaches this handler as an event of `self.trace`."""

    def __init__(self) -> None:
        super().__init__()
        self.trace = Trace([])
        self._addresses: set[str] = set()
        self._name_counts: dict[str, int] = {}

    def process_message(self, msg: Message) -> None:
        if msg.type == "name":  # auto_name: count per (plate-prefixed) base name in this execution
            n = self._name_counts.get(msg.name, 0)
            self._name_counts[msg.name] = n + 1
            msg.value = n

    def postprocess_message(self, msg: Message) -> None:
        if msg.type == "sync" or msg.type == "name":
            return
        if msg.type in _SITE_TYPES:
            if msg.name in self._addresses:
                raise DuplicateSiteError(
                    f"site {msg.name!r} appears twice in one trace; give every {msg.type} a distinct name "
                    "(e.g. f'step{t}' inside loops; plates prefix names automatically)")
            self._addresses.add(msg.name)
        self.trace.events.append(event_from_message(msg))

    def record_error(self, address: str, exc: BaseException) -> None:
        message = redact_text(str(exc))[:2000]  # masked before the cut, so no half-key survives
        self.trace.events.append(ErrorEvent(address=address, error_type=type(exc).__name__, message=message))


class replay(Handler):
    """Feed the sample values of a recorded trace back into a re-execution.

    Replayed sites keep their recorded log-probabilities and metadata (an LLM is not called again).
    Every statement of the record that is met again is marked `replayed` (it happened before and is
    neither recorded nor charged again by the engine); `done` becomes true once every recorded event
    has been met, after which the execution runs live. Weighting statements met again must reproduce
    their recorded values: a program whose control flow or potentials changed under replay is not
    deterministic given its samples, and resampled offspring would silently diverge from their
    ancestor, so that raises NondeterminismError.
    """

    def __init__(self, recorded: Trace | Iterable[Any]) -> None:
        super().__init__()
        events = recorded.events if isinstance(recorded, Trace) else list(recorded)
        self._events = {e.address: e for e in events if e.type in _SITE_TYPES}
        self._unvisited = {a for a, e in self._events.items() if e.type == "sample"}
        self._weighting = [a for a, e in self._events.items() if e.type != "sample"]
        """Recorded weighting statements in program order; a recorded prefix ends at one (a sync
        point), so until the last of them is met again no site may appear that the record lacks."""
        self._weighting_left = set(self._weighting)
        self._interacts: dict[str, int] = {}
        for e in events:
            if e.type == "interact":
                self._interacts[e.address] = self._interacts.get(e.address, 0) + 1
        self.left = sum(1 for e in events if e.type != "error")
        """Recorded events not met again yet (0: the replay is over and the execution is live)."""

    @property
    def done(self) -> bool:
        return self.left == 0

    def process_message(self, msg: Message) -> None:
        if self.left == 0 or msg.type == "sync" or msg.type == "name":
            return
        if msg.type == "interact":
            msg.replayed = self.interact(msg.name)
            return
        if msg.type == "sample":
            recorded = self.sample(msg.name)
            if recorded is not None:
                msg.value = recorded.value
                msg.log_prob = recorded.log_prob
                msg.target_log_prob = recorded.target_log_prob
                msg.info = recorded.info
                msg.replayed = True
        elif msg.type in ("factor", "guarantee"):
            msg.replayed = self.weighting(msg.type, msg.name, msg.value)

    # -- the checks, shared with the fused engine path (`swarm.engine.Fused`) ----------------------
    def interact(self, name: str) -> bool:
        """Whether an interact statement is one of the record's (then it is replayed)."""
        count = self._interacts.get(name, 0)
        if count:
            self._interacts[name] = count - 1
            self.left -= 1
            return True
        return False

    def sample(self, name: str) -> Any:
        """The recorded sample event at `name` (None: the site is new, drawn live)."""
        recorded = self._events.get(name)
        if recorded is None:
            if self._weighting_left:
                self._new_site("sample", name)
            return None
        if recorded.type != "sample":
            raise NondeterminismError(f"replay: site {name!r} was a {recorded.type}, now it is a sample")
        if name in self._unvisited:
            self._unvisited.discard(name)
            self.left -= 1
        return recorded

    def weighting(self, kind: str, name: str, value: Any) -> bool:
        """Check a factor (value = its log-potential) or guarantee (value = satisfied) against the
        record; True when it is the record's (replayed), False when it is new (live)."""
        recorded = self._events.get(name)
        if recorded is None:
            if self._weighting_left:
                self._new_site(kind, name)
            return False
        if kind == "factor" and (recorded.type != "factor" or not _same_float(recorded.log_potential, value)):
            raise NondeterminismError(
                f"replay: factor {name!r} now gives {value!r}, the recorded trace has "
                f"{getattr(recorded, 'log_potential', recorded.type)!r}; the program is not deterministic "
                "given its sampled values (route every random or external effect through sample/interact)")
        if kind == "guarantee" and (recorded.type != "guarantee" or recorded.satisfied != value):
            raise NondeterminismError(
                f"replay: guarantee {name!r} now evaluates to {value!r}, the recorded trace has "
                f"{getattr(recorded, 'satisfied', recorded.type)!r}; the program is not deterministic given its samples")
        if name in self._weighting_left:
            self._weighting_left.discard(name)
            self.left -= 1
        return True

    def _new_site(self, kind: str, name: str) -> None:
        """A site the record lacks, met before the record's last weighting statement: the replayed
        execution took another path than the recorded one."""
        expected = next(a for a in self._weighting if a in self._weighting_left)
        raise NondeterminismError(
            f"replay: {kind} site {name!r} is not in the recorded trace, which reaches "
            f"{expected!r} before any new site; the program's control flow is not deterministic given "
            "its sampled values (route every random or external effect through sample/interact)")

    def check_consumed(self) -> None:
        """Every recorded sample must have been met again; otherwise control flow diverged."""
        if self._unvisited:
            missing = sorted(self._unvisited)[0]
            raise NondeterminismError(
                f"replay: recorded sample site {missing!r} was never reached again; the program's control "
                "flow is not deterministic given its sampled values")


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12))


class substitute(Handler):
    """Intervene on sample sites: fix their values without weighting the trace."""

    process_types = frozenset({"sample"})

    def __init__(self, data: Mapping[str, Any]) -> None:
        super().__init__()
        self.data = dict(data)

    def process_message(self, msg: Message) -> None:
        if msg.type == "sample" and msg.name in self.data and msg.value is UNSET:
            msg.value = self.data[msg.name]
            msg.log_prob = 0.0  # the proposal is a point mass at the given value
            self._weigh(msg)

    def _weigh(self, msg: Message) -> None:
        """An intervention leaves the target alone: do(x = v) is not evidence."""


class condition(substitute):
    """Observe sample sites: `condition({"x": 3})` fixes x = 3 and weights the trace by log p(3)."""

    def _weigh(self, msg: Message) -> None:
        msg.target_log_prob = msg.fn.log_prob(msg.value)


class block(Handler):
    """Hide statements from every handler outside this one (all, or those `hide_fn` selects)."""

    def __init__(self, hide: Iterable[str] | None = None, hide_fn: Callable[[Message], bool] | None = None) -> None:
        super().__init__()
        names = set(hide) if hide is not None else None
        self.hide_fn = hide_fn or (lambda msg: names is None or msg.name in names)

    def process_message(self, msg: Message) -> None:
        if self.hide_fn(msg):
            msg.stop = True


class scale(Handler):
    """Multiply target log-potentials by `beta`: the program then targets π·Φ^β (tempering).

    Guarantees are hard constraints and hold at every temperature: they are not scaled.
    """

    process_types = frozenset({"factor"})

    def __init__(self, beta: float) -> None:
        super().__init__()
        beta = float(beta)
        if not math.isfinite(beta) or beta < 0:
            raise ValueError(f"scale: beta must be a finite non-negative number, got {beta!r}")
        self.beta = beta

    def process_message(self, msg: Message) -> None:
        if msg.type == "factor" and not msg.shaping:
            msg.scale *= self.beta


class seed(Handler):
    """Give every sample site a random stream derived from (seed, stream, site address)."""

    process_types = frozenset({"sample"})

    def __init__(self, seed: int | None, stream: int | str = 0) -> None:
        super().__init__()
        self.seed = seed
        self.stream = stream

    def process_message(self, msg: Message) -> None:
        if msg.type == "sample" and msg.rng is None and msg.value is UNSET:
            msg.rng = SiteRandom.for_site(self.seed, self.stream, msg.name)
