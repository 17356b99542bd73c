"""Independent draws that may pause for a person: what Forward, Importance and BestOfN share.

    draws = await self.draws(ctx, args, kwargs)      # every execution's segment ...
    if isinstance(draws, Result):                    # ... or the waiting Result: some wait for a person
        return draws

The N executions are independent, so a pause changes nothing about the others: those that do not
ask run to their end, those that ask wait at their question. The run is then written to the
policy's `checkpoint` (or a new temporary directory) and returns `status="waiting"` with the
`pending` questions; `policy.resume(dir, answers={...})` replays only the waiting executions up to
their question and runs them on. The resumed draws are those of one uninterrupted run given the
answers up front, so whatever the policy computes from them (weights, Ẑ, a selection) is too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr

from policies.base import RunContext
from policies.checkpointing import RunCheckpoints
from policies.independent import log_evidence, particle_of, run_independent
from policies.pausing import Pausable, allow_pausing, mark_waiting
from swarm.checkpoint import PopulationCheckpoint
from swarm.execution import Segment, SegmentRunner
from swarm.pause import PausedStep
from swarm.result import Result


class PausableDraws(Pausable, BaseModel):
    """The `num_particles` independent draws of a policy that can pause (see the module docstring).
    The policy declares `num_particles` and `batch_size`."""

    checkpoint: Path | None = None
    """Where a run that pauses for a person is written (None: a new temporary directory)."""
    answers: dict[str, Any] = Field(default_factory=dict)
    """Answers to the program's questions to a person, by question name or id."""
    _resume_state: PopulationCheckpoint | None = PrivateAttr(None)

    async def draws(self, ctx: RunContext, args: tuple, kwargs: dict, *, kill: bool = True) -> list[Segment] | Result:
        """Every execution's segment (finished, dead or lost), or the waiting `Result` when some
        wait for a person (weighed by `waiting_weights`)."""
        checkpoints = RunCheckpoints.open(self, ctx, self._resume_state, eager=False)
        allow_pausing(checkpoints, self.answers)
        runner = ctx.runner(args, kwargs, kill=kill)
        if self._resume_state is None:
            segments = await run_independent(ctx, runner, self.num_particles, batch_size=self.batch_size)  # type: ignore[attr-defined]
            step = PausedStep(0, list(range(len(segments))), segments)
        else:
            step = await self._continue_waiting(ctx, runner)
        if not step:
            return step.segments
        directory = checkpoints.save_paused(self, ctx, step)
        pending = step.pending(int)
        log_w, log_z = self.waiting_weights(step.segments)
        particles = [particle_of(ctx, i, s, float(lw)) for i, (s, lw) in enumerate(zip(step.segments, log_w))]
        return ctx.result(mark_waiting(particles, pending), log_z, status="waiting", pending=pending,
                          checkpoint=str(directory))

    def waiting_weights(self, segments: list[Segment]) -> tuple[np.ndarray, float]:
        """The log weights and log Ẑ of a waiting result: each execution's log weight so far (a
        waiting one's up to its question) and their mean over those not lost, an estimate up to the
        pause, not a posterior."""
        log_w = np.array([s.target_log_weight if s.status == "waiting" else s.log_weight() for s in segments])
        return log_w, log_evidence(segments, log_w)

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
