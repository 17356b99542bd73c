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

import hashlib
from typing import Any, Callable

import greenlet

from swarm.effects import Handler, Message, unawaited_samples
from swarm.errors import AsyncInPlainProgramError, DuplicateSiteError, InvalidDistributionError, UnawaitedSampleError
from swarm.handlers import _same_float, event_from_message, replay
from swarm.distributions import FINITE_INVERSE_CDF
from swarm.randomness import _TWO_POW_53, SiteRandom

_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes
from swarm.trace import ErrorEvent, factor_event, guarantee_event, sample_event
from swarm.weights import NEG_INF, factor_term, kills_factor, sample_term

_SITE_TYPES = ("sample", "factor", "guarantee")
_WEIGHTING_TYPES = ("factor", "guarantee")
SUSPENDED = object()
"""What a live execution hands to the coordinator's greenlet when it reaches its stop point."""


def at_site(name: str, exc: InvalidDistributionError) -> InvalidDistributionError:
    """A distribution's error found while drawing, with the site named."""
    text = str(exc)
    prefix = f"sample {name!r}: "
    return exc if text.startswith(prefix) else InvalidDistributionError(prefix + text)


def raise_async_in_plain_program(name: str, dist: Any) -> None:
    raise AsyncInPlainProgramError(
        f"sample {name!r}: {dist.describe()} is asynchronous (an LLM generation); declare the "
        f"program `async def` and write `await sample({name!r}, ...)`")


def check_awaited(waiting: dict[object, tuple[str, tuple[Any, ...], str]]) -> None:
    """Raise `UnawaitedSampleError` naming the sites whose sample (or `ask_human`) the program never
    awaited (`text = sample(...)` without `await`: the generation never ran and `text` is a
    coroutine); `waiting` is the execution's `unawaited_samples()` when its program returned, each
    entry (site, the coroutines to close, the call: "sample" or "ask_human")."""
    if waiting:
        entries = list(waiting.values())
        waiting.clear()
        for _, coroutines, _ in entries:
            for coroutine in coroutines:  # never started: closing them is all (no "never awaited" warning)
                coroutine.close()
        call = entries[0][2]
        names = sorted({site for site, _, kind in entries if kind == call})
        what = "nobody was asked" if call == "ask_human" else "the generation never ran"
        raise UnawaitedSampleError(
            f"{call} {', '.join(map(repr, names))}: the awaitable `{call}` returned was never awaited, so {what} "
            f"(the program got a coroutine object instead of its value); write `await {call}({names[0]!r}, ...)`")


def _duplicate(name: str, kind: str) -> DuplicateSiteError:
    return DuplicateSiteError(
        f"site {name!r} appears twice in one trace; give every {kind} a distinct name "
        "(e.g. f'step{t}' inside loops; plates prefix names automatically)")


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
                raise _duplicate(msg.name, kind)
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
            raise_async_in_plain_program(msg.name, msg.fn)

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



_ANY_VALUE = object()


def _same_weighting(event: Any, kind: str, value: Any) -> bool:
    """Whether a recorded factor or guarantee carries `value` (a factor's −inf and NaN included)."""
    if kind == "guarantee":
        return event.satisfied == value
    return event.log_potential == value or _same_float(event.log_potential, value)


class Replay(replay):
    """The replay handler of an execution rebuilt from its recorded prefix, positional first.

    A replayed program meets its recorded statements again in the recorded order (a plain program
    always does; an async one unless it ran statements concurrently), so each one is matched against
    the next recorded event by address and kind in O(1), and the record is never indexed. The first
    statement that does not match the next event (concurrent statements met in another order, or a
    program whose control flow changed) switches to `replay`'s address-indexed matching for the rest,
    built then from the events not met yet, which also produces its errors (NondeterminismError).
    The outcome is the same either way; building a replay costs O(1) instead of five passes over the
    prefix, which is what the second and later offspring of every resampled parent pay."""

    def __init__(self, recorded: list[Any]) -> None:
        Handler.__init__(self)
        self.recorded = recorded
        self.position = 0
        """The index in `recorded` of the next statement expected (positional mode)."""
        self.indexed = False
        """Whether the address-indexed matching took over."""
        self.left = len(recorded) - (recorded[-1].type == "error" if recorded else 0)
        """Recorded events not met again yet: every one but an error, which can only end a trace."""

    def _index(self) -> None:
        """Switch to address-indexed matching: every event is known by address, the ones from the
        current position on are still to be met."""
        events, pending = self.recorded, self.recorded[self.position:]
        self._events = {e.address: e for e in events if e.type in _SITE_TYPES}
        self._unvisited = {e.address for e in pending if e.type == "sample"}
        self._weighting = [e.address for e in events if e.type in _WEIGHTING_TYPES]
        self._weighting_left = {e.address for e in pending if e.type in _WEIGHTING_TYPES}
        self._interacts = {}
        for e in pending:
            if e.type == "interact":
                self._interacts[e.address] = self._interacts.get(e.address, 0) + 1
        self.indexed = True

    def _take(self, name: str, kind: str, value: Any = _ANY_VALUE) -> Any:
        """Positional matching: consume and return the next recorded event when it is a `kind` at
        `name` (and, for a factor or guarantee, recorded with `value`); otherwise switch to
        address-indexed matching for the rest of the replay and return None."""
        position = self.position
        if position < len(self.recorded):
            event = self.recorded[position]
            if event.address == name and event.type == kind and (value is _ANY_VALUE or _same_weighting(event, kind, value)):
                self.position = position + 1
                self.left -= 1
                return event
        self._index()
        return None

    def interact(self, name: str) -> bool:
        if not self.indexed and self._take(name, "interact") is not None:
            return True
        return replay.interact(self, name)

    def sample(self, name: str) -> Any:
        if not self.indexed:
            event = self._take(name, "sample")
            if event is not None:
                return event
        return replay.sample(self, name)

    def weighting(self, kind: str, name: str, value: Any) -> bool:
        if not self.indexed and self._take(name, kind, value) is not None:
            return True
        return replay.weighting(self, kind, name, value)

    def check_consumed(self) -> None:
        if not self.indexed:
            if not self.left:  # every recorded event was met, in order
                return
            self._index()
        replay.check_consumed(self)


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

    __slots__ = ("record", "weigh", "suspend", "seeder", "replayer", "meter")

    def __init__(self, record: Record, weigh: Weigh, suspend: Suspend, seeder: Any, replayer: Any,
                 meter: Meter | None = None) -> None:
        self.record, self.weigh, self.suspend, self.seeder, self.replayer = record, weigh, suspend, seeder, replayer
        self.meter = meter if meter is not None else Meter()

    def _site(self, name: str, kind: str) -> None:
        record = self.record
        if name in record.addresses:
            raise _duplicate(name, kind)
        record.addresses.add(name)
        record.last_address = name

    def sample(self, name: str, dist: Any) -> Any:
        replayer = self.replayer
        if replayer is not None and replayer.left:
            if replayer.indexed:
                recorded = replayer.sample(name)
            else:  # `Replay._take` inline (a replayed step is what every resampled duplicate pays again)
                position = replayer.position  # < len(recorded): events are left, and none was skipped
                recorded = replayer.recorded[position]
                if recorded.address == name and recorded.type == "sample":
                    replayer.position = position + 1
                    replayer.left -= 1
                else:
                    recorded = replayer.sample(name)
            if recorded is not None:
                record = self.record
                if name in record.addresses:
                    raise _duplicate(name, "sample")
                record.addresses.add(name)
                record.last_address = name
                if recorded.target_log_prob is not None:
                    self._weigh_sample(name, recorded.log_prob, recorded.target_log_prob)
                return recorded.value
        seeder = self.seeder
        key = _blake2b(f"{seeder.seed}|{seeder.stream}|{name}".encode(), digest_size=16).digest()
        if type(dist) in FINITE_INVERSE_CDF:  # what dist.sample(SiteRandom(key)) draws, without the object
            value, log_prob = dist.draw_uniform((_from_bytes(key[8:16], "little") >> 11) * _TWO_POW_53)
        else:
            value = dist.sample(SiteRandom(key))
            log_prob = float(dist.log_prob(value))
        record = self.record
        if name in record.addresses:
            raise _duplicate(name, "sample")
        record.addresses.add(name)
        record.last_address = name
        record.delta.append(sample_event(name, value, log_prob, None, dist.describe(), {}))
        return value

    async def sample_async(self, name: str, dist: Any, token: object = None) -> Any:
        """`sample` for an asynchronous distribution (an LLM generation, a tool call): what the seed,
        replay, Record, Weigh, Meter and Suspend handlers do with it, in one coroutine."""
        if (waiting := unawaited_samples()) is not None:
            waiting.pop(token, None)  # started: awaited (see `check_awaited`)
        replayer = self.replayer
        if replayer is not None and replayer.left:
            recorded = replayer.sample(name)
            if recorded is not None:
                self._site(name, "sample")
                self._weigh_sample(name, recorded.log_prob, recorded.target_log_prob)
                return recorded.value
        seeder = self.seeder
        key = _blake2b(f"{seeder.seed}|{seeder.stream}|{name}".encode(), digest_size=16).digest()
        try:
            draw = await dist.sample_async(SiteRandom(key))
        except InvalidDistributionError as exc:
            raise at_site(name, exc) from exc
        record = self.record
        if name in record.addresses:
            raise _duplicate(name, "sample")
        record.addresses.add(name)
        record.last_address = name
        info = draw.info
        if info:
            if record.intern is not None:
                info = record.intern(info)
            usage = info.get("usage")
            if usage:
                meter = self.meter
                meter.llm_calls += 1
                out = int(usage.get("output_tokens", 0))
                meter.tokens += int(usage.get("input_tokens", 0)) + out
                meter.output_tokens += out
        target = draw.target_log_prob
        record.delta.append(sample_event(name, draw.value, float(draw.log_prob),
                                         None if target is None else float(target), dist.describe(), info or {}))
        if target is not None:
            self._weigh_sample(name, draw.log_prob, target)
        return draw.value

    def _weigh_sample(self, name: str, log_prob: float, target: float | None) -> None:
        """What Weigh and Suspend do with a sample that carries an importance correction."""
        if target is not None:
            self.weigh.log_weight += sample_term(log_prob, target)
            self.suspend._pending = True
            if target == NEG_INF and self.weigh.kill:
                raise Killed(name)

    def _replayed(self, kind: str, name: str, value: Any) -> bool:
        replayer = self.replayer
        return replayer is not None and replayer.left != 0 and replayer.weighting(kind, name, value)

    def factor(self, name: str, value: float, shaping: bool) -> None:
        replayer = self.replayer
        replayed = False
        if replayer is not None and replayer.left:
            recorded = None if replayer.indexed else replayer.recorded[replayer.position]
            if recorded is not None and recorded.address == name and recorded.type == "factor" and \
                    _same_weighting(recorded, "factor", value):
                replayer.position += 1  # `Replay._take` inline, as in `sample`
                replayer.left -= 1
                replayed = True
            else:
                replayed = replayer.weighting("factor", name, value)
        record = self.record
        if name in record.addresses:
            raise _duplicate(name, "factor")
        record.addresses.add(name)
        record.last_address = name
        if not replayed:
            record.delta.append(factor_event(name, value, shaping, 1.0))
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
