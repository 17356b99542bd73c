"""Ancestral sampling: the proposal π itself."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, PrivateAttr

from policies.base import Policy, RunContext
from policies.checkpointing import RunCheckpoints
from policies.independent import particle_of, report_step, run_independent
from policies.pausing import Pausable, allow_pausing, mark_waiting
from swarm.checkpoint import PopulationCheckpoint
from swarm.execution import Segment, SegmentRunner
from swarm.pause import PausedStep
from swarm.result import Result


class Forward(Pausable, Policy):
    """Draw `num_particles` traces from the proposal π(τ) by running the program forward.

    Factors and guarantees are recorded in each trace but not applied: every particle has log
    weight 0 (a particle whose program raised has weight 0, i.e. log weight −∞). `log_evidence` is 0,
    the log-normaliser of π. This is the baseline every inference policy improves on.

    People: particles that ask a question nobody has answered (`swarm.ask_human`) wait at it while
    the others run to the end; the run is then written to `checkpoint` (or a new temporary
    directory) and returns `status="waiting"` with the `pending` questions, and
    `Forward(...).resume(dir, answers={...})` runs only the waiting particles on to their end
    (docs/human_in_the_loop.md). Nothing is written unless the run pauses.
    """

    num_particles: int = Field(1000, gt=0)
    batch_size: int | None = Field(None, gt=0)
    checkpoint: Path | None = None
    """Where a run that pauses for a person is written (None: a new temporary directory)."""
    answers: dict[str, Any] = Field(default_factory=dict)
    """Answers to the program's questions to a person, by question name or id."""
    _resume_state: PopulationCheckpoint | None = PrivateAttr(None)

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        checkpoints = RunCheckpoints.open(self, ctx, self._resume_state, eager=False)
        allow_pausing(checkpoints, self.answers)
        runner = ctx.runner(args, kwargs, kill=False)
        if self._resume_state is None:
            segments = await run_independent(ctx, runner, self.num_particles, batch_size=self.batch_size)
            step = PausedStep(0, list(range(len(segments))), segments)
        else:
            step = await self._continue_waiting(ctx, runner)
        if step:
            directory = checkpoints.save_paused(self, ctx, step)
            pending = step.pending(int)
            particles = [particle_of(ctx, i, s, 0.0 if s.status == "finished" else -math.inf)
                         for i, s in enumerate(step.segments)]
            return ctx.result(mark_waiting(particles, pending), 0.0, status="waiting", pending=pending,
                              checkpoint=str(directory))
        return self._forward_result(ctx, step.segments)

    async def _continue_waiting(self, ctx: RunContext, runner: SegmentRunner) -> PausedStep:
        """A resumed run: the executions that waited, replayed up to their question and run on with
        the answers; the others are the recorded ones."""
        state = self._resume_state
        assert state is not None and state.last is not None and state.last.paused is not None
        ctx.diagnostics = state.last.diagnostics.model_copy(deep=True)
        ctx.started -= state.last.elapsed_s
        step = PausedStep.from_state(state.last.paused)
        step.merge(await ctx.advance(runner, step.resume_tasks(int, lambda i: [], None)))
        ctx.check_lost(step.segments)
        return step

    def _forward_result(self, ctx: RunContext, segments: list[Segment]) -> Result:
        log_w = np.array([0.0 if s.status == "finished" else -math.inf for s in segments])
        report_step(ctx, segments, log_w, 0.0)
        return ctx.result([particle_of(ctx, i, s, float(lw)) for i, (s, lw) in enumerate(zip(segments, log_w))], 0.0)
