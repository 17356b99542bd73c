"""Best-of-N: draw N complete executions, keep them all, and name the best one."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from policies.base import Policy, RunContext
from policies.independent import particles_of, weigh_independent
from policies.pausable_draws import PausableDraws
from swarm.execution import Segment
from swarm.result import Result


def best_index(scores: np.ndarray) -> int:
    """argmax_i scores[i], ties broken towards the lowest index (np.argmax keeps the first)."""
    return int(np.argmax(scores))


class BestOfN(PausableDraws, Policy):
    """Best-of-N selection over N independent executions τ₁…τ_N ~ π.

    **Claim.** It returns the draw with the largest score,

        i* = argmax_i s(τᵢ)   (ties → the lowest index i),

    where, with ``objective="weight"`` (the default), s(τ) = log w(τ) = log Φ(τ) + Σ_sites (log p − log q):
    the trace's potential (its reward or verifier score), corrected by p/q only at sites drawn from a
    custom proposal. This is the classic best-of-N *search*: it does not sample from
    p(τ) ∝ π(τ)Φ(τ), and as N → ∞ it converges to argmax_{τ ∈ supp π} w(τ), not to the MAP of p.
    With ``objective="joint"``, s(τ) = log π_model(τ) + log Φ(τ) = log of the unnormalised target
    p̃(τ), so i* is the most probable draw under p (the MAP among the N draws; `Enumerate`'s top path
    once N covers it).

    **What is returned.** Nothing is thrown away: `result.particles` holds all N draws with the
    importance weights of `Importance` (so `result.marginal()` is the SNIS estimate of p and
    `result.log_evidence` = log (1/N) Σ w(τᵢ), the same unbiased Ẑ: these are the same draws).
    The selection lives in `result.extra` (a `Result` has no policy-specific attributes):

    - ``extra["best"]``: the selected `Particle` (`result.extra["best"].value` is the answer);
    - ``extra["best_index"]``: i*, its index in `result.particles`;
    - ``extra["best_score"]``: s(τ_{i*}); ``extra["objective"]``: which score was used.

    A budget may stop the run early; the selection is then over the draws made. Draws that ask a
    person wait as in `Importance`; the selection is made once every draw has finished.
    """

    num_particles: int = Field(16, gt=0)
    """How many independent executions to draw."""
    batch_size: int | None = Field(None, gt=0)
    """Executions run at once (None: all n); the budget is checked between batches."""
    objective: Literal["weight", "joint"] = "weight"
    """The score maximised: "weight" (log w, the potential) or "joint" (log π + log w, the target)."""

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        draws = await self.draws(ctx, args, kwargs)
        if isinstance(draws, Result):  # some wait for a person
            return draws
        segments, log_w, log_z = weigh_independent(ctx, draws)
        scores = np.array([self._score(s, lw) for s, lw in zip(segments, log_w)])
        i_star = best_index(scores)
        particles = particles_of(ctx, segments, log_w)
        return ctx.result(particles, log_z, extra={
            "best": particles[i_star], "best_index": i_star, "best_score": float(scores[i_star]),
            "objective": self.objective})

    def _score(self, seg: Segment, log_w: float) -> float:
        if self.objective == "weight" or log_w == -math.inf:
            return float(log_w)
        return float(seg.trace.proposal_log_prob + log_w)
