"""Recursive adaptive weighted rejection sampling (AWRS): an exact-weight sampler for a Boolean
condition too costly to evaluate on the whole vocabulary.

Given a proposal p over tokens and a condition a(v) ∈ {0, 1} that can only be checked one token at
a time, we want a token t and a weight ŵ ≥ 0 that are *properly weighted* for the restricted
distribution p(v)·a(v) / Z with Z = Σ_v p(v) a(v):

    E[ŵ · 1[t = v]] = p(v) · a(v)   for every v,   hence   E[ŵ] = Z.

Tokens are visited in the order of a sample without replacement from p (Gumbel top-k keys), and the
condition is checked only until the first accepted token x. With R the mass rejected before x and
q_x = p(x)/(1 − R) the conditional probability of x among the tokens not yet visited, the estimator
uses the identity Z = p(x)a(x) + (1 − p(x))·Z' recursively: every rejection multiplies the weight by
(1 − q) and the first acceptance is followed by a one-token look-ahead (accept the next token in the
order too: factor 1; reject it: factor q_x). This is the recursive AWRS of Lipkin et al. 2025, "Fast
Controlled Generation from Language Models with Adaptive Weighted Rejection Sampling"
(arXiv 2504.05410), as implemented in genlm-control's `recursive_awrs` (Apache-2.0), rewritten for a
synchronous condition and a given visiting order so that proper weighting can be checked exactly by
enumerating every order (tests/test_constraints_awrs.py).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

_EPS = 1e-9


def gumbel_order(logps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Token ids in the order of a sample without replacement from exp(logps) (zero-mass ids last)."""
    keys = logps - np.log(-np.log(rng.random(logps.shape[0])))
    return np.argsort(-keys, kind="stable")


def _log1mexp(x: float) -> float:
    """log(1 − e^x) for x ≤ 0, accurately."""
    if x >= 0.0:
        return -math.inf
    return math.log(-math.expm1(x)) if x > -0.6931 else math.log1p(-math.exp(x))


def awrs_from_order(logps: np.ndarray, order: np.ndarray, accept: Callable[[int], bool],
                    max_rejects: int | None = None) -> tuple[int, float, int]:
    """Run recursive AWRS along a fixed visiting order.

    `logps` are normalised log-probabilities (−inf allowed). Returns (token, log ŵ, calls): the
    accepted token (or the last rejected one, with log ŵ = −inf, when nothing is accepted) and the
    number of condition checks made. `max_rejects` caps the checks (the weight is then 0 when the cap
    is reached before an acceptance: a conservative truncation, not an unbiased one)."""
    finite = int(np.isfinite(logps[order]).sum())
    rejected_mass, log_mult, calls, tok = 0.0, 0.0, 0, int(order[0])
    for pos in range(finite):
        tok = int(order[pos])
        last = pos + 1 == finite
        log_q = min(0.0, float(logps[tok]) - math.log1p(-min(rejected_mass, 1.0 - 1e-300)))
        if last:
            log_q = 0.0
        calls += 1
        if accept(tok):
            if last:
                return tok, min(log_mult, 0.0), calls
            calls += 1
            follow = 0.0 if accept(int(order[pos + 1])) else log_q
            return tok, min(log_mult, 0.0) + follow, calls
        if last or (max_rejects is not None and calls >= max_rejects):
            return tok, -math.inf, calls
        rejected_mass += math.exp(float(logps[tok]))
        if rejected_mass >= 1.0 - _EPS:
            return tok, -math.inf, calls
        log_mult += _log1mexp(log_q)
    return tok, -math.inf, calls


def awrs(logps: np.ndarray, accept: Callable[[int], bool], rng: np.random.Generator,
         max_rejects: int | None = None) -> tuple[int, float, int]:
    """Recursive AWRS with a fresh random visiting order; see `awrs_from_order`."""
    return awrs_from_order(logps, gumbel_order(logps, rng), accept, max_rejects)
