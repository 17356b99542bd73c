"""Self-normalised importance sampling with the program as its own proposal."""

from __future__ import annotations

from pydantic import Field

from policies.base import Policy, RunContext
from policies.independent import particles_of, weigh_independent
from policies.pausable_draws import PausableDraws
from swarm.result import Result


class Importance(PausableDraws, Policy):
    """Self-normalised importance sampling (SNIS, docs/theory.md §2.1).

    Draw τ₁…τ_N ~ π independently; weight each by w(τ) = Φ(τ) · Π_sites p/q (the second factor is 1
    unless a site used a custom proposal). Then

        Ẑ = (1/N) Σ w(τᵢ)  (unbiased for Z),    E_p[h] ≈ Σ w(τᵢ) h(τᵢ) / Σ w(τᵢ)  (consistent).

    People: draws that ask a question nobody has answered wait at it while the others run to their
    end; the run then returns `status="waiting"` and `resume(dir, answers={...})` finishes it, with
    the weights and Ẑ of one run given the answers up front (`policies.pausable_draws`).
    """

    num_particles: int = Field(1000, gt=0)
    batch_size: int | None = Field(None, gt=0)

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        draws = await self.draws(ctx, args, kwargs)
        if isinstance(draws, Result):  # some wait for a person
            return draws
        segments, log_w, log_z = weigh_independent(ctx, draws)
        return ctx.result(particles_of(ctx, segments, log_w), log_z)
