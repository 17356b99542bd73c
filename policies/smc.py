"""Sequential Monte Carlo over program executions (observe-based SMC, LLaMPPL's smc_standard)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, PrivateAttr

from policies.base import Policy, RunContext
from policies.checkpointing import RunCheckpoints
from swarm.checkpoint import CheckpointError, PopulationCheckpoint
from swarm.coordinator import Coordinator, StepOutcome
from swarm.execution import Segment, SegmentTask
from swarm.result import Result, StepStats


class SMC(Policy):
    """Sequential Monte Carlo with resampling on low effective sample size (docs/theory.md §3).

    Particles synchronise at each weighting statement (the k-th `factor`/`guarantee` of every live
    particle is step k). After each step, with W the log weights of the active particles:

        w̄ = exp(W − logsumexp W),   ESS = 1/Σ w̄²,
        if ESS < ess_threshold·N:  aᵢ ~ resample(w̄),  particles ← particles[a],  W ← logmeanexp(W)·1,

    and log Ẑ = logmeanexp(W_final); Ẑ is unbiased for Z. Finished particles wait for the others.
    A surviving particle's execution continues live; the second and later offspring of a parent are
    rebuilt by replaying the parent's events (no LLM call) and then draw their own futures from their
    own random streams. Shaping factors enter W while a particle runs and are removed when it
    finishes, so they change which particles survive but not the target. Lost particles (their LLM or
    tool call failed for good) are left out of W, the ESS and Ẑ, and replaced at the next resampling.

    Checkpoints: with `checkpoint=<dir>` each `checkpoint_every`-th step appends what it added to the
    run's log there (`swarm.checkpoint`), and the run's LLM responses are journaled beside it;
    `SMC(...).resume(dir, program, *args)` continues a killed run from its last checkpoint and
    returns exactly the result of the uninterrupted run, without repeating a completed LLM call.
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
        checkpoints = RunCheckpoints.open(self, ctx, self._resume_state)
        swarm = ctx.coordinator(ctx.runner(args, kwargs), self.num_particles)
        if self._resume_state is not None:
            checkpoints.restore(ctx, swarm)
            if checkpoints.still_out_of_budget(ctx):
                return self.result(ctx, swarm)
        await self.run_population(ctx, swarm, checkpoints)
        return self.result(ctx, swarm)

    async def run_population(self, ctx: RunContext, swarm: Coordinator, checkpoints: RunCheckpoints) -> None:
        """The SMC loop: advance, weigh, maybe resample, report; until every particle has finished."""
        while swarm.running().size:
            if self.max_steps is not None and swarm.step >= self.max_steps:
                ctx.diagnostics.stopped_by = "max_steps"
                break
            step = await swarm.advance(self.advance_hook(ctx))
            if step.ess < self.ess_threshold * swarm.active_size() and swarm.running().size:
                swarm.resample(self.resampling, ctx.step_rng(step.step))
            self.report(ctx, swarm, step)
            out_of_budget = ctx.out_of_budget()
            checkpoints.save(ctx, swarm, final=bool(out_of_budget) or not swarm.running().size)
            if out_of_budget:
                break

    def advance_hook(self, ctx: RunContext) -> Callable[[list[Segment], list[SegmentTask]], Any] | None:
        """A hook run on each step's segments before they are weighed (TwistedSMC adds its critic)."""
        return None

    def report(self, ctx: RunContext, swarm: Coordinator, step: StepOutcome) -> None:
        swarm.record_genealogy()
        ctx.diagnostics.steps.append(StepStats(
            step=step.step, ess=step.ess, log_evidence=step.log_evidence, resampled=step.ancestors is not None,
            num_alive=swarm.population.alive(),
            unique_ancestors=None if step.ancestors is None else len(set(step.ancestors.tolist()))))
        ctx.emit_step(step)

    def result(self, ctx: RunContext, swarm: Coordinator) -> Result:
        ctx.diagnostics.genealogy = swarm.genealogy.to_lists()
        return ctx.result(swarm.particles(), swarm.log_evidence())

    # -- resuming -------------------------------------------------------------------------------
    def resume(self, directory: str | os.PathLike[str], program: Callable[..., Any], *args: Any, **kwargs: Any) -> Result:
        """Continue the run checkpointed in `directory` (same program, arguments and settings; the
        seed is the checkpoint's). Checkpoints keep being written there."""
        return self._sync(self.resume_async(directory, program, *args, **kwargs), "resume")

    async def resume_async(self, directory: str | os.PathLike[str], program: Callable[..., Any], *args: Any,
                           **kwargs: Any) -> Result:
        if type(self)._run is not SMC._run:
            raise CheckpointError(Path(directory), f"{type(self).__name__} overrides SMC._run and does not support resume")
        state = RunCheckpoints.load(self, directory, program)
        policy = self.model_copy(update={"checkpoint": Path(directory), "seed": state.seed})
        policy._resume_state = state
        return await policy.run_async(program, *args, **kwargs)
