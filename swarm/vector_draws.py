"""Batched draws for vectorised runs (`swarm.vector_run`): the N values of one sample site in one
array operation, and their log-probabilities.

    values, log_q = draw_batch(dist, rng, n)     # x_i ~ q, log q(x_i), i = 1..N
    log_p = log_prob_batch(dist, values)         # log p(x_i) elementwise

The finite distributions of `swarm.distributions` (Categorical, Uniform, Bernoulli, Delta) draw by
inverse CDF from N uniforms: x_i = v_k with k the first index whose cumulative probability
exceeds u_i, as their scalar `sample` does. Their parameters are shared by all particles.
`CategoricalRows` gives each particle its own probabilities (one row each), which is what a
vectorised model needs when a distribution depends on a particle's state (an HMM's transition row
T[z_{t-1}]). Any other distribution can join by defining `batch_sample(rng, n) -> (values, log_q)`
and `batch_log_prob(values) -> log_p`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from swarm.distributions import _PROB_TOLERANCE, Categorical, Delta, Distribution
from swarm.errors import InvalidDistributionError, NotVectorizable

__all__ = ["CategoricalRows", "draw_batch", "log_prob_batch", "one_per_particle", "value_array"]


def value_array(values: Sequence[Any]) -> np.ndarray:
    """The support as an array programs can compute with: numbers and booleans keep their numpy
    dtype; anything else (strings, tuples, objects) becomes an object array, so `x == "a"` is
    elementwise and values come back out as the Python objects they were."""
    if all(type(v) in (bool, int, float) for v in values):
        arr = np.asarray(values)
        if arr.ndim == 1 and arr.dtype.kind in "biuf":
            return arr
    arr = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):  # one by one: a tuple value stays one element
        arr[i] = v
    return arr


def one_per_particle(arr: np.ndarray, n: int) -> np.ndarray | None:
    """`arr` as one entry per particle: a shape-() value repeated n times, a shape-(n,) array as it
    is; None for any other shape (the caller names the site and what it expected)."""
    if arr.shape == ():
        return np.full(n, arr.item(), dtype=arr.dtype)
    return arr if arr.shape == (n,) else None


def draw_batch(dist: Distribution, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, log q(values)) of n independent draws from `dist`."""
    custom = getattr(dist, "batch_sample", None)
    if custom is not None:
        return custom(rng, n)
    if isinstance(dist, Categorical) and type(dist).sample is Categorical.sample:
        index = _inverse_cdf(np.asarray(dist._probs, dtype=float), rng.random(n))
        return value_array(dist.values)[index], np.asarray(dist._log_probs, dtype=float)[index]
    if type(dist) is Delta:
        return np.repeat(value_array([dist.value]), n), np.zeros(n)
    raise NotVectorizable(_no_batch(dist))


def log_prob_batch(dist: Distribution, values: np.ndarray) -> np.ndarray:
    """log p(values) elementwise (−inf outside the support)."""
    custom = getattr(dist, "batch_log_prob", None)
    if custom is not None:
        return custom(values)
    if isinstance(dist, Categorical) and type(dist).log_prob is Categorical.log_prob:
        return _support_log_probs(value_array(dist.values), np.asarray(dist._log_probs, dtype=float), values)
    if type(dist) is Delta:
        return np.where(_equal(values, dist.value), 0.0, -math.inf)
    raise NotVectorizable(_no_batch(dist))


class CategoricalRows(Distribution):
    """A categorical over `values` with one row of probabilities per particle: particle i draws
    x_i ~ Categorical(values, probs[i]). For vectorised runs, where a distribution's parameters
    depend on each particle's state: `sample("z1", CategoricalRows([0, 1], T[z0]))`."""

    def __init__(self, values: Sequence[Any], probs: Any) -> None:
        values = tuple(values)
        if not values:
            raise InvalidDistributionError("CategoricalRows needs a non-empty list of values")
        self.values = values
        self._raw = probs
        self._probs: np.ndarray | None = None

    @property
    def probs(self) -> np.ndarray:
        """The rows, validated and normalised when first read: a draw reads them, a replayed
        statement (whose distribution is built but not drawn from) never does."""
        if self._probs is None:
            self._probs = self._validated(self._raw)
        return self._probs

    def _validated(self, probs: Any) -> np.ndarray:
        k = len(self.values)
        p = np.asarray(probs, dtype=float)
        if p.ndim != 2 or p.shape[1] != k:
            raise InvalidDistributionError(
                f"CategoricalRows over {k} values needs probs of shape (particles, {k}), got shape {p.shape}")
        if not np.isfinite(p).all() or (p < 0).any():
            row = int(np.argwhere(~np.isfinite(p) | (p < 0))[0][0])
            raise InvalidDistributionError(
                f"CategoricalRows probs must be finite and non-negative; row {row} is {p[row].tolist()}")
        totals = p.sum(axis=1)
        bad = np.abs(totals - 1.0) > _PROB_TOLERANCE
        if bad.any():
            row = int(np.argmax(bad))
            raise InvalidDistributionError(
                f"CategoricalRows probs must sum to 1 in every row (within {_PROB_TOLERANCE}); "
                f"row {row} sums to {float(totals[row])!r}")
        return p / totals[:, None]

    @property
    def support(self) -> tuple[Any, ...]:
        return self.values

    def batch_sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        self._check_rows(n)
        u = rng.random(n)
        cdf = np.cumsum(self.probs, axis=1)
        cdf[:, -1] = 1.0
        index = np.minimum((u[:, None] >= cdf).sum(axis=1), len(self.values) - 1)
        rows = np.arange(n)
        zero = self.probs[rows, index] == 0.0
        while zero.any():  # never land on a zero-probability value (as Categorical.sample)
            index[zero] -= 1
            zero = self.probs[rows, index] == 0.0
        with np.errstate(divide="ignore"):
            return value_array(self.values)[index], np.log(self.probs[rows, index])

    def batch_log_prob(self, values: np.ndarray) -> np.ndarray:
        self._check_rows(len(values))
        out = np.full(len(values), -math.inf)
        with np.errstate(divide="ignore"):
            log_p = np.log(self.probs)
        for k, v in enumerate(self.values):
            hit = _equal(values, v)
            out[hit] = log_p[hit, k]
        return out

    def _check_rows(self, n: int) -> None:
        if self.probs.shape[0] != n:
            raise InvalidDistributionError(
                f"CategoricalRows has {self.probs.shape[0]} rows of probabilities for {n} particles")

    def sample(self, rng: Any) -> Any:
        raise TypeError("CategoricalRows holds one row of probabilities per particle: it is for vectorised runs "
                        "(policies.VectorizedSMC); a scalar program uses Categorical(values, probs=row)")

    log_prob = sample  # type: ignore[assignment]

    def describe(self) -> str:
        return f"CategoricalRows({len(self.values)})"

    def __repr__(self) -> str:
        return f"CategoricalRows({len(self.values)} values, {np.shape(self._raw)[0]} rows)"


def _inverse_cdf(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The index k of each uniform: the first with u < CDF_k, skipping zero-probability values."""
    cdf = np.cumsum(probs)
    cdf[-1] = 1.0
    index = np.minimum(np.searchsorted(cdf, u, side="right"), len(probs) - 1)
    # a zero-probability value is never drawn: move to the nearest earlier value with mass
    nearest = np.maximum.accumulate(np.where(probs > 0, np.arange(len(probs)), 0))
    return nearest[index]


def _support_log_probs(support: np.ndarray, log_probs: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(len(values), -math.inf)
    for v, lp in zip(support.tolist(), log_probs.tolist()):
        out[_equal(values, v)] = lp
    return out


def _equal(values: np.ndarray, v: Any) -> np.ndarray:
    """values == v elementwise, as a boolean array (object arrays compare element by element)."""
    hit = values == v
    if not isinstance(hit, np.ndarray) or hit.shape != values.shape:
        hit = np.fromiter((x == v for x in values.tolist()), dtype=bool, count=len(values))
    return hit.astype(bool, copy=False)


def _no_batch(dist: Distribution) -> str:
    return (f"{dist!r} has no batched draw: a vectorised run samples Categorical, Uniform, Bernoulli, Delta, "
            "CategoricalRows and Normal, or a distribution with batch_sample(rng, n) and batch_log_prob(values)")
