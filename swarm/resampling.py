"""Resampling schemes: draw n ancestor indices from normalised weights w (Σ w_i = 1).

Every scheme has the signature ``f(weights, rng, n=None) -> np.ndarray`` of int64 ancestor indices
of length n (default len(weights)), sorted ascending so that offspring of the same parent are
adjacent. All four are *unbiased*: the offspring count N_i = #{j : a_j = i} satisfies

    E[N_i] = n · w_i        for every i,

which is what keeps the SMC evidence estimate unbiased (see `swarm.population.EvidenceAccumulator`).
They differ in the variance of N_i. With r_i = n·w_i − ⌊n·w_i⌋ the fractional part:

- multinomial:  Var N_i = n·w_i(1 − w_i)                         (i.i.d. draws; the reference)
- residual:     Var N_i = R·ρ_i(1 − ρ_i),  R = Σ r_j, ρ_i = r_i/R   (≤ multinomial)
- stratified:   Var N_i = Σ_j p_ij(1 − p_ij) ≤ n·w_i(1 − w_i)       (p_ij = mass of stratum j on i)
- systematic:   Var N_i = r_i(1 − r_i), N_i ∈ {⌊n·w_i⌋, ⌈n·w_i⌉}   (the minimum for any unbiased
                integer count with that mean; but the N_i are strongly dependent and the result
                depends on the order of the particles, so systematic has no general guarantee on
                the variance of every estimator, Douc, Cappé & Moulines 2005)

so marginally systematic ≤ {stratified, residual} ≤ multinomial.

Implementation: inverse-CDF lookup of sorted points u_j ∈ [0, 1) with
``np.searchsorted(cdf, u, side="right")``: particle i is chosen iff cdf_{i−1} ≤ u < cdf_i, an empty
interval when w_i = 0, so a zero-weight particle is never chosen (side="right" matters at u = 0
with leading zeros). The cumulative sum is divided by its last entry, so every entry from the last
positive weight on is exactly 1.0: floating drift can neither leave a gap at the top nor give a
trailing zero-weight particle mass; a point that rounds up to 1.0 goes to the last live particle.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = [
    "SCHEMES",
    "multinomial",
    "offspring_counts",
    "resample",
    "residual",
    "stratified",
    "systematic",
]

_SUM_TOL = 1e-6


def _check_weights(weights: np.ndarray, n: int | None) -> tuple[np.ndarray, int]:
    """Validate normalised probabilities and the output size; return (float64 weights, n)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D array, got shape {w.shape}")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"weights[{i}] is {float(w[i])!r}; weights must be finite and >= 0")
    total = float(w.sum())
    if abs(total - 1.0) > _SUM_TOL:
        raise ValueError(f"weights must be normalised (sum to 1), they sum to {total!r}")
    size = w.size if n is None else int(n)
    if size < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return w, size


def _cdf(w: np.ndarray) -> tuple[np.ndarray, int]:
    """Cumulative sum with the drift guard; also return the index of the last positive weight.

    Dividing by the last entry makes cdf_i == 1.0 exactly for every i ≥ last (those entries equal
    cdf[-1] bit for bit, since adding 0.0 is exact), whatever the drift of the sum."""
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    last = int(np.flatnonzero(w > 0)[-1])
    return cdf, last


def _invert(w: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Ancestors for sorted points u in [0, 1]: the i with cdf_{i−1} ≤ u < cdf_i."""
    cdf, last = _cdf(w)
    idx = np.searchsorted(cdf, u, side="right")
    # u can round up to exactly 1.0 (e.g. (U + n − 1)/n); it belongs to the last positive particle.
    np.minimum(idx, last, out=idx)
    return idx.astype(np.int64, copy=False)


def _sorted_uniforms(rng: np.random.Generator, n: int) -> np.ndarray:
    """n sorted i.i.d. Uniform[0, 1) points in O(n): the order statistics of n uniforms have the law
    of (E_1 + … + E_j) / (E_1 + … + E_{n+1}) with E_k i.i.d. Exp(1) (Rényi's representation)."""
    e = np.cumsum(rng.standard_exponential(n + 1))
    return e[:-1] / e[-1]


def multinomial(weights: np.ndarray, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """n i.i.d. draws from Categorical(w): counts ~ Multinomial(n, w), Var N_i = n·w_i(1 − w_i)."""
    w, size = _check_weights(weights, n)
    if size == 0:
        return np.empty(0, dtype=np.int64)
    return _invert(w, _sorted_uniforms(rng, size))


def systematic(weights: np.ndarray, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """One uniform U, points u_j = (j + U)/n: N_i ∈ {⌊n·w_i⌋, ⌈n·w_i⌉}, Var N_i = r_i(1 − r_i)."""
    w, size = _check_weights(weights, n)
    if size == 0:
        return np.empty(0, dtype=np.int64)
    u = (np.arange(size, dtype=np.float64) + rng.random()) / size
    return _invert(w, u)


def stratified(weights: np.ndarray, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """One uniform per stratum, u_j = (j + U_j)/n: N_i is a sum of independent Bernoullis with total
    mean n·w_i, so Var N_i = Σ_j p_ij(1 − p_ij) ≤ n·w_i(1 − w_i) (Cauchy–Schwarz)."""
    w, size = _check_weights(weights, n)
    if size == 0:
        return np.empty(0, dtype=np.int64)
    u = (np.arange(size, dtype=np.float64) + rng.random(size)) / size
    return _invert(w, u)


def _residual_floor(w: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic copies ⌊n·w_i⌋ and the fractional parts r_i = n·w_i − ⌊n·w_i⌋ ≥ 0.

    Σ⌊n·w_i⌋ ≤ n in exact arithmetic; if rounding of n·w_i pushes it over, the excess copies are
    removed from the particles with the smallest fractional parts (those that were rounded up).
    """
    nw = size * (w / w.sum())
    det = np.floor(nw)
    excess = int(det.sum()) - size
    if excess > 0:
        frac = np.where(det > 0, nw - det, np.inf)
        det[np.argsort(frac, kind="stable")[:excess]] -= 1
    return det.astype(np.int64), np.maximum(nw - det, 0.0)


def residual(weights: np.ndarray, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """⌊n·w_i⌋ deterministic copies of each particle, then R = n − Σ⌊n·w_i⌋ multinomial draws from
    the residual probabilities ρ_i = r_i / R: E[N_i] = ⌊n·w_i⌋ + R·ρ_i = n·w_i, Var N_i = R·ρ_i(1 − ρ_i)."""
    w, size = _check_weights(weights, n)
    counts, frac = _residual_floor(w, size)
    rest = size - int(counts.sum())
    if rest > 0:
        total = frac.sum()
        rho = frac / total if total > 0 else w / w.sum()
        counts += np.bincount(multinomial(rho, rng, rest), minlength=w.size)
    return np.repeat(np.arange(w.size, dtype=np.int64), counts)


Scheme = Callable[..., np.ndarray]

SCHEMES: dict[str, Scheme] = {
    "multinomial": multinomial,
    "systematic": systematic,
    "stratified": stratified,
    "residual": residual,
}


def resample(scheme: str, weights: np.ndarray, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Dispatch to ``SCHEMES[scheme]``; ValueError naming the scheme and the valid ones if unknown."""
    try:
        fn = SCHEMES[scheme]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown resampling scheme {scheme!r}; valid schemes: {', '.join(sorted(SCHEMES))}"
        ) from None
    return fn(weights, rng, n)


def offspring_counts(ancestors: np.ndarray, n_parents: int) -> np.ndarray:
    """N_i = number of offspring of parent i (length n_parents, int64), via np.bincount."""
    a = np.asarray(ancestors, dtype=np.int64)
    if a.size and (a.min() < 0 or a.max() >= n_parents):
        raise ValueError(f"ancestor indices must be in [0, {n_parents}), got [{a.min()}, {a.max()}]")
    return np.bincount(a, minlength=n_parents).astype(np.int64, copy=False)
