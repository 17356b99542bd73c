"""Running a program one *segment* at a time: from the start (replaying a recorded prefix) up to
its k-th synchronisation point, where it is suspended.

Synchronisation points are the weighting statements in program order (top-level `factor` and
`guarantee`, and the exit of a `plate` that weighted anything), the observe-based SMC of
Anglican/WebPPL. A particle is advanced from sync point k−1 to k by re-executing the program with
its recorded trace replayed (no distribution and no LLM is called for a recorded site) and letting
it run live past the prefix until the k-th sync point. Because a resampled offspring is just a new
execution of the ancestor's trace, offspring never share mutable state: each continues on its own
fresh copy of the program's Python state (the ARCHITECTURE's replay mechanism). A trace is never
mutated once its segment has ended, so offspring may share the recorded events themselves.

A particle dies (its log weight becomes −∞) at a failed guarantee, a −∞ factor or observation, or
an exception raised by the program (recorded as an `ErrorEvent`; the run goes on). Errors that are
the framework's own (`SwarmError`: NaN potentials, duplicate sites, non-determinism) abort the run.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

import greenlet

from swarm.errors import ParticleLost, SwarmError
from swarm.handlers import replay, scale, seed, trace
from swarm.runtime import Handler, Message
from swarm.trace import Trace

Status = Literal["running", "finished", "dead", "failed"]


class _Suspend(BaseException):
    """Control signal: the particle reached the sync point it was asked to stop at."""


class Killed(BaseException):
    """Control signal: the particle's weight became zero; nothing after this point matters."""

    def __init__(self, site: str) -> None:
        super().__init__(site)
        self.site = site


class Engine(trace):
    """The outermost handler of a particle execution: records the trace, counts sync points,
    suspends at `stop_at`, and ends the execution early when the weight becomes zero."""

    def __init__(self, stop_at: int | None = None, *, kill: bool = True) -> None:
        super().__init__()
        self.stop_at = stop_at
        self.kill = kill
        self.sync_count = 0
        self.site: str | None = None
        self.tokens = 0
        self.llm_calls = 0
        self.live = False
        """Live mode: at `stop_at`, switch back to the coordinator's greenlet instead of unwinding."""
        self._pending = False
        self.log_weight = 0.0
        """log w of the trace so far: scaled target factors, guarantees, and log p − log q of sites
        drawn from a proposal other than their distribution (kept incrementally: O(1) a statement)."""
        self.twist = 0.0
        """The current shaping factor (the last one met), which the next one replaces."""

    def postprocess_message(self, msg: Message) -> None:
        super().postprocess_message(msg)
        kind = msg.type
        if kind == "sample":
            if not msg.replayed and msg.info:
                self._count_usage(msg.info)
            if msg.target_log_prob is not None:
                self.log_weight += msg.target_log_prob - msg.log_prob
                if msg.target_log_prob == -math.inf and self.kill:
                    raise Killed(msg.name)
                self._pending = True
        elif kind == "factor" or kind == "guarantee":
            self._weigh(msg)
            if self.kill and _kills(msg):
                raise Killed(msg.name)
            if msg.plates:
                self._pending = True
            else:
                self._sync(msg.name)
        elif kind == "sync" and not msg.plates and self._pending:
            self._sync(msg.name)

    def _weigh(self, msg: Message) -> None:
        if msg.type == "guarantee":
            if not msg.value:
                self.log_weight = -math.inf
        elif msg.shaping:
            self.twist = msg.scale * msg.value
        elif msg.scale != 0.0:  # Φ^0 = 1, even where Φ = 0
            self.log_weight += msg.scale * msg.value

    def _count_usage(self, info: dict[str, Any]) -> None:
        usage = info.get("usage")
        if usage:
            self.llm_calls += 1
            self.tokens += int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))

    def _sync(self, site: str) -> None:
        self._pending = False
        self.sync_count += 1
        self.site = site
        if self.stop_at is not None and self.sync_count >= self.stop_at:
            if self.live:
                greenlet.getcurrent().parent.switch(_SUSPENDED)
            else:
                raise _Suspend(site)


def _kills(msg: Message) -> bool:
    if msg.type == "guarantee":
        return not msg.value
    return (not msg.shaping) and msg.value == -math.inf and msg.scale > 0


@dataclass
class Segment:
    """What one execution segment produced."""

    trace: Trace
    status: Status
    value: Any = None
    sync_count: int = 0
    site: str | None = None
    """The address of the sync point the particle stopped at, or the statement that killed it."""
    started_ns: int = 0
    ended_ns: int = 0
    tokens: int = 0
    llm_calls: int = 0
    target_log_weight: float = 0.0
    """log w(τ) of the trace so far (equal to `trace.log_weight`, kept incrementally)."""
    twist: float = 0.0
    """The current shaping factor (equal to `current_twist(trace)`)."""

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def log_weight(self) -> float:
        """The particle's current log weight for resampling: the trace's target weight plus, while it
        is still running, its current twist (the last shaping factor), which telescopes away."""
        if self.status in ("dead", "failed"):
            return -math.inf
        lw = self.target_log_weight
        if self.status == "running" and lw > -math.inf:
            lw += self.twist
        return lw


def current_twist(trace_: Trace) -> float:
    """The value of the last shaping factor of a trace (0 when there is none)."""
    for event in reversed(trace_.events):
        if event.type == "factor" and event.shaping:
            return event.scale * event.log_potential
    return 0.0


@dataclass
class SegmentTask:
    """Advance one particle: replay `prefix` and run to sync point `stop_at` (None: to the end).

    `continue_from` names the stream whose suspended execution (if the runtime kept one alive and
    it stands exactly at `prefix`) may be continued instead of replaying the prefix: the particle's
    own id when it was not resampled, its parent's id for the first offspring of each parent.
    """

    stream: int | str
    prefix: Trace | None = None
    stop_at: int | None = None
    continue_from: int | str | None = None


_SUSPENDED = object()


def _program_name(program: Callable[..., Any]) -> str:
    return getattr(program, "__qualname__", None) or repr(program)


@contextlib.contextmanager
def _installed(handlers: Iterable[Handler]):
    with contextlib.ExitStack() as stack:
        for handler in handlers:
            stack.enter_context(handler)
        yield


class SegmentRunner:
    """Runs segments of one program (with fixed arguments) under one seed and temperature."""

    def __init__(self, program: Callable[..., Any], args: tuple = (), kwargs: dict | None = None, *,
                 seed: int | None = None, beta: float | None = None, kill: bool = True,
                 extra_handlers: Callable[[], list[Handler]] | None = None) -> None:
        if not callable(program):
            raise TypeError(f"a program must be callable, got {type(program).__name__}")
        self.program = program
        self.args = args
        self.kwargs = kwargs or {}
        self.seed = seed
        self.beta = beta
        self.kill = kill
        self.extra_handlers = extra_handlers
        self.is_async = inspect.iscoroutinefunction(program) or inspect.iscoroutinefunction(
            getattr(program, "__call__", None))
        self.name = _program_name(program)
        self.live: dict[int | str, LiveExecution] = {}

    def _handlers(self, task: SegmentTask) -> tuple[Engine, replay | None, list[Handler]]:
        engine = Engine(task.stop_at, kill=self.kill)
        engine.plain_program = not self.is_async
        handlers: list[Handler] = [engine, seed(self.seed, task.stream)]
        if self.beta is not None:
            handlers.append(scale(self.beta))
        if self.extra_handlers is not None:
            handlers.extend(self.extra_handlers())
        rp = replay(task.prefix) if task.prefix is not None and len(task.prefix) else None
        if rp is not None:
            handlers.append(rp)
        return engine, rp, handlers

    def run_sync(self, task: SegmentTask) -> Segment:
        """Run a segment of a plain (non-async) program."""
        engine, rp, handlers = self._handlers(task)
        started = time.time_ns()
        with _installed(handlers):
            try:
                value = self.program(*self.args, **self.kwargs)
                if inspect.isawaitable(value):
                    raise TypeError(f"{self.name} returned an awaitable: declare it `async def`")
                return self._finish(engine, rp, "finished", value, started)
            except BaseException as exc:  # noqa: BLE001 - control signals and program errors
                return self._ended(engine, rp, exc, started)

    async def run(self, task: SegmentTask) -> Segment:
        """Run a segment of an async (or plain) program."""
        if not self.is_async:
            return self.run_sync(task)
        engine, rp, handlers = self._handlers(task)
        started = time.time_ns()
        with _installed(handlers):
            try:
                value = await self.program(*self.args, **self.kwargs)
                return self._finish(engine, rp, "finished", value, started)
            except BaseException as exc:  # noqa: BLE001
                return self._ended(engine, rp, exc, started)

    def run_batch_sync(self, tasks: list[SegmentTask]) -> list[Segment]:
        """Run segments of a plain program, continuing suspended executions where possible.

        Executions suspended at the end of the previous batch are kept alive in greenlets; a task
        whose `continue_from` names one continues it (O(new work)), any other task replays its
        prefix in a fresh execution. Executions no task claimed are dropped (and unwound).
        """
        previous, self.live = self.live, {}
        out = []
        for task in tasks:
            if task.stop_at is None:
                out.append(self.run_sync(task))
                continue
            execution = previous.pop(task.continue_from, None) if task.continue_from is not None else None
            if execution is None or not execution.stands_at(task):
                execution = LiveExecution(self, task)
            seg = execution.advance(task.stream, task.stop_at)
            if seg.status == "running":
                self.live[task.stream] = execution
            out.append(seg)
        return out

    def _ended(self, engine: Engine, rp: replay | None, exc: BaseException, started: int) -> Segment:
        if isinstance(exc, _Suspend):
            return self._finish(engine, rp, "running", None, started)
        if isinstance(exc, Killed):
            seg = self._finish(engine, None, "dead", None, started)
            seg.site = exc.site
            return seg
        # a ParticleLost (a backend failing for good) fails its particle, as before it was a SwarmError,
        # until the engine keeps lost particles apart (docs/theory.md §3.4)
        aborts = isinstance(exc, SwarmError) and not isinstance(exc, ParticleLost)
        if aborts or not isinstance(exc, Exception):
            raise exc
        address = engine.trace.events[-1].address if engine.trace.events else "<program start>"
        engine.record_error(address, exc)
        seg = self._finish(engine, None, "failed", None, started)
        seg.site = f"{type(exc).__name__} after {address}"
        return seg

    def _finish(self, engine: Engine, rp: replay | None, status: Status, value: Any, started: int) -> Segment:
        if rp is not None:
            rp.check_consumed()
        recorded = engine.trace
        if engine.live:  # the execution goes on mutating its trace: hand out a snapshot
            recorded = Trace(list(recorded.events))
        return Segment(trace=recorded, status=status, value=value, sync_count=engine.sync_count,
                       site=engine.site, started_ns=started, ended_ns=time.time_ns(),
                       tokens=engine.tokens, llm_calls=engine.llm_calls,
                       target_log_weight=engine.log_weight, twist=engine.twist)


class LiveExecution:
    """One execution of a plain program kept alive between steps in its own greenlet.

    At its `stop_at`-th sync point the engine switches back to the coordinator instead of unwinding
    the stack; `advance` switches in again to run to the next one. A copy of the particle made by
    resampling cannot share this live stack, so it gets a fresh execution that replays the trace.
    The seed handler's stream is updated on every advance, so the draws after a resampling are those
    of the particle's new id, exactly as when replaying: live continuation changes cost, not results.
    """

    def __init__(self, runner: SegmentRunner, task: SegmentTask) -> None:
        self.runner = runner
        self.engine, self.replayer, self.handlers = runner._handlers(task)
        self.engine.live = True
        self.seed_handler = self.handlers[1]
        self.greenlet = greenlet.greenlet(self._body)
        self.greenlet.gr_context = contextvars.Context()

    def stands_at(self, task: SegmentTask) -> bool:
        prefix_len = 0 if task.prefix is None else len(task.prefix)
        return (self.engine.sync_count + 1 == task.stop_at and len(self.engine.trace.events) == prefix_len
                and not self.greenlet.dead)

    def _body(self) -> tuple[str, Any]:
        with _installed(self.handlers):
            try:
                value = self.runner.program(*self.runner.args, **self.runner.kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the coordinator to classify
                if isinstance(exc, greenlet.GreenletExit):
                    raise
                return ("raised", exc)
        if inspect.isawaitable(value):
            return ("raised", TypeError(f"{self.runner.name} returned an awaitable: declare it `async def`"))
        return ("finished", value)

    def advance(self, stream: int | str, stop_at: int) -> Segment:
        self.seed_handler.stream = stream
        engine = self.engine
        engine.stop_at, engine.tokens, engine.llm_calls = stop_at, 0, 0
        started = time.time_ns()
        outcome = self.greenlet.switch()
        if outcome is _SUSPENDED:
            return self.runner._finish(engine, self.replayer, "running", None, started)
        kind, payload = outcome
        if kind == "finished":
            return self.runner._finish(engine, self.replayer, "finished", payload, started)
        return self.runner._ended(engine, self.replayer, payload, started)
