"""Diagnostics: basins, genealogy, vote correlation, and the failure attribution of `diagnose`.

Every attribution test has a control that must come out clean, so a diagnose() that flags
everything fails. The independence check on ρ̂: under independence the pooled estimator over
R rows of K votes has SE ≈ √(2/(R·K(K−1))) (= 0.007 for R = 2,000, K = 5); we allow 0.03 (> 4 SE).
For the exchangeable mixture (each vote copies a shared latent with probability λ, else is fresh),
the true correlation is λ²; with R = 4,000 rows of K = 4 its SE is ≈ 0.012, tolerance 0.05.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import policies
from policies.diagnostics import (
    Diagnosis,
    basins,
    diagnose,
    k_eff,
    n_basins,
    pairwise_correlation,
    root_correlation,
    unique_ancestors,
)
from policies.judges import Calibration, Judge
from policies.self_consistency import SelfConsistency
from swarm import Bernoulli, Categorical, Delta, guarantee, plate, sample
from swarm.result import Diagnostics, Particle, Result
from swarm.trace import Trace
from tests.exact_programs import BY_NAME


def _result(values, log_weights=None, genealogy=()):
    log_weights = [0.0] * len(values) if log_weights is None else log_weights
    particles = [Particle(id=i, value=v, log_weight=lw, trace=Trace()) for i, (v, lw) in
                 enumerate(zip(values, log_weights))]
    return Result(policy="Hand", particles=particles, log_evidence=0.0,
                  diagnostics=Diagnostics(genealogy=[list(g) for g in genealogy]))


# -- metrics -------------------------------------------------------------------------------------------
def test_basins_and_n_basins_by_hand():
    r = _result(["a", "a", "b", "c"])
    assert basins(r) == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.25})
    assert n_basins(r) == pytest.approx(1 / (0.25 + 0.0625 + 0.0625))  # 2.667
    r = _result(["a", "b", "zzz"], [math.log(3), 0.0, -math.inf])  # a dead particle has no basin
    assert basins(r) == pytest.approx({"a": 0.75, "b": 0.25})
    assert n_basins(r) == pytest.approx(1 / (0.75**2 + 0.25**2))  # 1.6
    r = _result(["Paris", "paris", "Lyon", "PARIS"])
    assert n_basins(r, key=str.lower) == pytest.approx(1 / (0.75**2 + 0.25**2))
    assert n_basins(r, key=lambda p: p.id % 2, on="particle") == pytest.approx(2.0)
    assert n_basins(_result(list(range(10)))) == pytest.approx(10.0)  # one basin each: the ESS


def test_genealogy_metrics_by_hand():
    # step 0 resampled [0,0,1,1]; step 1 resampled [1,1,1,3] → roots [0,0,0,1]
    r = _result(["x"] * 4, genealogy=[[0, 0, 1, 1], [1, 1, 1, 3]])
    assert unique_ancestors(r) == 2
    assert root_correlation(r) == pytest.approx((3**2 + 1**2 - 4) / (4 * 3))  # 0.5
    assert unique_ancestors(_result(["x"] * 5)) == 5 and root_correlation(_result(["x"] * 5)) == 0.0


def test_k_eff():
    assert k_eff(10, 0.0) == 10 and k_eff(10, 1.0) == 1
    assert k_eff(10, 0.1) == pytest.approx(10 / 1.9)
    with pytest.raises(ValueError, match="rho must lie in"):
        k_eff(5, -0.5)


def test_pairwise_correlation():
    rng = np.random.default_rng(7)
    assert pairwise_correlation([[1, 1, 1], [0, 0, 0], [1, 1, 1]]) == pytest.approx(1.0)
    assert abs(pairwise_correlation(rng.random((2000, 5)) < 0.6)) < 0.03
    lam = 0.6
    latent = rng.random((4000, 1)) < 0.5
    copy = rng.random((4000, 4)) < lam
    votes = np.where(copy, latent, rng.random((4000, 4)) < 0.5)
    assert pairwise_correlation(votes) == pytest.approx(lam**2, abs=0.05)
    assert math.isnan(pairwise_correlation([[1, 1], [1, 1]]))  # no variance: undefined
    assert pairwise_correlation([[1, 1, 1], [0], [0, 0]]) == pytest.approx(1.0)  # ragged rows


# -- diagnose --------------------------------------------------------------------------------------
def test_diagnose_names_coverage_on_a_needle():
    prog = BY_NAME["needle_guarantees"]  # 5% of the proposal satisfies both guarantees
    d = diagnose(policies.Importance(num_particles=2000, seed=0).run(prog.program))
    assert isinstance(d, Diagnosis) and d.primary == "coverage"
    assert d.finding("coverage").metrics["accepted_fraction"] == pytest.approx(0.05, abs=0.015)
    text = str(d)
    assert "primary suspect = coverage" in text and "1. coverage" in text and "suggested fix" in text
    clean = diagnose(policies.Importance(num_particles=2000, seed=0).run(BY_NAME["chain3"].program))
    assert clean.primary is None and "no failure mode detected" in str(clean)


def _copy(belief):
    return sample("v", Delta(belief))


def _fresh(_belief):
    return sample("v", Bernoulli(0.7))


def _voters(voter):
    def program():
        belief = sample("belief", Bernoulli(0.7))  # True is the majority answer by a wide margin, so the
        # oracle's "the selected answer is True" holds whatever the seed (at 0.5 it was a coin toss)
        return plate("vote", 5, voter, belief)
    return program


def _majority(votes):
    return sum(votes) >= 3


@pytest.mark.parametrize("correct", [None, lambda a: a is True], ids=["label-free", "oracle"])
def test_diagnose_names_dependence_on_perfectly_correlated_votes(correct):
    herd = policies.Importance(num_particles=1000, seed=1).run(_voters(_copy))
    d = diagnose(herd, key=_majority, votes=lambda v: v, correct=correct)
    assert d.primary == "dependence"
    dep = d.finding("dependence").metrics
    assert dep["vote_correlation"] == pytest.approx(1.0) and dep["k_eff_votes"] == pytest.approx(1.0)
    independent = policies.Importance(num_particles=1000, seed=1).run(_voters(_fresh))
    d = diagnose(independent, key=_majority, votes=lambda v: v, correct=correct)
    assert d.primary is None
    assert abs(d.finding("dependence").metrics["vote_correlation"]) < 0.1
    assert d.finding("dependence").metrics["k_eff_votes"] > 3.5


def _quiz():
    return sample("answer", Categorical(["right", "wrong"], probs=[0.6, 0.4]))


def _judged(judge):
    def program():
        a = _quiz()
        judge.factor("judge", a)
        return a
    return program


def _is_right(a):
    return a == "right"


def test_diagnose_names_selection_for_a_bad_judge():
    coin = Judge(name="coin", fn=lambda a: a == "right", calibration=Calibration(q0=0.5, q1=0.55, m0=100, m1=100))
    result = SelfConsistency(num_particles=500, seed=2).run(_quiz)
    d = diagnose(result, judge=coin, correct=_is_right)
    assert d.primary == "selection"
    assert d.finding("selection").metrics["youden"] == pytest.approx(0.05)
    # a judge calibrated elsewhere (claims q0 = q1 = 0.9) that here prefers the wrong answer
    misled = Judge(name="misled", fn=lambda a: a == "wrong", calibration=Calibration(q0=0.9, q1=0.9))
    result = policies.Importance(num_particles=500, seed=3).run(_judged(misled))
    d = diagnose(result, correct=_is_right)
    assert d.primary == "selection"
    sel = d.finding("selection").metrics
    assert sel["oracle_best_of_n"] == 1.0 and sel["selected_correct"] == 0.0
    assert sel["weighted_accuracy"] < 0.1 < 0.5 < sel["unweighted_accuracy"]
    d = diagnose(result, correct=_is_right, judge=misled)  # measured on this population, J = −1
    assert d.finding("selection").metrics["measured_youden"] == pytest.approx(-1.0)
    assert any("does not transfer" in r for r in d.finding("selection").reasons)
    good = Judge(name="good", fn=_is_right, calibration=Calibration(q0=0.9, q1=0.9, m0=100, m1=100))
    result = policies.Importance(num_particles=500, seed=3).run(_judged(good))
    d = diagnose(result, judge=good, correct=_is_right)
    assert d.primary is None and d.finding("selection").metrics["weighted_accuracy"] > 0.9


def test_diagnose_names_composition_for_a_failing_interface():
    def program():
        x = sample("x", Bernoulli(0.7))
        guarantee("interface_ok", x)
        return x
    d = diagnose(policies.Importance(num_particles=1000, seed=4).run(program))
    assert d.primary == "composition"
    rate = d.finding("composition").metrics["failure_rates"]["interface_ok"]
    assert rate == pytest.approx(0.3, abs=0.05)
