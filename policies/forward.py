"""Ancestral sampling: the proposal π itself."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from policies.base import Policy, RunContext
from policies.independent import particle_of, report_step, run_independent
from swarm.result import Result


class Forward(Policy):
    """Draw `num_particles` traces from the proposal π(τ) by running the program forward.

    Factors and guarantees are recorded in each trace but not applied: every particle has log
    weight 0 (a particle whose program raised has weight 0, i.e. log weight −∞). `log_evidence` is 0,
    the log-normaliser of π. This is the baseline every inference policy improves on.
    """

    num_particles: int = Field(1000, gt=0)
    batch_size: int | None = Field(None, gt=0)

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        runner = ctx.runner(args, kwargs, kill=False)
        segments = await run_independent(ctx, runner, self.num_particles, batch_size=self.batch_size)
        log_w = np.array([0.0 if s.status == "finished" else -math.inf for s in segments])
        report_step(ctx, segments, log_w, 0.0)
        return ctx.result([particle_of(ctx, i, s, float(lw)) for i, (s, lw) in enumerate(zip(segments, log_w))], 0.0)
