"""Self-normalised importance sampling with the program as its own proposal."""

from __future__ import annotations

from pydantic import Field

from policies.base import Policy, RunContext
from policies.independent import particles_of, weighted_independent
from swarm.result import Result


class Importance(Policy):
    """Self-normalised importance sampling (SNIS, docs/theory.md §2.1).

    Draw τ₁…τ_N ~ π independently; weight each by w(τ) = Φ(τ) · Π_sites p/q (the second factor is 1
    unless a site used a custom proposal). Then

        Ẑ = (1/N) Σ w(τᵢ)  (unbiased for Z),    E_p[h] ≈ Σ w(τᵢ) h(τᵢ) / Σ w(τᵢ)  (consistent).
    """

    num_particles: int = Field(1000, gt=0)
    batch_size: int | None = Field(None, gt=0)

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        runner = ctx.runner(args, kwargs)
        segments, log_w, log_z = await weighted_independent(ctx, runner, self.num_particles, batch_size=self.batch_size)
        return ctx.result(particles_of(ctx, segments, log_w), log_z)
