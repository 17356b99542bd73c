"""Ancestral sampling: the proposal π itself."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from policies.base import Policy, RunContext
from policies.independent import particle_of, report_step
from policies.pausable_draws import PausableDraws
from swarm.execution import Segment
from swarm.result import Result


class Forward(PausableDraws, Policy):
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

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        draws = await self.draws(ctx, args, kwargs, kill=False)
        return draws if isinstance(draws, Result) else self._forward_result(ctx, draws)

    def waiting_weights(self, segments: list[Segment]) -> tuple[np.ndarray, float]:
        """As a finished run's: 0 for a finished execution, −∞ otherwise; log Ẑ = 0 (π's own)."""
        return np.array([0.0 if s.status == "finished" else -math.inf for s in segments]), 0.0

    def _forward_result(self, ctx: RunContext, segments: list[Segment]) -> Result:
        log_w = np.array([0.0 if s.status == "finished" else -math.inf for s in segments])
        report_step(ctx, segments, log_w, 0.0)
        return ctx.result([particle_of(ctx, i, s, float(lw)) for i, (s, lw) in enumerate(zip(segments, log_w))], 0.0)
