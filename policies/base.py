"""What every policy shares: validated configuration, seeds, the runtime, budgets, listeners.

A policy is a pydantic model (so a bad configuration fails with the field named) with
`.run(program, *args, **kwargs) -> Result` and its async twin `.run_async`. Subclasses implement
`_run(ctx, program, args, kwargs)` and use the `RunContext` helpers to advance particles, account
for tokens and LLM calls, honour the budget and report steps to listeners.
"""

from __future__ import annotations

import abc
import asyncio
import math
import secrets
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.sync_bridge import boxed, in_plain_program_body, run_in_own_thread
from swarm.coordinator import Coordinator, StepOutcome, check_lost_fraction
from swarm.effects import new_run_scope, run_scope
from swarm.event_tree import GlobalTrace
from swarm.errors import BlockingRunError
from swarm.execution import Segment, SegmentRunner, SegmentTask, check_arguments, in_plain_program
from swarm.gc_tuning import relaxed_gc
from swarm.listeners import Broadcaster, RunFinished, RunStarted, step_record
from swarm.population import STATUS_CODES
from swarm.population import ess as population_ess
from swarm.result import Diagnostics, Result, StepStats
from swarm.runtimes import Runtime, make_runtime

if TYPE_CHECKING:
    from policies.streaming import RunStream


class Budget(BaseModel):
    """Limits on a run. A policy checks them between steps and stops cleanly with the population it
    has (equal-budget comparisons between policies rely on this)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int | None = Field(None, gt=0)
    max_llm_calls: int | None = Field(None, gt=0)
    max_seconds: float | None = Field(None, gt=0)

    def exceeded(self, tokens: int, llm_calls: int, elapsed_s: float) -> str | None:
        if self.max_tokens is not None and tokens >= self.max_tokens:
            return "max_tokens"
        if self.max_llm_calls is not None and llm_calls >= self.max_llm_calls:
            return "max_llm_calls"
        if self.max_seconds is not None and elapsed_s >= self.max_seconds:
            return "max_seconds"
        return None


def seeded_rng(seed: int, *key: int) -> np.random.Generator:
    """A numpy generator addressed by a run seed (any int) and a key, distinct seeds giving distinct
    streams: `default_rng([seed, *key])` for 0 ≤ seed < 2⁶³ (the streams runs always had), and for
    any other seed its magnitude as entropy with the sign and the key as `spawn_key`, which numpy
    assembles after a full pool of entropy words, so it meets no ordinary seed's stream. The seed
    used to be masked to 63 bits: seeds −1 and 2⁶³−1, or 5 and 2⁶³+5, gave the same run."""
    if 0 <= seed < 2**63:
        return np.random.default_rng([seed, *key])
    return np.random.default_rng(np.random.SeedSequence(abs(seed), spawn_key=(1 if seed < 0 else 2, *key)))


class RunContext:
    """The per-run state a policy works with: the seed, the run's global trace, the runtime, the
    diagnostics, the budget, and the listeners it reports to."""

    def __init__(self, policy: "Policy", program: Callable[..., Any], runtime: Runtime) -> None:
        self.policy = policy
        self.policy_name = type(policy).__name__
        self.program = program
        self.runtime = runtime
        self.seed: int = policy.seed if policy.seed is not None else secrets.randbits(63)
        self.run_id = uuid.uuid4().hex[:16]
        self.broadcaster = Broadcaster(policy.listeners)
        self.started = time.perf_counter()
        self.diagnostics = Diagnostics()
        self.budget = policy.budget
        self.tree = GlobalTrace()
        self.runners: list[SegmentRunner] = []
        self.cleanups: list[Callable[[], None]] = []
        """What to do when the run ends, however it ends (`release`)."""
        self.args: tuple = ()
        self.kwargs: dict[str, Any] = {}

    # -- execution ---------------------------------------------------------------------------
    def runner(self, args: tuple, kwargs: dict, *, beta: float | None = None, kill: bool = True) -> SegmentRunner:
        """The program with its arguments (checked against its signature), this run's seed and
        payload store, and the run scope."""
        check_arguments(self.program, args, kwargs)
        runner = SegmentRunner(self.program, args, kwargs, seed=self.seed, beta=beta, kill=kill,
                               intern=self.tree.payloads.intern_info, scope=run_scope())
        self.runners.append(runner)
        return runner

    def coordinator(self, runner: SegmentRunner, n: int) -> Coordinator:
        """A population of `n` executions of `runner`'s program, on this run's runtime and global trace."""
        return Coordinator(runner, self.runtime, n, policy=self.policy_name, tree=self.tree,
                           max_lost_fraction=self.policy.max_lost_fraction, diagnostics=self.diagnostics,
                           on_extinct=self.report_extinct)

    def report_extinct(self, outcome: StepOutcome) -> None:
        """The step in which the last particle died, reported before the run raises
        `NoSurvivingParticles`: ESS 0, log Ẑ = −∞, no survivors (its deaths are in its segments).
        Before, the run ended without it, so the trace file, spans and `swarm inspect` missed the
        step that ended the run ("deaths: 0" beside "'never' killed 10")."""
        self.diagnostics.steps.append(StepStats(step=outcome.step, ess=0.0, log_evidence=-math.inf, resampled=False,
                                                num_alive=0, unique_ancestors=None))
        self.emit_step(outcome)

    async def advance(self, runner: SegmentRunner, tasks: list[SegmentTask]) -> list[Segment]:
        """Run segments on the runtime and account for their tokens, calls, deaths and losses."""
        segments = await self.runtime.run_segments(runner, tasks)
        self.diagnostics.account(segments)
        return segments

    def check_lost(self, segments: Sequence[Segment], step: int = 0) -> None:
        """Stop the run (`BackendUnavailable`) when too many of these executions were lost."""
        check_lost_fraction(segments, self.policy.max_lost_fraction, self.policy_name, step)

    def out_of_budget(self) -> str | None:
        if self.budget is None:
            return None
        reason = self.budget.exceeded(self.diagnostics.tokens, self.diagnostics.llm_calls,
                                      time.perf_counter() - self.started)
        if reason:
            self.diagnostics.stopped_by = reason
        return reason

    def no_survivors(self, detail: str = "") -> Exception:
        """The `NoSurvivingParticles` of this run, saying when a budget stopped the run before any
        particle survived (a run stopped after one draw that failed reported only that draw's
        death, as if the program could not succeed)."""
        stopped = self.diagnostics.stopped_by
        if stopped:
            detail = f"{detail}; " if detail else ""
            detail += f"the budget ({stopped}) stopped the run first"
        return self.diagnostics.no_survivors(self.policy_name, detail=detail)

    def step_rng(self, *key: int) -> np.random.Generator:
        """A generator for the policy's own choices (resampling), addressed by the run seed and key."""
        return seeded_rng(self.seed, *key)

    async def release(self) -> None:
        """Close the executions the runtime kept alive for this run's runners, then let go of what
        the run held (`cleanups`, last taken first: e.g. its checkpoint directory's lock)."""
        try:
            for runner in self.runners:
                await self.runtime.release(runner)
        finally:
            while self.cleanups:
                self.cleanups.pop()()

    # -- listeners ---------------------------------------------------------------------------
    def emit_start(self, num_particles: int) -> None:
        if self.broadcaster:
            self.broadcaster.emit("on_run_start", RunStarted(
                run_id=self.run_id, policy=self.policy_name, program=getattr(self.program, "__qualname__", repr(self.program)),
                config=self.policy.describe(), arguments=_jsonable_arguments(self.args, self.kwargs),
                num_particles=num_particles, runtime=self.runtime.name, started_at_ns=time.time_ns()))

    def emit_step(self, outcome: StepOutcome) -> None:
        """Report one population step to the listeners (see `swarm.listeners.StepRecord`)."""
        if self.broadcaster and self.broadcaster.wants_steps:
            self.broadcaster.emit("on_step", step_record(self.run_id, outcome, self.diagnostics))

    def emit_segments(self, step: int, segments: Sequence[Segment], log_w: np.ndarray, log_evidence: float, *,
                      ids: Sequence[int] | None = None, parents: Sequence[int | None] | None = None,
                      increments: np.ndarray | None = None) -> None:
        """Report executions that are not a coordinator's population (independent draws, the nodes a
        search expanded) to the listeners as one step; lost ones are left out of the ESS."""
        if not (self.broadcaster and self.broadcaster.wants_steps):
            return
        n = len(segments)
        status = np.array([STATUS_CODES[s.status] for s in segments], dtype=np.int8)
        active = status != STATUS_CODES["lost"]
        alive = active & (log_w > -np.inf)
        self.emit_step(StepOutcome(
            step=step, moved=np.arange(n), segments=list(segments),
            increments=log_w if increments is None else increments,
            ids=np.array(ids if ids is not None else range(n), dtype=np.int64),
            parents=np.array([-1 if p is None else p for p in (parents or [None] * n)], dtype=np.int64),
            log_w=np.asarray(log_w, dtype=float), status=status, started_ns=segments[0].started_ns if n else 0,
            ess=population_ess(log_w[active]) if alive.any() else 0.0, log_evidence=log_evidence,
            lost=int(np.sum(~active))))

    def emit_end(self, result: Result | None, error: BaseException | None = None) -> None:
        if not self.broadcaster:
            return
        record = RunFinished(run_id=self.run_id, policy=self.policy_name, ended_at_ns=time.time_ns(),
                             tokens=self.diagnostics.tokens, llm_calls=self.diagnostics.llm_calls,
                             error=None if error is None else f"{type(error).__name__}: {error}")
        if result is not None:
            record.log_evidence = result.log_evidence
            record.ess = result.ess
            record.num_particles = len(result.particles)
            record.log_weights = [float(p.log_weight) for p in result.particles]
            record.particle_ids = [p.id for p in result.particles]
            record.values = [p.value for p in result.particles]
            record.marginal = {repr(k): v for k, v in list(result.marginal().items())[:50]}
            if result.status == "waiting":
                record.status, record.checkpoint = "waiting", result.checkpoint
                record.pending = [question.model_dump(mode="json") for question in result.pending]
        self.broadcaster.emit("on_run_end", record)

    def result(self, particles: list, log_evidence: float, **extra: Any) -> Result:
        """The run's `Result`, named after the policy's class."""
        self.diagnostics.wall_time_s = time.perf_counter() - self.started
        return Result(policy=self.policy_name, particles=particles, log_evidence=float(log_evidence), seed=self.seed,
                      run_id=self.run_id, diagnostics=self.diagnostics, global_trace=self.tree, **extra)


class Policy(BaseModel, abc.ABC):
    """Base class of every inference policy."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=True)

    seed: int | None = None
    """Makes the run reproducible: the same seed gives the same result, on every runtime."""
    runtime: Any = "local"
    """"local" (asyncio, one process), "ray", or a swarm Runtime instance."""
    listeners: list[Any] = Field(default_factory=list)
    budget: Budget | None = None
    max_lost_fraction: float = Field(0.1, ge=0.0, le=1.0)
    """The most of a step's particles that may be lost to infrastructure failures (an LLM or tool
    call failing for good) before the run stops with `BackendUnavailable`; the lost ones are missing
    data, excluded from the weights and from log Ẑ (docs/theory.md §3.4)."""

    def __init__(self, *args: Any, **fields: Any) -> None:
        if args:  # pydantic's own message ("BaseModel.__init__() takes 1 positional argument") names neither
            own = [f for f in type(self).model_fields if f not in Policy.model_fields]
            first = "num_particles" if "num_particles" in own else (own or ["seed"])[0]
            raise TypeError(f"{type(self).__name__}() takes keyword arguments only, got {len(args)} positional; "
                            f"e.g. {type(self).__name__}({first}={args[0]!r})")
        super().__init__(**fields)

    @model_validator(mode="before")
    @classmethod
    def _population_size_name(cls, data: Any) -> Any:
        """`num_particles` is the population size of every policy; the older per-policy names
        (`n`, `num_samples`) still work, with a DeprecationWarning naming the new one."""
        if isinstance(data, dict) and "num_particles" in cls.model_fields:
            for old in ("n", "num_samples"):
                if old in data and old not in cls.model_fields:
                    if "num_particles" in data:
                        raise ValueError(f"{cls.__name__}: give num_particles only (not also its old name {old!r})")
                    warnings.warn(f"{cls.__name__}({old}=...) is deprecated: the population size of every policy is "
                                  "num_particles", DeprecationWarning, stacklevel=4)
                    data = {**data, "num_particles": data[old]}
                    del data[old]
        return data

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: Any) -> Any:
        if isinstance(value, Runtime) or value in ("local", "ray") or isinstance(value, dict):
            return value
        raise ValueError(f"runtime must be 'local', 'ray' or a swarm Runtime, got {value!r}")

    def describe(self) -> dict[str, Any]:
        return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                for k, v in self.__dict__.items() if k != "listeners"}

    def run(self, program: Callable[..., Any], *args: Any, **kwargs: Any) -> Result:
        """Run `program(*args, **kwargs)` under this policy and return the weighted population."""
        return self._sync(self.run_async(program, *args, **kwargs), "run")

    def _sync(self, coroutine: Any, method: str) -> Any:
        """Run the `<method>_async` coroutine to completion from synchronous code."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(boxed(coroutine)).value  # policies.sync_bridge: why boxed
        if in_plain_program() or in_plain_program_body():  # nested in a plain program: the loop is the outer run's
            return run_in_own_thread(coroutine)
        coroutine.close()
        raise BlockingRunError(f"{type(self).__name__}.{method}() was called inside a running event loop; "
                           f"use `await {type(self).__name__}.{method}_async(...)` there")

    def resume(self, directory: Any, program: Callable[..., Any] | None = None, *args: Any, **kwargs: Any) -> Any:
        """Only the policies that checkpoint resume (`policies.pausing.Pausable`); any other says so,
        naming them, rather than raising an AttributeError."""
        raise TypeError(_cannot_resume(self))

    async def resume_async(self, directory: Any, program: Callable[..., Any] | None = None, *args: Any,
                           **kwargs: Any) -> Any:
        raise TypeError(_cannot_resume(self))

    def stream(self, program: Callable[..., Any], *args: Any, **kwargs: Any) -> "RunStream":
        """Run `program(*args, **kwargs)` as an iterator of typed events (`async for`, or a plain `for`
        outside an event loop): steps with ESS and log Z, the heaviest particle's text as it grows,
        and last the `Result` (see policies.streaming)."""
        from policies.streaming import RunStream

        return RunStream(self, program, args, kwargs)

    def stream_async(self, program: Callable[..., Any], *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """The async generator of `stream`'s events; closing it early cancels the run."""
        return self.stream(program, *args, **kwargs).events()

    async def run_async(self, program: Callable[..., Any], *args: Any, **kwargs: Any) -> Result:
        runtime = make_runtime(self.runtime)
        ctx = RunContext(self, program, runtime)
        ctx.args, ctx.kwargs = args, kwargs
        await runtime.start()
        try:
            with relaxed_gc(), new_run_scope():
                try:
                    result = await self._run(ctx, args, kwargs)
                finally:
                    await ctx.release()
        except BaseException as exc:
            ctx.emit_end(None, exc)
            raise
        finally:
            if runtime is not self.runtime:
                await runtime.aclose()
        ctx.emit_end(result)
        return result

    @abc.abstractmethod
    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        """The algorithm."""


def _jsonable_arguments(args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The program's arguments for listeners: plain JSON values as they are, anything else as repr."""
    def plain(value: Any) -> Any:
        if isinstance(value, (str, int, float, bool, type(None))):
            return value
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return repr(value)
    return {"args": plain(list(args)), "kwargs": plain(kwargs)}


def _cannot_resume(policy: Policy) -> str:
    from policies.pausing import Pausable

    resumable = sorted({cls.__name__ for cls in _subclasses(Policy) if issubclass(cls, Pausable)
                        and cls.__module__.startswith("policies.")})
    return (f"{type(policy).__name__} does not checkpoint, so it cannot resume a run; the policies that do "
            f"(with checkpoint=DIR): {', '.join(resumable)}")


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found
