"""Sequential Monte Carlo over program executions (observe-based SMC, LLaMPPL's smc_standard)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, PrivateAttr

from policies.base import Policy, RunContext
from policies.checkpointing import RunCheckpoints
from policies.pausing import Pausable, allow_pausing, install_answers, mark_waiting
from swarm.checkpoint import PopulationCheckpoint
from swarm.coordinator import Coordinator, StepOutcome
from swarm.execution import Segment, SegmentTask
from swarm.population import count_distinct
from swarm.result import Result, StepStats


class SMC(Pausable, Policy):
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

    People: a particle that asks a question nobody has answered (`swarm.ask_human`) waits at it; the
    others finish the step, the run is checkpointed and returns `status="waiting"` with the `pending`
    questions. `SMC(...).resume(dir, answers={...})` runs only the waiting particles on to the step's
    sync point, then weighs and resamples the step as usual (docs/human_in_the_loop.md).
    """

    num_particles: int = Field(1000, gt=0)
    resampling: Literal["multinomial", "systematic", "stratified", "residual"] = "systematic"
    ess_threshold: float = Field(0.5, ge=0.0, le=1.0)
    max_steps: int | None = Field(None, gt=0)
    checkpoint: Path | None = None
    """A directory to checkpoint the population into (None: no checkpoints)."""
    checkpoint_every: int = Field(1, gt=0)
    answers: dict[str, Any] = Field(default_factory=dict)
    """Answers to the questions the program puts to a person (`swarm.ask_human`), by question name
    or id. A question without one pauses the run (docs/human_in_the_loop.md)."""
    _resume_state: PopulationCheckpoint | None = PrivateAttr(None)

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        checkpoints = RunCheckpoints.open(self, ctx, self._resume_state)
        allow_pausing(checkpoints, self.answers)
        swarm = ctx.coordinator(ctx.runner(args, kwargs), self.num_particles)
        if self._resume_state is not None:
            checkpoints.restore(ctx, swarm)
            if checkpoints.still_out_of_budget(ctx):
                return self.result(ctx, swarm)
        await self.run_population(ctx, swarm, checkpoints)
        if swarm.paused is not None:
            return self.waiting_result(ctx, swarm, checkpoints)
        return self.result(ctx, swarm)

    async def run_population(self, ctx: RunContext, swarm: Coordinator, checkpoints: RunCheckpoints) -> None:
        """The SMC loop: advance, weigh, maybe resample, report; until every particle has finished
        (or some wait for a person's answer: then `swarm.paused` is set)."""
        install_answers(self.answers)
        while swarm.running().size:
            if self.max_steps is not None and swarm.step >= self.max_steps and swarm.paused is None:
                ctx.diagnostics.stopped_by = "max_steps"
                break
            step = await swarm.advance(self.advance_hook(ctx))
            if step is None:
                return
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
            unique_ancestors=None if step.ancestors is None else count_distinct(step.ancestors)))
        ctx.emit_step(step)

    def result(self, ctx: RunContext, swarm: Coordinator) -> Result:
        ctx.diagnostics.genealogy = swarm.genealogy.rows()
        return ctx.result(swarm.particles(), swarm.log_evidence())

    def waiting_result(self, ctx: RunContext, swarm: Coordinator, checkpoints: RunCheckpoints) -> Result:
        """The run waits for a person: write it (population before the paused step, and the step so
        far) and return that population, with the pending questions and the checkpoint directory.
        Its `log_evidence` is the estimate after the last complete step."""
        assert swarm.paused is not None
        directory = checkpoints.save_paused(self, ctx, swarm.paused, swarm)
        pending = swarm.pending()
        tokens, calls = swarm.paused.tokens()  # spent by the paused step so far (the frame keeps them apart)
        ctx.diagnostics.tokens += tokens
        ctx.diagnostics.llm_calls += calls
        ctx.diagnostics.genealogy = swarm.genealogy.rows()
        return ctx.result(mark_waiting(swarm.particles(), pending), swarm.log_evidence(), status="waiting",
                          pending=pending, checkpoint=str(directory))

    # -- resuming (policies.pausing.Pausable.resume) ---------------------------------------------
    def _resumable(self) -> bool:
        return type(self)._run is SMC._run
