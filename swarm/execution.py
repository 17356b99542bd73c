"""Running a program one *segment* at a time, keeping each particle's execution alive in between.

A segment advances one particle from its (k−1)-th synchronisation point to its k-th (docs/theory.md
§3.1: the weighting statements in program order, observe-based SMC as in Anglican/WebPPL). Every
execution, of a plain or an `async def` program, runs in its own greenlet: at its stop point it hands
control back to the coordinator with its Python state intact, and the next segment *continues* it
(live continuation: a step costs only its new statements). An `async def` program is driven from
inside its greenlet (each `await` of the program is handed out to the event loop and its result
sent back in), so a sync point reached anywhere in the program's own call stack suspends it.

An execution that no longer exists (the second and later offspring of a resampled parent, a resumed
run, a search policy branching from an arbitrary prefix) is rebuilt by *replay*: a fresh execution
runs the program with the recorded values fed back (no LLM or distribution is called, and nothing is
recorded again) and goes on live past the record. Offspring therefore never share mutable state:
each continues on its own execution.

A particle *dies* (killed: log weight −∞, docs/theory.md §3.4) at a failed guarantee, a −∞ factor or
twist, or an exception of the program's own (an `ErrorEvent` is recorded; the run goes on). It is
*lost* when infrastructure failed it for good (`ParticleLost`: an LLM call after its retries, a tool
server): missing data, not evidence. Other `SwarmError`s (NaN potentials, duplicate sites,
non-determinism) abort the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal

import greenlet

from swarm.effects import (Handler, execution_context, mark_fused, push_plain_handlers, set_run_scope,
                           track_unawaited_samples, unawaited_samples)
from swarm.engine import SUSPENDED, Fused, Killed, Meter, Record, Replay, Suspend, Suspended, Weigh, check_awaited
from swarm.errors import ParticleLost, ProgramArgumentsError, ProgramKindError, SwarmError, UnawaitedSampleError
from swarm.handlers import scale, seed
from swarm.human import AwaitingHuman, is_pausable
from swarm.trace import Trace

Status = Literal["running", "finished", "dead", "failed", "lost", "waiting"]
_AWAIT = object()


@dataclass(slots=True)
class Segment:
    """What one execution segment produced: the events it added (the particle's delta), where the
    particle stands, and its weight so far."""

    events: list[Any]
    """The new events of this segment, in program order (replayed statements are not repeated)."""
    status: Status
    value: Any = None
    sync_count: int = 0
    site: str | None = None
    """The address of the sync point the particle stopped at, or what ended it (killed, failed, lost)."""
    started_ns: int = 0
    ended_ns: int = 0
    tokens: int = 0
    llm_calls: int = 0
    output_tokens: int = 0
    target_log_weight: float = 0.0
    """log w(τ) of the particle's whole trace so far (docs/theory.md §1.3)."""
    twist: float = 0.0
    """The current shaping factor (the last one met), which the next one replaces."""
    prefix: Any = None
    """The events this segment continued from, when the caller gave them (see `trace`)."""
    error: str | None = None
    """For a lost or failed particle: what failed ("<Error>: <message>")."""
    continued: bool = False
    """Whether an execution kept alive from the previous step was continued (else: replayed/new)."""
    _trace: Trace | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.status != "running"

    @property
    def trace(self) -> Trace:
        """The particle's whole trace: the given prefix followed by this segment's events."""
        if self._trace is None:
            if self.prefix is None:
                self._trace = Trace(list(self.events))
            else:
                before = self.prefix.events if isinstance(self.prefix, Trace) else list(self.prefix)
                self._trace = Trace([*before, *self.events])
        return self._trace

    def log_weight(self) -> float:
        """The particle's current log weight for resampling: the trace's target weight plus, while it
        is still running, its current twist (which telescopes away)."""
        if self.status not in ("running", "finished"):
            return -float("inf")
        lw = self.target_log_weight
        if self.status == "running" and lw > -float("inf"):
            lw += self.twist
        return lw


@dataclass(slots=True)
class SegmentTask:
    """Advance one particle to sync point `stop_at` (None: to the end), as random stream `stream`.

    `continue_from` names the stream whose kept-alive execution this particle may continue (its own
    when it was not resampled; its parent's for the first offspring of each parent). `prefix` is the
    particle's recorded trace so far (a `Trace`, a list of events, or a callable returning one,
    evaluated only if the execution must be rebuilt by replay). `source` is the stream whose recorded
    path that prefix is (the particle's own, or its parent's after a resampling): a worker that ran
    `source` last step knows the prefix without being sent it."""

    stream: int | str
    prefix: Any = None
    stop_at: int | None = None
    continue_from: int | str | None = None
    source: int | str | None = None
    withheld: bool = False
    """The prefix was left out on the way to a worker that holds this particle's past (Ray)."""

    def prefix_events(self) -> list[Any]:
        """The recorded events of the particle's past (a lazy `(function, argument)` prefix is
        evaluated now)."""
        prefix = self.prefix
        if type(prefix) is tuple:
            prefix = prefix[0](prefix[1])
        elif callable(prefix):
            prefix = prefix()
        if prefix is None:
            return []
        return prefix.events if isinstance(prefix, Trace) else list(prefix)

    @property
    def lazy_prefix(self) -> bool:
        """Whether the prefix is only a way to read the past (not a trace the caller holds)."""
        return type(self.prefix) is tuple or callable(self.prefix)


def _program_name(program: Callable[..., Any]) -> str:
    return getattr(program, "__qualname__", None) or repr(program)


def _is_async(program: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(program) or inspect.iscoroutinefunction(getattr(program, "__call__", None))


def check_arguments(program: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> None:
    """Arguments the program's signature does not take are a usage error: `ProgramArgumentsError` (a
    `TypeError`) naming the program, raised before a run starts (run anyway, every particle would die of the same TypeError
    and the run end in `NoSurvivingParticles` counting them)."""
    try:
        signature = inspect.signature(program)
    except (TypeError, ValueError):  # a callable without a signature (a C function): the call will tell
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        given = f"{len(args)} positional" + (f", keywords {sorted(kwargs)}" if kwargs else "")
        raise ProgramArgumentsError(f"{_program_name(program)}{signature} cannot be called with {given}: {exc}") from None


class SegmentRunner:
    """One program with fixed arguments, seed, temperature and policy handlers: builds executions.

    `extra_handlers(stream)` (or a zero-argument callable) gives per-execution handlers a policy adds
    inside the engine's (e.g. a twisted proposal); `intern` interns large payloads of new events."""

    def __init__(self, program: Callable[..., Any], args: tuple = (), kwargs: dict | None = None, *,
                 seed: int | None = None, beta: float | None = None, kill: bool = True,
                 extra_handlers: Callable[..., list[Handler]] | None = None,
                 intern: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 scope: dict[str, Any] | None = None) -> None:
        if not callable(program):
            raise TypeError(f"a program must be callable, got {type(program).__name__}")
        self.program = program
        self.args = args
        self.kwargs = kwargs or {}
        self.seed = seed
        self.beta = beta
        self.kill = kill
        self.extra_handlers = extra_handlers
        self.intern = intern
        self.scope = scope
        """The run scope the executions see as `run_scope()` (per-run state of the layers above)."""
        self.is_async = _is_async(program)
        self.name = _program_name(program)

    def __getstate__(self) -> dict[str, Any]:
        """What travels to another process (a Ray worker): not the payload store, and of the run scope
        only its plain values (e.g. the checkpoint directory); the worker starts a scope from them."""
        state = dict(self.__dict__)
        state["intern"] = None
        if self.scope is not None:
            state["scope"] = {k: v for k, v in self.scope.items() if isinstance(v, (str, int, float, bool, type(None)))}
        return state

    def policy_handlers(self, stream: int | str) -> list[Handler]:
        if self.extra_handlers is None:
            return []
        try:
            return list(self.extra_handlers(stream))
        except TypeError as exc:
            if "positional argument" not in str(exc):
                raise
            return list(self.extra_handlers())

    def execution(self, task: SegmentTask) -> "Execution":
        """A fresh execution of the program for `task` (replaying its prefix, if any)."""
        return Execution(self, task.stream, task.prefix_events())

    # -- one-off segments (no execution kept alive) -----------------------------------------------
    async def run(self, task: SegmentTask) -> Segment:
        """Run one segment on a fresh execution and drop the execution afterwards."""
        execution = self.execution(task)
        try:
            seg = await execution.advance(task.stream, task.stop_at)
        finally:
            execution.close()
        seg.prefix = task.prefix_events() if task.lazy_prefix else task.prefix
        return seg

    def run_sync(self, task: SegmentTask) -> Segment:
        """`run` for a plain (non-async) program, without an event loop."""
        execution = self.execution(task)
        try:
            seg = execution.advance_sync(task.stream, task.stop_at)
        finally:
            execution.close()
        seg.prefix = task.prefix_events() if task.lazy_prefix else task.prefix
        return seg

    def run_batch_sync(self, tasks: list[SegmentTask]) -> list[Segment]:
        """Run tasks of a plain program one after another on fresh executions."""
        return [self.run_sync(task) for task in tasks]


@contextlib.contextmanager
def _installed(handlers: Iterable[Handler]):
    with contextlib.ExitStack() as stack:
        for handler in handlers:
            stack.enter_context(handler)
        yield


def in_plain_program() -> bool:
    """Whether the caller runs inside a plain (non-`async`) program's execution: in an execution's
    greenlet (not the thread's main one) that tracks no unawaited samples (an async one does)."""
    return greenlet.getcurrent().parent is not None and unawaited_samples() is None


def check_plain_result(name: str, result: Any) -> None:
    """Raise `ProgramKindError` if a plain program's return value shows it is not one: a generator
    (a program with explicit steps), an async generator, or an awaitable (an `async def` in disguise).
    Without this check the object would silently become every particle's value."""
    if inspect.isgenerator(result) or inspect.isasyncgen(result):
        what = "a generator" if inspect.isgenerator(result) else "an async generator"
        if inspect.isgenerator(result):
            result.close()
        if inspect.isgenerator(result) and result.gi_code.co_name == "<genexpr>":  # returned, not the program
            raise ProgramKindError(f"{name} returned a generator expression, which cannot be a particle's value "
                                   "(it is consumed once): return a list, e.g. list(...)")
        raise ProgramKindError(
            f"{name} is {what} function (it `yield`s): SMC and the other policies run plain and `async def` "
            "programs; a numeric program with explicit steps (`state = yield state`) runs under "
            "policies.VectorizedSMC; otherwise replace `yield` with `return`")
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise ProgramKindError(f"{name} returned an awaitable: declare it `async def`")


class Execution:
    """One execution of the program in its own greenlet, advanced segment by segment.

    At its `stop_at`-th sync point the `Suspend` handler switches back to the caller instead of
    unwinding; `advance` switches in again. The seed handler's stream is set on every advance, so the
    draws after a resampling are those of the particle's new id, exactly as under replay: live
    continuation changes cost, never results."""

    __slots__ = ("runner", "record", "weigh", "meter", "suspend", "seeder", "replayer", "handlers",
                 "greenlet", "outcome", "stream", "replayed_events", "fused", "go", "host")

    def __init__(self, runner: SegmentRunner, stream: int | str, prefix: list[Any]) -> None:
        self.runner = runner
        self.suspend = Suspend(runner.is_async)
        self.meter = Meter()
        self.weigh = Weigh(runner.kill)
        self.record = Record(runner.intern)
        self.seeder = seed(runner.seed, stream)
        handlers: list[Handler] = [self.suspend, self.meter, self.weigh, self.record, self.seeder]
        if runner.beta is not None:
            handlers.append(scale(runner.beta))
        handlers.extend(runner.policy_handlers(stream))
        self.replayer = Replay(prefix) if prefix else None
        if self.replayer is not None:
            handlers.append(self.replayer)
        self.handlers = handlers
        self.fused = None if len(handlers) != 5 + (self.replayer is not None) else \
            Fused(self.record, self.weigh, self.suspend, self.seeder, self.replayer, self.meter)
        """The fused engine (`swarm.engine.Fused`) when the stack is exactly the engine's own."""
        self.greenlet = greenlet.greenlet(self._body)
        self.greenlet.gr_context = execution_context()
        self.suspend.greenlet = self.greenlet
        self.outcome: tuple[str, Any] | None = None
        self.stream = stream
        self.replayed_events = len(prefix)
        self.go: Any = None
        """Where a host task (`swarm.live`) waits for this execution's next segment, if one does."""
        self.host: Any = None

    # -- inside the greenlet ------------------------------------------------------------------------
    def _body(self, *_: Any) -> tuple[str, Any]:
        """The greenlet's function. Its context is its own (`execution_context()`, dropped with the
        greenlet), so the run scope and a stack of plain handlers are simply set in it;
        handlers with their own enter/exit (e.g. a policy's context handler) are entered and exited."""
        runner = self.runner
        if runner.scope is not None:
            set_run_scope(runner.scope)
        if push_plain_handlers(self.handlers):
            return self._run_program()
        with _installed(self.handlers):
            return self._run_program()

    def _run_program(self) -> tuple[str, Any]:
        runner = self.runner
        if self.fused is not None:
            mark_fused(self.fused)
        try:
            waiting = track_unawaited_samples() if runner.is_async else None
            result = runner.program(*runner.args, **runner.kwargs)
            if runner.is_async:
                result = self._drive(result)
                check_awaited(waiting)
                if inspect.iscoroutine(result):  # under any handler stack, e.g. `return agent.ask(...)`
                    result.close()
                    raise UnawaitedSampleError(f"{runner.name} returned a coroutine object: an `await` is missing "
                                               "(e.g. `text = await sample(...)`, `reply = await agent.ask(...)`)")
            else:
                check_plain_result(runner.name, result)
        except greenlet.GreenletExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the coordinator to classify
            return ("raised", exc)
        return ("finished", result)

    def _drive(self, coro: Any) -> Any:
        """Step the program's coroutine; every object it yields (a future to wait for) goes out to
        the event loop through the parent greenlet, which sends back what to resume it with."""
        own = self.greenlet
        send: Any = None
        throw: BaseException | None = None
        while True:
            try:
                yielded = coro.throw(throw) if throw is not None else coro.send(send)
            except StopIteration as stop:
                return stop.value
            try:
                send, throw = own.parent.switch((_AWAIT, yielded))  # whoever advanced it (`_enter`)
            except greenlet.GreenletExit:  # closed while waiting: unwind the program's frames too
                coro.close()
                raise

    # -- from the coordinator -----------------------------------------------------------------------
    async def advance(self, stream: int | str, stop_at: int | None) -> Segment:
        """Run to sync point `stop_at` (None: to the end) as random stream `stream`.

        Every future the program's coroutine yields is awaited here, on the event loop, in the task
        running this coroutine (so the program sees that task as `asyncio.current_task()`); the
        program reads the future's result or exception itself when resumed. A cancellation of this
        task while it waits cancels the awaited future and is thrown into the program."""
        self.seeder.stream = self.stream = stream
        self.suspend.stop_at = stop_at
        started = time.time_ns()
        switch = self._enter().switch
        signal = switch()
        while type(signal) is tuple and signal[0] is _AWAIT:
            awaited = signal[1]
            throw = None
            try:
                if awaited is None:  # a bare yield (asyncio.sleep(0))
                    await _YIELD
                else:
                    awaited._asyncio_future_blocking = False  # as a Task does with what its coroutine yields
                    await awaited
            except asyncio.CancelledError as exc:
                if awaited is None or not awaited.cancelled():
                    throw = exc
            except BaseException:  # noqa: BLE001 - the program sees it through the future
                pass
            signal = switch(None, throw)
        return self._segment(signal, started)

    def advance_sync(self, stream: int | str, stop_at: int | None) -> Segment:
        """`advance` for a plain program (which never awaits)."""
        self.seeder.stream = self.stream = stream
        self.suspend.stop_at = stop_at
        started = time.time_ns()
        signal = self._enter().switch()
        if type(signal) is tuple and signal[0] is _AWAIT:  # pragma: no cover - only async programs await
            raise TypeError(f"{self.runner.name} awaited inside a plain program")
        return self._segment(signal, started)

    def _enter(self) -> Any:
        """The execution's greenlet, made a child of the greenlet about to switch into it, where its
        awaits and its suspension switch back to. A greenlet's parent is otherwise the one that
        created it: for a run started inside another run's program (`await policy.run_async(...)`
        in a program or in a tool, an agent as a tool), that is the outer program's greenlet, not
        the event loop's task that advances it, and the inner run's first await hung both runs."""
        own = self.greenlet
        current = greenlet.getcurrent()
        if own.parent is not current:
            own.parent = current
        return own

    def stands_at(self, sync_count: int) -> bool:
        """Whether this execution is alive, suspended right after its `sync_count`-th sync point."""
        return self.suspend.greenlet is not None and self.outcome is None and \
            self.suspend.sync_count == sync_count and not self.greenlet.dead

    def close(self) -> None:
        """Unwind the execution if it is still suspended (its `finally` blocks run)."""
        if not self.greenlet.dead and self.greenlet:
            with contextlib.suppress(BaseException):
                self.greenlet.throw(greenlet.GreenletExit)
        self.suspend.greenlet = None

    def _segment(self, signal: Any, started: int) -> Segment:
        """The segment that ended with `signal` (SUSPENDED at the stop point, or how the program
        ended): this segment's events, usage and weights, taken from the handlers."""
        suspend, replayer = self.suspend, self.replayer
        value = error = None
        site = suspend.site
        if signal is SUSPENDED:
            status: Status = "running"
        else:
            self.outcome = signal
            suspend.greenlet = None  # the execution is over: no cycle through its greenlet's context is left
            kind, payload = signal
            if kind == "finished":
                status, value = "finished", payload
            else:
                status, site, error = self._classify(payload)
        if replayer is not None and (status == "finished" or (status == "running" and replayer.left)):
            replayer.check_consumed()  # stopped before the record's end: control flow diverged
        tokens, calls, output_tokens = self.meter.take()
        events, self.record.delta = self.record.delta, []
        return Segment(events, status, value, suspend.sync_count, site, started, time.time_ns(), tokens, calls,
                       output_tokens, self.weigh.log_weight, self.weigh.twist, None, error)

    def _classify(self, exc: BaseException) -> tuple[Status, str | None, str | None]:
        """How an exception ends the particle: suspended (unwound), killed, lost, waiting for a
        person's answer (`swarm.human`), or failed; a `SwarmError` of the framework's own aborts the
        run (re-raised)."""
        if isinstance(exc, Suspended):
            return "running", self.suspend.site, None
        if isinstance(exc, AwaitingHuman):
            if not is_pausable(self.runner.scope):
                raise exc.cannot_pause()
            return "waiting", exc.address, None
        if isinstance(exc, Killed):
            return "dead", exc.site, None
        if isinstance(exc, ParticleLost):
            event = self.record.record_error(exc)
            return "lost", f"{type(exc).__name__} after {event.address}", f"{type(exc).__name__}: {event.message}"
        if isinstance(exc, (SwarmError, KeyboardInterrupt, SystemExit)) or not isinstance(exc, Exception):
            raise exc
        event = self.record.record_error(exc)
        return "failed", f"{type(exc).__name__} after {event.address}", f"{type(exc).__name__}: {event.message}"


class _Yield:
    """Awaiting it gives the event loop one turn (what `asyncio.sleep(0)` does), with no coroutine."""

    def __await__(self):
        yield


_YIELD = _Yield()
