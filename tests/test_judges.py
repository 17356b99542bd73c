"""Judges and the Lee et al. 2025 estimators.

The coverage check simulates 1,000 calibrations: θ ~ U(0.05, 0.95), q₀, q₁ ~ U(0.65, 0.98),
n = 500 test items, m₀, m₁ ~ U{50..300}; the judge's test verdicts and calibration counts are drawn
from the measurement model. The 95% interval must cover θ in ≥ 93% of runs (nominal 0.95, binomial
SE √(.95·.05/1000) = 0.0069, so 0.93 is 2.9 SE below) and ≤ 99.5% (6.5 SE above: an interval that
is too wide fails). The seed is fixed.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from pydantic import ValidationError

import policies
from policies.judges import (
    Calibration,
    Judge,
    allocate_calibration,
    confidence_interval,
    point_estimate,
    post_filter_accuracy,
)
from swarm import Bernoulli, sample


def test_lee_worked_example():
    assert point_estimate(0.4, 0.7, 0.9) == pytest.approx(0.1667, abs=5e-5)
    lo, hi = confidence_interval(0.4, 0.7, 0.9, 1000, 200, 200)
    assert (round(lo, 3), round(hi, 3)) == (0.056, 0.263)


def test_point_estimate_clips_and_refuses_uninformative_judges():
    assert point_estimate(0.05, 0.9, 0.9) == 0.0  # (0.05 + 0.9 − 1)/0.8 < 0
    assert point_estimate(0.99, 0.9, 0.9) == 1.0
    with pytest.raises(ValueError, match="q0 \\+ q1 > 1"):
        point_estimate(0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="q1 must be a probability"):
        point_estimate(0.5, 0.9, 1.2)
    with pytest.raises(ValueError, match="m0 must be a positive integer"):
        confidence_interval(0.4, 0.7, 0.9, 1000, 0, 200)


def test_confidence_interval_coverage():
    rng = np.random.default_rng(2025)
    runs, n, covered, widths = 1000, 500, 0, []
    for _ in range(runs):
        theta, q0, q1 = rng.uniform(0.05, 0.95), rng.uniform(0.65, 0.98), rng.uniform(0.65, 0.98)
        m0, m1 = (int(m) for m in rng.integers(50, 301, size=2))
        truth = rng.random(n) < theta
        says = np.where(truth, rng.random(n) < q1, rng.random(n) < 1 - q0)
        q0_hat, q1_hat = rng.binomial(m0, q0) / m0, rng.binomial(m1, q1) / m1
        if q0_hat + q1_hat <= 1:
            continue  # never happens with these ranges; the estimator needs J > 0
        lo, hi = confidence_interval(float(says.mean()), q0_hat, q1_hat, n, m0, m1)
        covered += lo <= theta <= hi
        widths.append(hi - lo)
    coverage = covered / runs
    print(f"Lee et al. 95% CI coverage: {coverage:.3f} over {runs} calibrations, mean width {np.mean(widths):.3f}")
    assert 0.93 <= coverage <= 0.995


def test_allocate_calibration_hand_values():
    assert allocate_calibration(100, 0.4) == (60, 40)  # κ = 1: m₁ = 100/(1 + 1.5)
    # κ = (10·0.2 + 1)/(10·0.05 + 1) = 2: m₁ = round(100/(1 + 1.5·√2)) = 32
    assert allocate_calibration(100, 0.4, q0_pilot=0.8, q1_pilot=0.95, m_pilot=10) == (68, 32)
    assert allocate_calibration(100, 0.0, m_pilot=10) == (10, 90)  # p < ε: all but the pilot to m₁
    assert allocate_calibration(100, 0.4, q1_pilot=1.0) == (100 - round(100 / (1 + 1.5 * math.sqrt(0.1 / 1e-6))),
                                                              round(100 / (1 + 1.5 * math.sqrt(0.1 / 1e-6))))


def test_post_filter_accuracy():
    assert post_filter_accuracy(0.9, 0.2, 0.5) == pytest.approx(0.45 / 0.55)
    for a, b, p in [(0.9, 0.2, 0.3), (0.6, 0.6, 0.3), (0.3, 0.6, 0.3)]:
        nu = post_filter_accuracy(a, b, p)
        assert (nu > p) == (a > b) and (nu == pytest.approx(p)) == (a == b)


# -- the Judge -----------------------------------------------------------------------------------------
def _examples():
    """Items x = (is_correct, id); the judge says yes to ids divisible by 4 or to correct ids < 90."""
    return [((c, i), c) for c in (True, False) for i in range(100)]


def _fn(x):
    correct, i = x
    return (correct and i < 90) or i % 4 == 0


def test_calibrate_counts_the_rates():
    judge = Judge(name="lenient", fn=_fn)
    cal = judge.calibrate(_examples())
    # correct items: yes for i < 90 (90) plus i ≥ 90 divisible by 4 (92, 96) → q1 = 92/100
    # incorrect items: yes for i % 4 == 0 (25) → q0 = 75/100
    assert cal == Calibration(q0=0.75, q1=0.92, m0=100, m1=100)
    assert judge.youden == pytest.approx(0.67)
    assert cal.smoothed == pytest.approx((76 / 102, 93 / 102))


def test_async_judge_calibrates_and_factors():
    async def fn(x):
        await asyncio.sleep(0)
        return _fn(x)
    judge = Judge(name="async", fn=fn)
    assert judge.calibrate(_examples()) == Calibration(q0=0.75, q1=0.92, m0=100, m1=100)

    async def program():
        c = sample("c", Bernoulli(0.5))
        verdict = await judge.factor("judge", (c, 0 if c else 1))
        return verdict
    result = policies.Enumerate().run(program)
    q0, q1 = judge.calibration.smoothed
    # c=True → verdict True (i=0), c=False → verdict False (i=1): weights ℓ₁/ℓ₀ per verdict
    lr_yes, lr_no = q1 / (1 - q0), (1 - q1) / q0
    assert result.marginal()[True] == pytest.approx(lr_yes / (lr_yes + lr_no))


def test_potential_is_the_posterior_of_correctness():
    """With a prior θ, the target's verdict classes get the masses of π(· | C=1): P(ŷ | C=1)."""
    theta, q0, q1 = 0.3, 0.8, 0.75
    judge = Judge(name="channel", fn=lambda x: x[1], calibration=Calibration(q0=q0, q1=q1), prior=theta)

    def program():  # a trace's correctness and the judge's noisy verdict on it
        c = sample("c", Bernoulli(theta))
        said = sample("said", Bernoulli(q1 if c else 1 - q0))
        judge.factor("judge", (c, said))
        return said
    marginal = policies.Enumerate().run(program).marginal()
    assert marginal[True] == pytest.approx(q1, abs=1e-12)
    assert judge.potential(True) == pytest.approx(math.log(theta * q1 / (theta * q1 + (1 - theta) * (1 - q0))))
    flat = Judge(name="coin", fn=bool, calibration=Calibration(q0=0.4, q1=0.6))  # J = 0
    assert flat.potential(True) == pytest.approx(0.0) and flat.potential(False) == pytest.approx(0.0)
    assert flat.likelihoods(True) == pytest.approx((math.log(0.6), math.log(0.6)))


def test_guarantee_filters_and_reaches_the_post_filter_accuracy():
    q0, q1, p = 0.85, 0.9, 0.4
    judge = Judge(name="checker", fn=lambda x: x[1], calibration=Calibration(q0=q0, q1=q1))

    def program():
        c = sample("c", Bernoulli(p))
        said = sample("said", Bernoulli(q1 if c else 1 - q0))
        judge.guarantee("judge_ok", (c, said))
        return c
    accuracy = policies.Enumerate().run(program).marginal()[True]
    assert accuracy == pytest.approx(judge.post_filter_accuracy(p), abs=1e-12)
    assert accuracy == pytest.approx(post_filter_accuracy(q1, 1 - q0, p))


def test_guarantee_refuses_a_judge_without_information():
    bad = Judge(name="contrarian", fn=lambda x: True, calibration=Calibration(q0=0.3, q1=0.65))
    with pytest.raises(ValueError, match=r"judge 'contrarian'.*Youden index J = q0 \+ q1 - 1 = -0\.050"):
        bad.guarantee("ok", 1)
    with pytest.raises(ValueError, match="judge 'raw' has no calibration"):
        Judge(name="raw", fn=bool).guarantee("ok", 1)
    with pytest.raises(ValueError, match="judge 'raw' has no calibration"):
        Judge(name="raw", fn=bool).factor("ok", 1)
    with pytest.raises(TypeError, match="judge 'texty': fn must return a bool"):
        Judge(name="texty", fn=str).verdict(1)
    with pytest.raises(ValidationError, match="prior"):
        Judge(fn=bool, prior=1.0)
    with pytest.raises(ValueError, match="m0=0, m1=2"):
        Judge(name="j", fn=bool).calibrate([(1, True), (0, True)])


def test_corrected_accuracy_uses_the_calibration():
    judge = Judge(fn=bool, calibration=Calibration(q0=0.7, q1=0.9, m0=200, m1=200))
    theta, ci = judge.corrected_accuracy(0.4, 1000)
    assert theta == pytest.approx(point_estimate(0.4, 0.7, 0.9))
    assert ci == confidence_interval(0.4, 0.7, 0.9, 1000, 200, 200)
