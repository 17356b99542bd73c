"""First-to-ahead-by-k voting (MAKER, Meyerson et al. 2025; docs/theory.md §9.2)."""

from __future__ import annotations

import math
from typing import Any, Callable, Hashable

from pydantic import Field, model_validator

from policies.base import Policy, RunContext
from policies.independent import ConsumedDraws, particle_of, run_independent, unconsumed
from swarm.errors import RejectionError
from swarm.result import Result, hashable
from swarm.trace import Trace
from swarm.weights import first_soft_event


def step_success(p: float, k: int) -> float:
    """P(the correct answer wins) = pᵏ/(pᵏ + (1−p)ᵏ) for a binary correct-vs-wrong race.

    Gambler's ruin: the vote difference D = #correct − #wrong is a ±1 walk with up-probability p,
    started at 0 and stopped at ±k; it reaches +k first with probability 1/(1 + ((1−p)/p)ᵏ).
    """
    _check_p(p, "p")
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"step_success: k must be a positive integer, got {k!r}")
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    return 1.0 / (1.0 + math.exp(k * (math.log1p(-p) - math.log(p))))


def error_bound(p: float, k: int) -> float:
    """P(wrong winner) = (1−p)ᵏ/(pᵏ + (1−p)ᵏ) = 1 − `step_success(p, k)` (exact for two answers)."""
    return 1.0 - step_success(p, k)


def union_error_bound(p: float, k: int) -> float:
    """min(1, ((1−p)/p)ᵏ): a bound on P(wrong winner) for any number of answers.

    A wrong answer a (per-vote probability p_a) wins only if N_a − N_correct ever reaches +k, which
    has probability (p_a/p)ᵏ when p_a < p; summing over wrong answers, Σ_a (p_a/p)ᵏ ≤ ((1−p)/p)ᵏ.
    """
    _check_p(p, "p")
    if p == 0.0:
        return 1.0
    return min(1.0, math.exp(k * (math.log1p(-p) - math.log(p)))) if p < 1.0 else 0.0


def task_success(p: float, k: int, steps: int, m: int = 1) -> float:
    """P(all s/m voted steps succeed) = step_success(p, k)^(s/m) (independent steps of m substeps)."""
    return step_success(p, k) ** (steps / m)


def k_min(p: float, target: float, steps: int, m: int = 1) -> int:
    """The smallest margin k with task_success(p, k, steps, m) ≥ target (MAKER):

        k_min = ⌈ ln(t^(−m/s) − 1) / ln((1−p)/p) ⌉.

    Needs 1/2 < p < 1 (a vote must be more often right than wrong) and 0 < t < 1.
    """
    _check_p(p, "p")
    if not 0.5 < p < 1.0:
        raise ValueError(f"k_min: p must lie in (0.5, 1) for voting to converge on the right answer, got {p!r}")
    if not 0.0 < target < 1.0:
        raise ValueError(f"k_min: target must lie in (0, 1), got {target!r}")
    if steps < 1 or m < 1:
        raise ValueError(f"k_min: steps and m must be ≥ 1, got steps={steps!r}, m={m!r}")
    slack = math.expm1(-(m / steps) * math.log(target))  # t^(−m/s) − 1, accurate for tiny exponents
    return max(1, math.ceil(math.log(slack) / math.log((1.0 - p) / p)))


def _check_p(p: float, name: str) -> None:
    if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


def _check_hard(trace: Trace) -> None:
    """A vote counts as one exact draw of p only when Φ ∈ {0, 1} and no importance correction applies."""
    soft = first_soft_event(trace.events)
    if soft is None:
        return
    if soft.type == "factor":
        raise RejectionError(
            f"AheadByK: votes must be unweighted, but factor {soft.address!r} has log-potential "
            f"{soft.log_potential!r}; use guarantee() for red flags, or SelfConsistency for soft factors")
    raise RejectionError(f"AheadByK: site {soft.address!r} was drawn from a proposal other than its "
                         "distribution, so its vote would need an importance weight")


class AheadByK(Policy):
    """First-to-ahead-by-k voting: draw votes one at a time until one answer leads every other by k.

    Each draw τ ~ π is a vote for answer(value) if it finishes with Φ(τ) = 1; a draw that fails a
    guarantee is *red-flagged* (discarded, but counted in ``samples_used``). Accepted votes are exact
    draws from p ∝ π·1[constraints] (soft factors are refused: a vote cannot carry a weight). The run
    stops at the first vote after which

        N_winner − max_{a ≠ winner} N_a ≥ k.

    Draws run in batches of `batch_size` but are consumed in order, so the stopping rule and
    ``samples_used`` are exactly those of the one-at-a-time procedure (a batch may draw a few more).

    **Claim.** With per-vote accuracy p (probability that an accepted vote is the correct answer),
    the winner is wrong with probability

        P(wrong winner) ≤ (1−p)ᵏ / (pᵏ + (1−p)ᵏ)        (``extra["error_bound"]``),

    which is exact for two answers (gambler's ruin) and the MAKER step reliability otherwise; for
    any number of answers ``extra["error_bound_union"]`` = min(1, ((1−p)/p)ᵏ) is a proven bound.
    Both assume independent votes (ρ = 0; correlated votes void them, docs/theory.md §10). p is
    `p_estimate` when given; otherwise the plug-in (N_winner + 1)/(N_votes + 2) (Laplace), which is
    optimistic: it assumes the winner is correct and the stopping rule favours lucky runs.

    Reported in ``result.extra``: ``winner`` (None when no answer got ahead), ``margin`` (leader
    minus runner-up at the stop), ``samples_used`` (draws consumed), ``votes`` ({answer: count}),
    ``answers`` (the accepted answers in order), ``exhausted`` (max_samples spent without a
    winner), ``p_used``, ``error_bound`` and ``error_bound_union`` (None without a winner).
    `result.particles` are the accepted votes (log weight 0); `result.log_evidence` is
    log(accepted/samples_used), a consistent (not unbiased: the stop depends on the votes)
    estimate of log Z. A budget stops the run cleanly with ``winner=None``.
    """

    k: int = Field(3, gt=0)
    max_samples: int = Field(1000, gt=0)
    answer: Callable[[Any], Any] | None = None
    """Maps a trace's return value to its answer (None: the value itself)."""
    batch_size: int = Field(1, gt=0)
    p_estimate: float | None = Field(None, gt=0.0, lt=1.0)
    """Known per-vote accuracy for the error bound (None: estimated from the votes)."""

    @model_validator(mode="after")
    def _samples_cover_margin(self) -> "AheadByK":
        if self.max_samples < self.k:
            raise ValueError(f"max_samples ({self.max_samples}) must be ≥ k ({self.k}): "
                             f"a lead of k needs at least k votes")
        return self

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.max_samples)
        runner = ctx.runner(args, kwargs)
        votes: dict[Hashable, int] = {}
        accepted: list[tuple[int, Any, Hashable]] = []  # (stream, segment, answer)
        consumed = ConsumedDraws(ctx)
        used, lost, winner, margin = 0, 0, None, 0
        while winner is None and used < self.max_samples:
            size = min(self.batch_size, self.max_samples - used)
            batch = await run_independent(ctx, runner, size, first_stream=used)
            for position, seg in enumerate(batch):
                used += 1
                lost += seg.status == "lost"  # missing data: neither a vote nor a red flag
                vote = seg.status == "finished" and seg.log_weight() > -math.inf
                consumed.add(used - 1, seg, vote)
                if not vote:
                    continue  # red-flagged: a failed guarantee, a −∞ factor or an error
                _check_hard(seg.trace)
                a = hashable(seg.value if self.answer is None else self.answer(seg.value))
                votes[a] = votes.get(a, 0) + 1
                accepted.append((used - 1, seg, a))
                margin = votes[a] - max((c for b, c in votes.items() if b != a), default=0)
                if margin >= self.k:
                    winner = a
                    unconsumed(ctx, batch[position + 1:])
                    break
            if winner is None and (ctx.out_of_budget() or len(batch) < size):
                break
        if not accepted:
            consumed.report(ctx, -math.inf)
            raise ctx.no_survivors(f"0 of {used} draws accepted")
        return self._result(ctx, votes, accepted, used, winner, margin, lost, consumed)

    def _result(self, ctx: RunContext, votes: dict, accepted: list, used: int, winner: Any,
                margin: int, lost: int, consumed: ConsumedDraws) -> Result:
        if winner is None:
            counts = sorted(votes.values(), reverse=True)
            margin = counts[0] - (counts[1] if len(counts) > 1 else 0)
        p_used = bound = union = None
        if winner is not None:
            p_used = self.p_estimate if self.p_estimate is not None else (votes[winner] + 1) / (len(accepted) + 2)
            bound, union = error_bound(p_used, self.k), union_error_bound(p_used, self.k)
        log_z = math.log(len(accepted) / (used - lost))
        consumed.report(ctx, log_z)
        particles = [particle_of(ctx, stream, seg, 0.0) for stream, seg, _ in accepted]
        return ctx.result(particles, log_z, extra={
            "winner": winner, "margin": margin, "samples_used": used, "votes": votes,
            "answers": [a for _, _, a in accepted],
            "exhausted": winner is None and used >= self.max_samples, "p_used": p_used,
            "error_bound": bound, "error_bound_union": union})
