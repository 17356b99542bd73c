"""Recursive AWRS is properly weighted, checked exactly: its output depends only on the visiting
order, and the order is a Plackett–Luce draw from p, so enumerating every order of a small support
with its probability gives E[ŵ·1[t = v]] exactly; it must equal p(v)·a(v) for every v (to 1e-12:
sums of at most 5! = 120 products of floats). Also the guide's averaged-runs selection, by
simulation against the exact restricted distribution."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from agents.constraints import awrs as awrs_module
from agents.constraints.awrs import awrs_from_order


def _plackett_luce(p: np.ndarray, perm: tuple[int, ...]) -> float:
    prob, left = 1.0, 1.0
    for i in perm:
        prob *= p[i] / left
        left -= p[i]
    return prob


def _expected_weights(p: np.ndarray, allowed: np.ndarray, run=awrs_from_order) -> np.ndarray:
    out = np.zeros(p.size)
    for perm in itertools.permutations(range(p.size)):
        tok, log_w, _ = run(np.log(p), np.array(perm), lambda v: bool(allowed[v]))
        if log_w > -math.inf:
            out[tok] += _plackett_luce(p, perm) * math.exp(log_w)
    return out


def test_recursive_awrs_is_properly_weighted_exactly():
    rng = np.random.default_rng(0)
    for _ in range(150):
        n = int(rng.integers(1, 6))
        p = rng.dirichlet(np.ones(n) * 0.7)
        allowed = rng.random(n) < 0.5
        np.testing.assert_allclose(_expected_weights(p, allowed), p * allowed, atol=1e-12)


def test_a_biased_estimator_fails_the_exact_check():
    """The same check catches an estimator without the look-ahead factor (it can fail)."""
    def no_lookahead(logps, order, accept, max_rejects=None):
        tok, log_w, calls = awrs_from_order(logps, order, lambda v: accept(v) or False)
        return tok, (0.0 if log_w > -math.inf else log_w), calls

    p, allowed = np.array([0.5, 0.3, 0.2]), np.array([True, False, True])
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(_expected_weights(p, allowed, no_lookahead), p * allowed, atol=1e-12)


def test_nothing_allowed_gives_zero_weight():
    tok, log_w, calls = awrs_module.awrs(np.log(np.array([0.6, 0.4])), lambda v: False, np.random.default_rng(0))
    assert log_w == -math.inf and calls == 2


def test_averaged_runs_target_the_restricted_distribution():
    """Guide._awrs (several AWRS runs, one kept ∝ weight, mean weight): the weighted draws match
    p·a/Z and the mean weight matches Z. 40,000 draws: the standard error of each weighted share
    is below 0.004 and of the mean weight below 0.003, so 0.015 is over 3.5 standard errors."""
    from agents.constraints import Vocabulary, prefix

    vocab = Vocabulary([b"", b"a", b"b", b"c", b"d"], eos_ids=[0])
    constraint = prefix(lambda t: "b" not in t and "d" not in t, awrs_runs=3)
    p = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
    allowed = np.array([True, True, False, True, False])
    rng = np.random.default_rng(3)
    weights, mass = np.zeros(5), []
    for _ in range(40_000):
        guide = constraint.guide(vocab)
        d = guide.draw(np.log(p), rng)
        weights[d.token] += math.exp(d.log_mass)
        mass.append(math.exp(d.log_mass))
    z = float((p * allowed).sum())
    np.testing.assert_allclose(weights / weights.sum(), p * allowed / z, atol=0.015)
    assert abs(np.mean(mass) - z) < 0.015
