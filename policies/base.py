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
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.gc_tuning import relaxed_gc
from swarm.listeners import Broadcaster, ParticleStep, RunFinished, RunStarted, StepRecord
from swarm.population import ess as population_ess
from swarm.population import normalized_weights
from swarm.result import Diagnostics, Result
from swarm.runtime import new_run_scope
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


class RunContext:
    """The per-run state a policy works with."""

    def __init__(self, policy: "Policy", program: Callable[..., Any], runtime: Runtime) -> None:
        self.policy = policy
        self.program = program
        self.runtime = runtime
        self.seed: int = policy.seed if policy.seed is not None else secrets.randbits(63)
        self.run_id = uuid.uuid4().hex[:16]
        self.broadcaster = Broadcaster(policy.listeners)
        self.started = time.perf_counter()
        self.diagnostics = Diagnostics()
        self.budget = policy.budget

    # -- execution ---------------------------------------------------------------------------
    def runner(self, args: tuple, kwargs: dict, *, beta: float | None = None, kill: bool = True) -> SegmentRunner:
        return SegmentRunner(self.program, args, kwargs, seed=self.seed, beta=beta, kill=kill)

    async def advance(self, runner: SegmentRunner, tasks: list[SegmentTask]) -> list[Segment]:
        """Run segments on the runtime and account for their tokens, calls and deaths."""
        segments = await self.runtime.run_segments(runner, tasks)
        self.account(segments)
        return segments

    def account(self, segments: Sequence[Segment]) -> None:
        """Add segments' tokens, LLM calls and deaths to the run's diagnostics."""
        for seg in segments:
            self.diagnostics.tokens += seg.tokens
            self.diagnostics.llm_calls += seg.llm_calls
            if seg.status in ("dead", "failed") and seg.site:
                self.diagnostics.deaths[seg.site] = self.diagnostics.deaths.get(seg.site, 0) + 1

    def out_of_budget(self) -> str | None:
        if self.budget is None:
            return None
        reason = self.budget.exceeded(self.diagnostics.tokens, self.diagnostics.llm_calls,
                                      time.perf_counter() - self.started)
        if reason:
            self.diagnostics.stopped_by = reason
        return reason

    def step_rng(self, *key: int) -> np.random.Generator:
        """A generator for the policy's own choices (resampling), addressed by the run seed and key."""
        return np.random.default_rng([self.seed & (2**63 - 1), *key])

    # -- listeners ---------------------------------------------------------------------------
    def emit_start(self, num_particles: int) -> None:
        if self.broadcaster:
            self.broadcaster.emit("on_run_start", RunStarted(
                run_id=self.run_id, policy=type(self.policy).__name__, program=getattr(self.program, "__qualname__", repr(self.program)),
                config=self.policy.describe(), num_particles=num_particles, runtime=self.runtime.name,
                started_at_ns=time.time_ns()))

    def emit_step(self, step: int, segments: Sequence[Segment | None], prefixes: Sequence[int],
                  ids: Sequence[int], parent_ids: Sequence[int | None], log_w: np.ndarray,
                  increments: np.ndarray, log_evidence: float, started_ns: int,
                  ancestors: np.ndarray | None = None, offspring_ids: Sequence[int] | None = None) -> None:
        """Report one population step; `segments[i]` is None for a particle that did not move."""
        if not self.broadcaster:
            return
        w = normalized_weights(log_w) if np.any(log_w > -math.inf) else np.zeros(len(log_w))
        particles = []
        for i, seg in enumerate(segments):
            if seg is None:
                continue
            particles.append(ParticleStep(
                particle_id=ids[i], parent_id=parent_ids[i], index=i, step=step, status=_status(seg),
                site=seg.site if seg.status == "running" else None, log_weight=float(log_w[i]),
                log_increment=float(increments[i]), normalized_weight=float(w[i]),
                new_events=list(seg.trace.events[prefixes[i]:]), started_at_ns=seg.started_ns,
                ended_at_ns=seg.ended_ns, value=seg.value if seg.status == "finished" else None,
                killed_by=seg.site if seg.status in ("dead", "failed") else None))
        self.broadcaster.emit("on_step", StepRecord(
            run_id=self.run_id, step=step, particles=particles, log_weights=[float(x) for x in log_w],
            particle_ids=[int(i) for i in ids], ess=float(population_ess(log_w)) if len(log_w) else 0.0,
            log_evidence=float(log_evidence), resampled=ancestors is not None,
            ancestors=None if ancestors is None else [int(a) for a in ancestors],
            offspring_ids=None if offspring_ids is None else list(offspring_ids),
            started_at_ns=started_ns, ended_at_ns=time.time_ns(),
            tokens=self.diagnostics.tokens, llm_calls=self.diagnostics.llm_calls))

    def emit_end(self, result: Result | None, error: BaseException | None = None) -> None:
        if not self.broadcaster:
            return
        record = RunFinished(run_id=self.run_id, policy=type(self.policy).__name__, ended_at_ns=time.time_ns(),
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
        self.broadcaster.emit("on_run_end", record)

    def result(self, policy: str, particles: list, log_evidence: float, **extra: Any) -> Result:
        self.diagnostics.wall_time_s = time.perf_counter() - self.started
        return Result(policy=policy, particles=particles, log_evidence=float(log_evidence), seed=self.seed,
                      diagnostics=self.diagnostics, **extra)


def _status(seg: Segment) -> str:
    return "dead" if seg.status in ("dead", "failed") else seg.status


class Policy(BaseModel, abc.ABC):
    """Base class of every inference policy."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=True)

    seed: int | None = None
    """Makes the run reproducible: the same seed gives the same result, on every runtime."""
    runtime: Any = "local"
    """"local" (asyncio, one process), "ray", or a swarm Runtime instance."""
    listeners: list[Any] = Field(default_factory=list)
    budget: Budget | None = None

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
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run_async(program, *args, **kwargs))
        raise RuntimeError(f"{type(self).__name__}.run() was called inside a running event loop; "
                           f"use `await {type(self).__name__}.run_async(...)` there")

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
        await runtime.start()
        try:
            with relaxed_gc(), new_run_scope():
                result = await self._run(ctx, args, kwargs)
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
