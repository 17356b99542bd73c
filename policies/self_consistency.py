"""Self-consistency (Wang et al. 2022): estimate the answer marginal from N independent traces."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Callable, Hashable

import numpy as np
from pydantic import Field

from policies.base import Policy, RunContext
from policies.independent import particles_of, weighted_independent
from swarm.effects import NEEDS_LOG_Q, run_scope
from swarm.errors import SwarmError
from swarm.execution import Segment
from swarm.population import normalized_weights
from swarm.result import Result, hashable
from swarm.trace import Trace


def wilson_interval(share: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion `share` observed over `n` (possibly fractional) trials:

        z = Φ⁻¹(1 − (1−c)/2),   centre = (p̂ + z²/2n)/(1 + z²/n),
        half-width = z/(1 + z²/n) · √(p̂(1−p̂)/n + z²/4n²).
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"wilson_interval: share must lie in [0, 1], got {share!r}")
    if not n > 0:
        raise ValueError(f"wilson_interval: n must be positive, got {n!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"wilson_interval: confidence must lie in (0, 1), got {confidence!r}")
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    denom = 1.0 + z * z / n
    centre = (share + z * z / (2.0 * n)) / denom
    half = z / denom * math.sqrt(share * (1.0 - share) / n + z * z / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def length_normalized_log_prob(trace: Trace) -> float:
    """(1/K) Σ_k log q(t_k): the mean per-token log-probability of a trace under its proposal.

    The tokens t_k are, for each sample site in program order, the entries of
    ``info["token_logprobs"]`` when the site recorded them (an LLM generation), otherwise the site
    itself counts as one token with log-probability ``log_prob`` (log q of the drawn value).
    K is the total count; a trace with no sample site gives 0 (score exp(0) = 1). A generation whose
    backend reported no log-probabilities (info["log_q"] == "absent") is refused, naming the site:
    its log q is a placeholder, and the score would silently count it as one certain token.
    """
    total, count = 0.0, 0
    for e in trace.events:
        if e.type != "sample":
            continue
        if e.info and e.info.get("log_q") == "absent":
            raise SwarmError(f"length-normalised votes need log q of every token, and site {e.address!r} has none "
                             "(its backend reported no log-probabilities for that call)")
        tokens = e.info.get("token_logprobs") if e.info else None
        if tokens:
            total += math.fsum(float(t) for t in tokens)
            count += len(tokens)
        else:
            total += e.log_prob
            count += 1
    return total / count if count else 0.0


class SelfConsistency(Policy):
    """Self-consistency voting: an estimate of the answer marginal p(a) = Σ_τ p(τ) 1(a(τ) = a).

    Draw τ₁…τ_n ~ π independently and let aᵢ = answer(valueᵢ). Each trace gets a vote weight vᵢ:

    - ``weighted=True`` (default): vᵢ = w(τᵢ) = Φ(τᵢ)·Π p/q, the importance weight, so

          p̂(a) = Σᵢ w̄ᵢ 1(aᵢ = a),   w̄ᵢ = wᵢ / Σⱼ wⱼ,

      the self-normalised importance estimate of the answer marginal of p ∝ πΦ (consistent as
      n → ∞; this is docs/theory.md §9.1's weighted vote);
    - ``weighted=False``: vᵢ = 1 for every *accepted* trace (finished with Φ > 0) and 0 otherwise:
      the classic majority vote, p̂(a) = #{i: aᵢ = a} / #accepted. Soft factor values are ignored;
      it estimates the answer marginal of π conditioned on the hard constraints, not of p.

    ``length_normalized=True`` multiplies vᵢ by sᵢ = exp((1/K)Σ_k log q(t_k)) (Wang et al.'s
    length-normalised path probability; see `length_normalized_log_prob` for what a token is).
    This is a heuristic re-weighting: the votes then estimate the answer marginal of
    p'(τ) ∝ π(τ)Φ(τ)s(τ) (weighted) or of π(τ)s(τ)1[accepted] (unweighted), not of p.

    Reported in ``result.extra``:

    - ``"votes"``: {answer: number of accepted traces}, the raw counts;
    - ``"shares"``: {answer: p̂(a)}, most likely first (sums to 1);
    - ``"answer"``: argmax_a p̂(a) (ties → the answer seen first);
    - ``"interval"``: a Wilson interval at level `confidence` for the winner's share, with n the
      number of accepted traces when every vote weighs the same (unweighted, not length-normalised),
      and otherwise the effective sample size of the vote weights n_eff = (Σv)²/Σv² (Kong's ESS)
      in place of n: a normal-approximation heuristic for weighted proportions, exact in the
      equal-weight case;
    - ``"n_eff"``: that n; ``"basins"``: N_basins = 1/Σ_a p̂(a)² (docs/theory.md §9.1, Rényi-2).

    `result.particles` are the n draws with their importance weights, as in `Importance`
    (`result.marginal(answer)` is the weighted estimate whatever `weighted` says), and
    `result.log_evidence` is the unbiased Ẑ = (1/n) Σ w(τᵢ) of those same draws.
    """

    num_particles: int = Field(40, gt=0)
    """How many independent traces vote."""
    answer: Callable[[Any], Any] | None = None
    """Maps a trace's return value to its answer (None: the value itself)."""
    weighted: bool = True
    length_normalized: bool = False
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    batch_size: int | None = Field(None, gt=0)

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        if self.length_normalized:
            run_scope()[NEEDS_LOG_Q] = True  # the score reads every token's log q: generations ask for it
        runner = ctx.runner(args, kwargs)
        segments, log_w, log_z = await weighted_independent(ctx, runner, self.num_particles, batch_size=self.batch_size)
        particles = particles_of(ctx, segments, log_w)
        return ctx.result(particles, log_z, extra=self.tally(segments, log_w))

    def _answer_of(self, value: Any) -> Hashable:
        return hashable(value if self.answer is None else self.answer(value))

    def tally(self, segments: list[Segment], log_w: np.ndarray) -> dict[str, Any]:
        """The vote: counts, shares, winner, its interval and the basin count (see the class doc)."""
        alive = log_w > -math.inf
        log_v = np.where(alive, log_w if self.weighted else 0.0, -math.inf)
        if self.length_normalized:
            log_v = log_v + np.array([length_normalized_log_prob(s.trace) for s in segments])
        v = normalized_weights(log_v)
        votes: dict[Hashable, int] = {}
        shares: dict[Hashable, float] = {}
        for seg, ok, vi in zip(segments, alive, v):
            if ok:
                a = self._answer_of(seg.value)
                votes[a] = votes.get(a, 0) + 1
                shares[a] = shares.get(a, 0.0) + float(vi)
        winner = max(shares, key=shares.__getitem__)  # the first-seen answer among ties
        equal_votes = not self.weighted and not self.length_normalized
        n_eff = float(alive.sum()) if equal_votes else float(1.0 / np.sum(v * v))
        share = min(1.0, shares[winner])
        return {
            "votes": votes,
            "shares": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
            "answer": winner,
            "interval": wilson_interval(share, n_eff, self.confidence),
            "n_eff": n_eff,
            "basins": 1.0 / math.fsum(s * s for s in shares.values()),
        }
