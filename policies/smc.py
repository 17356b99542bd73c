"""Sequential Monte Carlo over program executions (observe-based SMC, LLaMPPL's smc_standard)."""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field, PrivateAttr

from policies.base import Policy, RunContext
from swarm.checkpoint import CHECKPOINT_DIR_KEY, Checkpointer, CheckpointError, PopulationCheckpoint, ScopedHandlers
from swarm.errors import NoSurvivingParticles
from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.population import Genealogy, ess, logmeanexp, normalized_weights
from swarm.resampling import resample
from swarm.result import Particle, Result, StepStats
from swarm.runtime import run_scope

_CHECKPOINTER_KEY = "swarm.checkpointer"
_NOT_RESULT_SETTINGS = {"runtime", "listeners", "budget", "seed", "checkpoint", "checkpoint_every"}
"""Policy fields that do not change a seeded result (everything else must match to resume)."""


class ParticlePopulation:
    """N particles between steps: their last segment, ids, lineage and log weights.

    `log_w[i]` is particle i's unnormalised log weight; `eff[i]` the effective log weight of its
    trace at its last step (target weight plus current twist), so a step adds eff_new − eff_old.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.segments: list[Segment | None] = [None] * n
        self.ids = list(range(n))
        self.parents: list[int | None] = [None] * n
        self.log_w = np.zeros(n)
        self.eff = np.zeros(n)
        self.next_id = n
        self.resume: list[int | None] = list(range(n))
        """The stream whose suspended execution particle i may continue (None: replay its trace)."""

    def running(self) -> list[int]:
        return [i for i, s in enumerate(self.segments) if s is None or s.status == "running"]

    def tasks(self, indices: list[int], stop_at: int | None) -> list[SegmentTask]:
        return [SegmentTask(stream=self.ids[i], prefix=None if self.segments[i] is None else self.segments[i].trace,
                            stop_at=stop_at, continue_from=self.resume[i]) for i in indices]

    def update(self, indices: list[int], segments: list[Segment]) -> np.ndarray:
        """Store new segments and add their weight increments; return the increments (per index)."""
        inc = np.zeros(self.n)
        for i, seg in zip(indices, segments):
            new = seg.log_weight()
            inc[i] = new - self.eff[i] if new > -math.inf else -math.inf
            self.log_w[i] = self.log_w[i] + inc[i] if new > -math.inf else -math.inf
            self.eff[i] = new
            self.segments[i] = seg
        return inc

    def resample(self, ancestors: np.ndarray) -> list[int]:
        """Replace the population by copies of `ancestors`, each with a new id; weights reset to the
        mean weight logmeanexp(W) so the evidence estimate stays unbiased."""
        mean = logmeanexp(self.log_w)
        self.segments = [self.segments[a] for a in ancestors]
        self.eff = self.eff[ancestors]
        self.parents = [self.ids[a] for a in ancestors]
        claimed: set[int] = set()
        self.resume = []
        for parent in self.parents:  # the first offspring of each parent may continue its execution
            self.resume.append(None if parent in claimed else parent)
            claimed.add(parent)
        self.ids = list(range(self.next_id, self.next_id + self.n))
        self.next_id += self.n
        self.log_w = np.full(self.n, mean)
        return self.ids

    def particles(self) -> list[Particle]:
        out = []
        for i, seg in enumerate(self.segments):
            status = "running" if seg is None else seg.status
            out.append(Particle(id=self.ids[i], value=None if seg is None or seg.status != "finished" else seg.value,
                                log_weight=float(self.log_w[i]), trace=seg.trace if seg else _empty_trace(),
                                status=status, parent_id=self.parents[i]))
        return out


def _empty_trace():
    from swarm.trace import Trace

    return Trace()


class SMC(Policy):
    """Sequential Monte Carlo with resampling on low effective sample size.

    Particles synchronise at each weighting statement (the k-th `factor`/`guarantee` of every live
    particle is step k). After each step, with W the log weights:

        w̄ = exp(W − logsumexp W),   ESS = 1/Σ w̄²,
        if ESS < ess_threshold·N:  aᵢ ~ resample(w̄),  particles ← particles[a],  W ← logmeanexp(W)·1,

    and log Ẑ = logmeanexp(W_final); Ẑ is unbiased for Z. Finished particles wait for the others.
    Offspring continue independently: each re-executes its ancestor's trace by replay and then draws
    its own future from its own random stream. Shaping factors enter W while a particle runs and are
    removed when it finishes, so they change which particles survive but not the target.

    Checkpoints: with `checkpoint=<dir>` the population is written there (atomically, see
    `swarm.checkpoint`) after every `checkpoint_every`-th step, and the run's LLM responses are
    journaled beside it; `SMC(...).resume(dir, program, *args)` continues a killed run from its last
    checkpoint and returns exactly the result of the uninterrupted run, without repeating a completed
    LLM call.
    """

    num_particles: int = Field(1000, gt=0)
    resampling: Literal["multinomial", "systematic", "stratified", "residual"] = "systematic"
    ess_threshold: float = Field(0.5, ge=0.0, le=1.0)
    max_steps: int | None = Field(None, gt=0)
    checkpoint: Path | None = None
    """A directory to checkpoint the population into (None: no checkpoints)."""
    checkpoint_every: int = Field(1, gt=0)
    _resume_state: PopulationCheckpoint | None = PrivateAttr(None)

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        runner = ctx.runner(args, kwargs)
        if self._resume_state is not None:
            pop, genealogy, step = self._restore(ctx, self._resume_state)
            self._scope_segments(ctx, runner)
            if ctx.diagnostics.stopped_by is not None:  # the run had stopped on its budget: still out of it?
                ctx.diagnostics.stopped_by = None
                if ctx.out_of_budget():
                    ctx.diagnostics.genealogy = genealogy.to_lists()
                    return ctx.result(type(self).__name__, pop.particles(), logmeanexp(pop.log_w))
            return await self.run_population(ctx, runner, pop, first_step=step + 1, genealogy=genealogy)
        self._open_checkpoints(fresh=True)
        self._scope_segments(ctx, runner)
        return await self.run_population(ctx, runner, ParticlePopulation(self.num_particles))

    async def run_population(self, ctx: RunContext, runner: SegmentRunner, pop: ParticlePopulation,
                             first_step: int = 1, genealogy: Genealogy | None = None) -> Result:
        genealogy = genealogy if genealogy is not None else Genealogy(pop.n)
        step = first_step - 1
        while True:
            running = pop.running()
            if not running:
                break
            if self.max_steps is not None and step >= self.max_steps:
                ctx.diagnostics.stopped_by = "max_steps"
                break
            step += 1
            started = time.time_ns()
            prefixes = [0 if s is None else len(s.trace) for s in pop.segments]
            segments = await self.advance(ctx, runner, pop.tasks(running, stop_at=step))
            increments = pop.update(running, segments)
            pop.resume = list(pop.ids)
            moved: list[Segment | None] = [None] * pop.n
            for i, seg in zip(running, segments):
                moved[i] = seg
            self._check_alive(ctx, pop)
            self._step(ctx, pop, genealogy, step, moved, prefixes, increments, started)
            out_of_budget = ctx.out_of_budget()
            self._save_checkpoint(ctx, runner, pop, genealogy, step, final=bool(out_of_budget))  # records the stop
            if out_of_budget:
                break
        ctx.diagnostics.genealogy = genealogy.to_lists()
        return ctx.result(type(self).__name__, pop.particles(), logmeanexp(pop.log_w))

    async def advance(self, ctx: RunContext, runner: SegmentRunner, tasks: list[SegmentTask]) -> list[Segment]:
        """Run one step's segments. A hook for subclasses: TwistedSMC adds its critic's twist here."""
        return await ctx.advance(runner, tasks)

    def _check_alive(self, ctx: RunContext, pop: ParticlePopulation) -> None:
        if not np.any(pop.log_w > -math.inf):
            raise NoSurvivingParticles(ctx.diagnostics.deaths, policy=type(self).__name__)

    def _step(self, ctx: RunContext, pop: ParticlePopulation, genealogy: Genealogy, step: int,
              moved: list[Segment | None], prefixes: list[int], increments: np.ndarray, started: int) -> None:
        """Normalise, measure ESS, resample if it is low, report."""
        current_ess = ess(pop.log_w)
        log_z = logmeanexp(pop.log_w)
        ids, parents, log_w = list(pop.ids), list(pop.parents), pop.log_w.copy()
        ancestors = offspring = None
        if current_ess < self.ess_threshold * pop.n and pop.running():
            ancestors = resample(self.resampling, normalized_weights(pop.log_w), ctx.step_rng(step), pop.n)
            offspring = pop.resample(ancestors)
        genealogy.record(ancestors)
        alive = int(np.sum(pop.log_w > -math.inf))
        ctx.diagnostics.steps.append(StepStats(
            step=step, ess=current_ess, log_evidence=log_z, resampled=ancestors is not None, num_alive=alive,
            unique_ancestors=None if ancestors is None else int(len(np.unique(ancestors)))))
        ctx.emit_step(step, moved, prefixes, ids, parents, log_w, increments, log_z, started,
                      ancestors=ancestors, offspring_ids=offspring)

    # -- checkpoints ---------------------------------------------------------------------------
    def _open_checkpoints(self, fresh: bool) -> None:
        """Make the run's checkpoint directory known to this run (and to the agents' journal)."""
        if self.checkpoint is None:
            return
        checkpointer = Checkpointer(self.checkpoint, every=self.checkpoint_every)
        if fresh:
            checkpointer.start_fresh()
        scope = run_scope()
        scope[_CHECKPOINTER_KEY] = checkpointer
        scope[CHECKPOINT_DIR_KEY] = str(checkpointer.directory)

    def _scope_segments(self, ctx: RunContext, runner: SegmentRunner) -> None:
        """Segments learn the checkpoint directory (so agents journal there, in any process)."""
        if self.checkpoint is not None:
            runner.extra_handlers = ScopedHandlers(str(self.checkpoint), ctx.run_id, runner.extra_handlers)

    def _result_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.describe().items() if k not in _NOT_RESULT_SETTINGS}

    def _save_checkpoint(self, ctx: RunContext, runner: SegmentRunner, pop: ParticlePopulation,
                         genealogy: Genealogy, step: int, final: bool = False) -> None:
        checkpointer = run_scope().get(_CHECKPOINTER_KEY)
        if checkpointer is None or not checkpointer.due(step, final=final or not pop.running()):
            return
        checkpointer.save(PopulationCheckpoint(
            policy=type(self).__name__, config=self._result_settings(), program=runner.name, seed=ctx.seed,
            run_id=ctx.run_id, step=step, segments=list(pop.segments), ids=list(pop.ids),
            parents=list(pop.parents), log_w=pop.log_w.tolist(), eff=pop.eff.tolist(), resume=list(pop.resume),
            next_id=pop.next_id, genealogy=genealogy.to_lists(), diagnostics=ctx.diagnostics.model_copy(deep=True),
            elapsed_s=time.perf_counter() - ctx.started))

    def _restore(self, ctx: RunContext, state: PopulationCheckpoint) -> tuple[ParticlePopulation, Genealogy, int]:
        pop = ParticlePopulation(len(state.ids))
        pop.segments, pop.ids, pop.parents = list(state.segments), list(state.ids), list(state.parents)
        pop.log_w, pop.eff = np.array(state.log_w, dtype=float), np.array(state.eff, dtype=float)
        pop.resume, pop.next_id = list(state.resume), state.next_id
        ctx.run_id = state.run_id
        ctx.diagnostics = state.diagnostics.model_copy(deep=True)
        ctx.started -= state.elapsed_s
        self._open_checkpoints(fresh=False)
        return pop, Genealogy.from_lists(pop.n, state.genealogy), state.step

    def _check_resumable(self, state: PopulationCheckpoint, program: Callable[..., Any], where: Path) -> None:
        """Refuse a checkpoint that this policy and program would not continue exactly."""
        if type(self)._run is not SMC._run:
            raise CheckpointError(where, f"{type(self).__name__} overrides SMC._run and does not support resume")
        if state.policy != type(self).__name__:
            raise CheckpointError(where, f"written by {state.policy}, cannot be resumed by {type(self).__name__}")
        if self.seed is not None and self.seed != state.seed:
            raise CheckpointError(where, f"seed: the checkpoint's run used seed {state.seed}, this policy has {self.seed}")
        mine = self._result_settings()
        for key in sorted(set(mine) | set(state.config)):
            if mine.get(key) != state.config.get(key):
                raise CheckpointError(where, f"{key}: the checkpoint's run used {state.config.get(key)!r}, this policy "
                                             f"has {mine.get(key)!r}; resume with the same settings")
        name = SegmentRunner(program).name
        if name != state.program:
            raise CheckpointError(where, f"program: the checkpoint's run ran {state.program!r}, not {name!r}")

    def resume(self, directory: str | os.PathLike[str], program: Callable[..., Any], *args: Any, **kwargs: Any) -> Result:
        """Continue the run checkpointed in `directory` (same program, arguments and settings; the
        seed is the checkpoint's). Checkpoints keep being written there."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.resume_async(directory, program, *args, **kwargs))
        raise RuntimeError(f"{type(self).__name__}.resume() was called inside a running event loop; "
                           f"use `await {type(self).__name__}.resume_async(...)` there")

    async def resume_async(self, directory: str | os.PathLike[str], program: Callable[..., Any], *args: Any,
                           **kwargs: Any) -> Result:
        checkpointer = Checkpointer(directory)
        state = checkpointer.load()
        self._check_resumable(state, program, checkpointer.population_path)
        policy = self.model_copy(update={"checkpoint": Path(directory), "seed": state.seed})
        policy._resume_state = state
        return await policy.run_async(program, *args, **kwargs)
