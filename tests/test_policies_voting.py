"""Voting policies: BestOfN, SelfConsistency, AheadByK.

Statistical tolerances (each test has a fixed seed, so it is deterministic; the bounds say how far
an honest implementation can be from the truth, so a wrong one fails):

- SelfConsistency at n = 10,000 on chain3: SNIS with ESS ≈ 7,000 over 8 answers has expected TV
  ≈ ½ Σ_a √(2/π)·√(p_a(1−p_a)/ESS) ≈ 0.01, so 0.03 is a 3× margin.
- Wilson interval coverage over R = 300 runs: nominal 0.95 with binomial SE √(.95·.05/300) = 0.0126;
  accepted in [0.95 − 3 SE − 0.02, 0.995], the 0.02 allowing Wilson's known discreteness wobble at
  n ≈ 100–200; a too-wide interval (coverage ≥ 0.995) fails too.
- AheadByK on a p = 0.7 binary vote with k = 3: the wrong winner has probability exactly
  r = 0.3³/(0.7³ + 0.3³) = 0.07297 (gambler's ruin), so over R = 4,000 seeds the error count is
  Binomial(R, r): SE = √(r(1−r)/R) = 0.0041. We assert rate ≤ r + 3 SE (the bound holds) and
  rate ≥ r − 4 SE (it is attained: for two answers the formula is exact). The mean stopping time
  is E[T] = (k/(p−q))·(1 − (q/p)ᵏ)/(1 + (q/p)ᵏ) = 6.404, checked within 4 sample SEs.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

import policies
from policies.ahead_by_k import AheadByK, error_bound, k_min, step_success, task_success, union_error_bound
from policies.best_of_n import BestOfN
from policies.self_consistency import SelfConsistency, length_normalized_log_prob, wilson_interval
from swarm import Bernoulli, Categorical, Delta, Draw, Distribution, RejectionError, factor, guarantee, sample
from swarm.trace import SampleEvent, Trace
from tests.exact_programs import BY_NAME, total_variation


def run(policy, prog):
    return policy.run(prog.program, *prog.args, **prog.kwargs)


# -- BestOfN ------------------------------------------------------------------------------------------
def _enumerated_best(prog, score):
    paths = run(policies.Enumerate(), prog).particles
    best = max(paths, key=score)
    assert len({p.value for p in paths if score(p) == score(best)}) == 1, "the test needs a unique best value"
    return best


@pytest.mark.parametrize("name", ["plate_vote", "branching", "noisy_count"])
def test_best_of_n_returns_the_argmax_weight_path(name):
    """objective="weight": the argmax of log w = log Φ among Enumerate's paths (these programs have no
    custom proposal, so w = Φ). The best value has π-mass ≥ 0.6⁵ = 0.078 in each, so n = 300 draws
    miss it with probability ≤ 0.922³⁰⁰ < 1e-10."""
    prog = BY_NAME[name]
    best = _enumerated_best(prog, lambda p: p.trace.log_weight)
    result = run(BestOfN(num_particles=300, seed=4), prog)
    chosen = result.extra["best"]
    assert chosen.value == best.value
    assert chosen.log_weight == pytest.approx(best.trace.log_weight, abs=1e-12)
    assert result.extra["best_score"] == pytest.approx(float(result.log_weights.max()), abs=1e-12)


def test_best_of_n_joint_objective_matches_enumerates_top_path():
    """objective="joint" scores log π + log w = log p̃(τ): Enumerate's top path. On `branching` it
    differs from the argmax of Φ ("short" has π·Φ = 0.15 but Φ = 0.3 < 0.36)."""
    prog = BY_NAME["branching"]
    top = _enumerated_best(prog, lambda p: p.log_weight)
    result = run(BestOfN(num_particles=300, seed=5, objective="joint"), prog)
    assert result.extra["best"].value == top.value == "short"
    assert result.extra["best_score"] == pytest.approx(top.log_weight, abs=1e-12)
    assert run(BestOfN(num_particles=300, seed=5), prog).extra["best"].value == ("long", True)


def test_best_of_n_keeps_every_draw_with_importance_weights_and_breaks_ties_low():
    prog = BY_NAME["chain3"]
    bon, imp = run(BestOfN(num_particles=500, seed=9), prog), run(policies.Importance(num_particles=500, seed=9), prog)
    assert len(bon.particles) == 500
    assert bon.log_evidence == imp.log_evidence
    np.testing.assert_array_equal(bon.log_weights, imp.log_weights)
    i = bon.extra["best_index"]
    assert bon.particles[i] is bon.extra["best"]
    assert i == int(np.flatnonzero(bon.log_weights == bon.log_weights.max())[0])  # lowest index among ties
    assert i > 0 or bon.log_weights[0] == bon.log_weights.max()

    def flat():
        return sample("x", Bernoulli(0.5))
    assert BestOfN(num_particles=20, seed=0).run(flat).extra["best_index"] == 0  # every weight ties at 0


# -- SelfConsistency -----------------------------------------------------------------------------------
def _answer_marginal(posterior, answer):
    out: dict = {}
    for value, p in posterior.items():
        out[answer(value)] = out.get(answer(value), 0.0) + p
    return out


@pytest.mark.parametrize("answer", [None, sum, lambda v: v[2]], ids=["trace", "heads", "last"])
def test_weighted_self_consistency_converges_to_the_answer_marginal(answer):
    prog = BY_NAME["chain3"]
    exact = _answer_marginal(prog.posterior, answer or (lambda v: v))
    result = run(SelfConsistency(num_particles=10_000, answer=answer, seed=11), prog)
    shares = result.extra["shares"]
    assert total_variation(shares, exact) <= 0.03
    assert result.extra["answer"] == max(exact, key=exact.get)
    assert result.extra["basins"] == pytest.approx(1 / sum(s * s for s in shares.values()))
    assert result.extra["n_eff"] == pytest.approx(result.ess)


def test_unweighted_self_consistency_is_plain_vote_counting():
    prog = BY_NAME["api_example"]  # a soft factor on "b", a guarantee killing "c"
    result = run(SelfConsistency(num_particles=400, weighted=False, seed=3), prog)
    accepted = [p.value for p in result.particles if p.log_weight > -math.inf]
    counts = Counter(accepted)
    winner, top = counts.most_common(1)[0]
    assert result.extra["votes"] == dict(counts)
    assert result.extra["shares"] == pytest.approx({a: c / len(accepted) for a, c in counts.items()})
    assert result.extra["answer"] == winner
    assert result.extra["interval"] == pytest.approx(wilson_interval(top / len(accepted), len(accepted)))
    weighted = run(SelfConsistency(num_particles=400, seed=3), prog).extra["shares"]
    assert weighted["b"] > result.extra["shares"]["b"] + 0.1  # the factor e¹ on "b" only counts when weighted


def test_wilson_interval_hand_value():
    # p̂ = 0.5, n = 100, z = 1.959964: centre 0.5, half = z/(1+z²/n)·√(0.0025 + z²/40000) = 0.096168
    lo, hi = wilson_interval(0.5, 100)
    assert (lo, hi) == pytest.approx((0.5 - 0.096168, 0.5 + 0.096168), abs=2e-6)
    with pytest.raises(ValueError, match="n must be positive"):
        wilson_interval(0.5, 0)


def _skewed():
    x = sample("x", Categorical(["a", "b", "c"], probs=[0.3, 0.3, 0.4]))
    factor("f", 1.0 if x == "a" else 0.0)
    return x


def _coin():
    return sample("x", Bernoulli(0.6))


@pytest.mark.parametrize("weighted", [True, False])
def test_self_consistency_interval_coverage(weighted):
    z = 0.3 * math.e + 0.7
    truth = {"a": 0.3 * math.e / z, "b": 0.3 / z, "c": 0.4 / z} if weighted else {True: 0.6, False: 0.4}
    program, n = (_skewed, 200) if weighted else (_coin, 100)
    covered = 0
    for s in range(300):
        extra = SelfConsistency(num_particles=n, weighted=weighted, seed=s).run(program).extra
        lo, hi = extra["interval"]
        covered += lo <= truth[extra["answer"]] <= hi
    assert 0.95 - 3 * 0.0126 - 0.02 <= covered / 300 <= 0.995


class _FakeLLM(Distribution):
    """A 50/50 choice between a 2-token and a 10-token completion, recording token log-probs."""

    is_async = True
    completions = {"A": [-0.1, -0.1], "B": [-0.5] * 10}

    async def sample_async(self, rng):
        text = "A" if rng.random() < 0.5 else "B"
        lps = self.completions[text]
        return Draw(text, math.fsum(lps), info={"token_logprobs": lps})


async def _llm_program():
    return await sample("gen", _FakeLLM())


def test_length_normalized_votes_use_mean_token_log_probs():
    trace = Trace(events=[SampleEvent(address="a", value=1, log_prob=-9.0, info={"token_logprobs": [-1.0, -3.0]}),
                          SampleEvent(address="b", value=2, log_prob=-2.0)])
    assert length_normalized_log_prob(trace) == pytest.approx(-2.0)  # (−1 − 3 − 2)/3 tokens
    result = SelfConsistency(num_particles=400, length_normalized=True, seed=2).run(_llm_program)
    n_a, n_b = result.extra["votes"]["A"], result.extra["votes"]["B"]
    s_a, s_b = n_a * math.exp(-0.1), n_b * math.exp(-0.5)  # exp(mean log q) per trace
    assert result.extra["shares"]["A"] == pytest.approx(s_a / (s_a + s_b), rel=1e-12)
    plain = SelfConsistency(num_particles=400, seed=2).run(_llm_program).extra["shares"]["A"]
    assert plain == pytest.approx(n_a / 400)


# -- AheadByK -----------------------------------------------------------------------------------------
def _scripted(script):
    """A program whose i-th execution votes script[i] (None: a red-flagged execution)."""
    it = iter(script)
    calls = []

    def program():
        vote = next(it)
        calls.append(vote)
        guarantee("well_formed", vote is not None)
        return sample("vote", Delta(vote))
    return program, calls


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_ahead_by_k_stops_at_the_first_lead_of_k(batch_size):
    # counts after each vote (a, b): 10 11 21 22 23 (red flag) 33 34 35 → b leads by 2 at draw 9
    script = ["a", "b", "a", "b", "b", None, "a", "b", "b", "a", "a", "a", "a", "a", "a", "a"]
    program, calls = _scripted(script)
    r = AheadByK(k=2, max_samples=16, batch_size=batch_size, seed=0).run(program)
    assert r.extra["winner"] == "b" and r.extra["margin"] == 2
    assert r.extra["samples_used"] == 9
    assert r.extra["votes"] == {"a": 3, "b": 5}
    assert r.extra["answers"] == ["a", "b", "a", "b", "b", "a", "b", "b"]
    assert len(calls) == min(16, -(-9 // batch_size) * batch_size)  # whole batches are drawn
    assert [p.id for p in r.particles] == [0, 1, 2, 3, 4, 6, 7, 8]
    assert r.log_evidence == pytest.approx(math.log(8 / 9))
    assert r.extra["exhausted"] is False


def test_ahead_by_k_follows_the_seeded_stream_order():
    """Draw i of AheadByK is stream i, as in Importance with the same seed: replay its sequence."""
    def program():
        return sample("x", Categorical(["a", "b", "c"], probs=[0.45, 0.35, 0.2]))
    sequence = [p.value for p in policies.Importance(num_particles=200, seed=21).run(program).particles]
    counts: Counter = Counter()
    for stop, v in enumerate(sequence, 1):
        counts[v] += 1
        if counts[v] - max((c for a, c in counts.items() if a != v), default=0) >= 4:
            break
    else:
        pytest.fail("the test sequence has no winner in 200 draws")
    r = AheadByK(k=4, max_samples=200, batch_size=7, seed=21).run(program)
    assert r.extra["samples_used"] == stop and r.extra["winner"] == sequence[stop - 1]


def test_ahead_by_k_returns_the_population_when_exhausted():
    program, _ = _scripted(["a", "b"] * 5)
    r = AheadByK(k=2, max_samples=10, seed=0).run(program)
    assert r.extra["winner"] is None and r.extra["exhausted"] is True
    assert r.extra["margin"] == 0 and r.extra["error_bound"] is None
    assert len(r.particles) == 10 and r.extra["samples_used"] == 10


def test_ahead_by_k_stops_cleanly_on_budget():
    program, _ = _scripted(["a", "b"] * 50)
    r = AheadByK(k=2, max_samples=100, batch_size=4, budget=policies.Budget(max_seconds=1e-9), seed=0).run(program)
    assert r.extra["winner"] is None and r.extra["exhausted"] is False
    assert r.extra["samples_used"] == 4 and r.diagnostics.stopped_by == "max_seconds"


def test_ahead_by_k_refuses_weighted_votes_and_bad_config():
    def soft():
        x = sample("x", Bernoulli(0.5))
        factor("pref", 0.3 if x else 0.0)
        return x
    with pytest.raises(RejectionError, match="'pref'"):
        AheadByK(k=2, max_samples=10, seed=0).run(soft)
    with pytest.raises(ValidationError, match="max_samples"):
        AheadByK(k=5, max_samples=3)
    with pytest.raises(ValidationError, match="p_estimate"):
        AheadByK(k=2, p_estimate=1.5)


def _binary_vote():
    return sample("answer", Bernoulli(0.7))  # True is the correct answer


def test_ahead_by_k_error_rate_is_within_the_bound():
    k, p, runs = 3, 0.7, 4000
    bound = error_bound(p, k)
    assert bound == pytest.approx(0.3**3 / (0.7**3 + 0.3**3))
    wrong, used = 0, []
    for s in range(runs):
        r = AheadByK(k=k, max_samples=1000, batch_size=8, p_estimate=p, seed=s).run(_binary_vote)
        wrong += r.extra["winner"] is False
        used.append(r.extra["samples_used"])
    assert r.extra["error_bound"] == pytest.approx(bound)
    rate, se = wrong / runs, math.sqrt(bound * (1 - bound) / runs)
    print(f"AheadByK k={k} p={p}: error rate {rate:.4f} vs bound {bound:.4f} (SE {se:.4f}); "
          f"mean samples {np.mean(used):.3f}")
    assert rate <= bound + 3 * se
    assert rate >= bound - 4 * se
    r_ = (1 - p) / p
    expected_t = k / (2 * p - 1) * (1 - r_**k) / (1 + r_**k)
    assert abs(np.mean(used) - expected_t) <= 4 * np.std(used) / math.sqrt(runs)


def test_k_min_and_the_maker_formulas():
    assert k_min(0.85, 0.95, 1023) == 6
    assert task_success(0.85, 6, 1023) >= 0.95 > task_success(0.85, 5, 1023)
    assert task_success(0.85, 6, 1023) == pytest.approx(0.9696, abs=5e-4)  # "≈ 0.97" in MAKER
    for p, t, s, m in itertools.product([0.55, 0.7, 0.85, 0.99], [0.5, 0.9, 0.99], [1, 10, 1023, 10**6], [1, 4]):
        brute = next(k for k in range(1, 10_000) if task_success(p, k, s, m) >= t)
        assert k_min(p, t, s, m) == brute, (p, t, s, m)
    assert step_success(0.7, 1) == pytest.approx(0.7)  # k = 1: a single vote
    assert union_error_bound(0.7, 3) == pytest.approx((3 / 7) ** 3)
    with pytest.raises(ValueError, match="p must lie in"):
        k_min(0.5, 0.9, 10)
