"""The handlers every particle execution runs under, one job each (docs/theory.md §1.3: what each
statement does to the weight; §3.1: where a particle stops).

Outer to inner on the stack: `Suspend` (synchronisation points), `Meter` (LLM usage), `Weigh` (the
particle's log weight), `Record` (the events of this segment), then the seed, scale, policy and replay
handlers. On the way out a statement meets them inner→outer: it is recorded, then weighed (which may
kill the particle), then metered, then the particle may suspend. They read only the message:

- `Record`  appends the event of every statement that was not replayed to `delta` (the events this
            segment adds to the particle's branch of the global trace), checks that sites are unique,
            numbers `auto_name` sites, and interns large payloads;
- `Weigh`   keeps log w of the execution so far and its current twist, with the rule of
            `swarm.weights`; a statement that sets w to zero ends the execution (`Killed`);
- `Meter`   counts the tokens and LLM calls of generations made in this segment (not replayed ones);
- `Suspend` counts synchronisation points (top-level weighting statements, and the exit of a plate
            that weighted anything) and, at the one it is told to stop at, hands control back to the
            coordinator with the execution kept alive (or, outside a live execution, unwinds it).
"""

from __future__ import annotations

from typing import Any, Callable

import greenlet

from swarm.effects import Handler, Message
from swarm.errors import AsyncInPlainProgramError, DuplicateSiteError
from swarm.handlers import event_from_message
from swarm.randomness import SiteRandom
from swarm.trace import ErrorEvent, factor_event, guarantee_event, sample_event
from swarm.weights import NEG_INF, factor_term, kills_factor, sample_term

_SITE_TYPES = ("sample", "factor", "guarantee")
SUSPENDED = object()
"""What a live execution hands to the coordinator's greenlet when it reaches its stop point."""


class Killed(BaseException):
    """Control signal: the particle's weight became zero; nothing after this point matters."""

    def __init__(self, site: str) -> None:
        super().__init__(site)
        self.site = site


class Suspended(BaseException):
    """Control signal: a non-live execution reached the sync point it was asked to stop at."""


class Record(Handler):
    """Appends an event for every statement of this execution that was not replayed."""

    process_types = frozenset({"name"})
    postprocess_types = frozenset({"sample", "factor", "guarantee", "interact"})

    def __init__(self, intern: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.delta: list[Any] = []
        self.addresses: set[str] = set()
        self.name_counts: dict[str, int] = {}
        self.intern = intern
        self.last_address = "<program start>"

    def process_message(self, msg: Message) -> None:
        if msg.type == "name":  # auto_name: count per (plate-prefixed) base name in this execution
            n = self.name_counts.get(msg.name, 0)
            self.name_counts[msg.name] = n + 1
            msg.value = n

    def postprocess_message(self, msg: Message) -> None:
        kind = msg.type
        if kind in _SITE_TYPES:
            if msg.name in self.addresses:
                raise DuplicateSiteError(
                    f"site {msg.name!r} appears twice in one trace; give every {kind} a distinct name "
                    "(e.g. f'step{t}' inside loops; plates prefix names automatically)")
            self.addresses.add(msg.name)
        self.last_address = msg.name
        if msg.replayed:
            return
        if self.intern is not None and msg.info:
            msg.info = self.intern(msg.info)
        self.delta.append(event_from_message(msg))

    def record_error(self, exc: BaseException) -> ErrorEvent:
        from swarm.errors import redact_text

        message = redact_text(str(exc))[:2000]  # masked before the cut, so no half-key survives
        event = ErrorEvent(address=self.last_address, error_type=type(exc).__name__, message=message)
        self.delta.append(event)
        return event

    def take(self) -> list[Any]:
        """The events recorded since the last call (the segment's delta)."""
        delta, self.delta = self.delta, []
        return delta


class Weigh(Handler):
    """log w of the execution so far (kept incrementally) and its current twist."""

    postprocess_types = frozenset({"sample", "factor", "guarantee"})

    def __init__(self, kill: bool = True) -> None:
        super().__init__()
        self.kill = kill
        self.log_weight = 0.0
        self.twist = 0.0

    def postprocess_message(self, msg: Message) -> None:
        kind = msg.type
        if kind == "sample":
            if msg.target_log_prob is not None:
                self.log_weight += sample_term(msg.log_prob, msg.target_log_prob)
                if msg.target_log_prob == NEG_INF and self.kill:
                    raise Killed(msg.name)
        elif kind == "factor":
            if msg.shaping:
                self.twist = msg.scale * msg.value if msg.value != NEG_INF else NEG_INF
            else:
                self.log_weight += factor_term(msg.value, False, msg.scale)
            if self.kill and kills_factor(msg.value, msg.shaping, msg.scale):
                raise Killed(msg.name)
        elif kind == "guarantee" and not msg.value:
            self.log_weight = NEG_INF
            if self.kill:
                raise Killed(msg.name)


class Meter(Handler):
    """Tokens and LLM calls spent by the generations of this segment (replayed ones cost nothing)."""

    postprocess_types = frozenset({"sample"})

    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0
        self.output_tokens = 0
        self.llm_calls = 0

    def postprocess_message(self, msg: Message) -> None:
        if msg.type == "sample" and not msg.replayed and msg.info:
            usage = msg.info.get("usage")
            if usage:
                self.llm_calls += 1
                out = int(usage.get("output_tokens", 0))
                self.tokens += int(usage.get("input_tokens", 0)) + out
                self.output_tokens += out

    def take(self) -> tuple[int, int, int]:
        """(tokens, LLM calls, output tokens) since the last call."""
        spent = (self.tokens, self.llm_calls, self.output_tokens)
        self.tokens = self.llm_calls = self.output_tokens = 0
        return spent


class Suspend(Handler):
    """Synchronisation points: the k-th top-level weighting statement of a particle is its k-th.

    Statements inside a plate do not suspend one by one: the plate's exit is one sync point when
    anything inside it weighted the particle. A sample carrying an importance correction also makes
    the next sync point pending. `stop_at` None runs to the end."""

    process_types = frozenset({"sample"})
    postprocess_types = frozenset({"sample", "factor", "guarantee", "sync"})

    def __init__(self, program_is_async: bool) -> None:
        super().__init__()
        self.program_is_async = program_is_async
        self.stop_at: int | None = None
        self.sync_count = 0
        self.site: str | None = None
        self.greenlet: greenlet.greenlet | None = None
        """The live execution's greenlet; None for an execution that unwinds at its stop point."""
        self._pending = False

    def process_message(self, msg: Message) -> None:
        if msg.is_async and not self.program_is_async:
            raise AsyncInPlainProgramError(
                f"sample {msg.name!r}: {msg.fn.describe()} is asynchronous (an LLM generation); declare the "
                f"program `async def` and write `await sample({msg.name!r}, ...)`")

    def postprocess_message(self, msg: Message) -> None:
        kind = msg.type
        if kind == "factor" or kind == "guarantee":
            if msg.plates:
                self._pending = True
            else:
                self._sync(msg.name)
        elif kind == "sample":
            if msg.target_log_prob is not None:
                self._pending = True
        elif kind == "sync" and not msg.plates and self._pending:
            self._sync(msg.name)

    def _sync(self, site: str) -> None:
        self._pending = False
        self.sync_count += 1
        self.site = site
        if self.stop_at is not None and self.sync_count >= self.stop_at:
            own = self.greenlet
            if own is not None and greenlet.getcurrent() is own:
                own.parent.switch(SUSPENDED)
            else:  # not live, or reached from a task the program spawned: unwind this execution
                self.greenlet = None
                raise Suspended(site)



class Fused:
    """The engine's handlers fused for the common statements (docs/theory.md §1.3).

    When an execution's stack is exactly the engine's own (no policy handler, no tempering scale,
    no plate scope), a `sample` from a synchronous distribution without a custom proposal, a `factor`
    and a `guarantee` do exactly what the handler stack would do, in one call instead of a message
    through six handlers: replay the recorded value (when the execution is being rebuilt) or draw
    from the seed handler's stream, record the event, weigh it, and suspend at the sync point. Every
    other statement, and every statement under any other stack, goes through the handlers (sharing
    the replay handler's state); the two paths give identical traces and weights
    (tests/test_engine.py runs every exact program both ways)."""

    __slots__ = ("record", "weigh", "suspend", "seeder", "replayer")

    def __init__(self, record: Record, weigh: Weigh, suspend: Suspend, seeder: Any, replayer: Any) -> None:
        self.record, self.weigh, self.suspend, self.seeder, self.replayer = record, weigh, suspend, seeder, replayer

    def _site(self, name: str, kind: str) -> None:
        record = self.record
        if name in record.addresses:
            raise DuplicateSiteError(
                f"site {name!r} appears twice in one trace; give every {kind} a distinct name "
                "(e.g. f'step{t}' inside loops; plates prefix names automatically)")
        record.addresses.add(name)
        record.last_address = name

    def sample(self, name: str, dist: Any) -> Any:
        replayer = self.replayer
        if replayer is not None and replayer.left:
            recorded = replayer.sample(name)
            if recorded is not None:
                self._site(name, "sample")
                target = recorded.target_log_prob
                if target is not None:  # what Weigh and Suspend do with a replayed corrected site
                    self.weigh.log_weight += sample_term(recorded.log_prob, target)
                    self.suspend._pending = True
                return recorded.value
        seeder = self.seeder
        rng = SiteRandom.for_site(seeder.seed, seeder.stream, name)
        value = dist.sample(rng)
        log_prob = float(dist.log_prob(value))
        self._site(name, "sample")
        self.record.delta.append(sample_event(name, value, log_prob, None, dist.describe(), {}))
        return value

    def _replayed(self, kind: str, name: str, value: Any) -> bool:
        replayer = self.replayer
        return replayer is not None and replayer.left != 0 and replayer.weighting(kind, name, value)

    def factor(self, name: str, value: float, shaping: bool) -> None:
        replayed = self._replayed("factor", name, value)
        self._site(name, "factor")
        if not replayed:
            self.record.delta.append(factor_event(name, value, shaping, 1.0))
        weigh = self.weigh
        if shaping:
            weigh.twist = value
        else:
            weigh.log_weight += value
        if value == NEG_INF and weigh.kill:
            raise Killed(name)
        self.suspend._sync(name)

    def guarantee(self, name: str, satisfied: bool) -> None:
        replayed = self._replayed("guarantee", name, satisfied)
        self._site(name, "guarantee")
        if not replayed:
            self.record.delta.append(guarantee_event(name, satisfied))
        if not satisfied:
            self.weigh.log_weight = NEG_INF
            if self.weigh.kill:
                raise Killed(name)
        self.suspend._sync(name)
