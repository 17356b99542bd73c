"""Self-normalised importance sampling with the program as its own proposal."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from policies.base import Policy, RunContext
from policies.independent import particle_of, run_independent
from swarm.errors import NoSurvivingParticles
from swarm.population import logmeanexp
from swarm.result import Result


class Importance(Policy):
    """Self-normalised importance sampling (SNIS, plp-theory §1.1).

    Draw τ₁…τ_N ~ π independently; weight each by w(τ) = Φ(τ) · Π_sites p/q (the second factor is 1
    unless a site used a custom proposal). Then

        Ẑ = (1/N) Σ w(τᵢ)  (unbiased for Z),    E_p[h] ≈ Σ w(τᵢ) h(τᵢ) / Σ w(τᵢ)  (consistent).
    """

    num_particles: int = Field(1000, gt=0)
    batch_size: int | None = Field(None, gt=0)

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        runner = ctx.runner(args, kwargs)
        segments = await run_independent(ctx, runner, self.num_particles, batch_size=self.batch_size)
        log_w = np.array([s.log_weight() for s in segments])
        log_z = logmeanexp(log_w)
        ctx.emit_step(0, segments, [0] * len(segments), list(range(len(segments))), [None] * len(segments),
                      log_w, log_w, log_z, segments[0].started_ns if segments else 0)
        if not np.any(log_w > -np.inf):
            raise NoSurvivingParticles(ctx.diagnostics.deaths, policy="Importance")
        particles = [particle_of(i, s, float(lw)) for i, (s, lw) in enumerate(zip(segments, log_w))]
        return ctx.result("Importance", particles, log_z)
