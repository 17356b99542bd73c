"""Population math in log space: log-sum-exp, normalisation, ESS and the evidence estimate.

A population is a 1-D float array of unnormalised log weights ``log_w`` (``log_w[i] = log W_i``).
Every helper validates its input first: ``-inf`` is a legal log weight (a dead particle), NaN and
``+inf`` are programming errors and raise `InvalidPotentialError` naming the index, so no NaN can
leak silently into normalised weights, the ESS or the evidence.

Numerics: every reduction shifts by the maximum ``m = max_i log_w[i]`` before exponentiating,

    logsumexp(log_w) = m + log Σ_i exp(log_w[i] − m),

so the largest term is exp(0) = 1 and nothing overflows, even for log weights of ±1e308 (linear
weights far outside the float range). Normalised log weights are computed as
``(log_w − m) − log Σ exp(log_w − m)`` rather than ``log_w − logsumexp(log_w)``: subtracting the
shift first keeps full relative precision when ``|m|`` is huge.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from swarm.errors import InvalidPotentialError

__all__ = [
    "EvidenceAccumulator",
    "check_log_weights",
    "ess",
    "log_ess",
    "logmeanexp",
    "logsumexp",
    "normalize",
    "normalized_weights",
]


# ---------------------------------------------------------------------------------------------
# validation and reductions
# ---------------------------------------------------------------------------------------------


def check_log_weights(log_w: Iterable[float] | np.ndarray, what: str = "log weights") -> np.ndarray:
    """Return ``log_w`` as a 1-D float64 array, or raise if an entry is NaN or ``+inf``.

    ``-inf`` is allowed (weight zero). The error is an `InvalidPotentialError` (a ValueError) whose
    message names the first offending index, its value, and how many entries are bad in total.
    """
    return _validated(log_w, what)[0]


def _validated(log_w: Iterable[float] | np.ndarray, what: str = "log weights") -> tuple[np.ndarray, float]:
    """(``log_w`` as a validated 1-D float64 array, its maximum m; −inf when empty or all −inf).

    One reduction both validates and finds the shift: the maximum propagates NaN, and it is +inf
    iff an entry is, so ``m < +inf`` holds exactly when no entry is NaN or +inf. (The populations
    of a serving workload are small, where numpy's per-call cost, not the arithmetic, is the time.)
    """
    try:
        arr = np.asarray(log_w, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidPotentialError(f"{what} must be numeric: {exc}") from None
    if arr.ndim != 1:
        raise InvalidPotentialError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if not arr.size:
        return arr, -math.inf
    m = float(arr.max())
    if not m < math.inf:
        bad = np.flatnonzero(np.isnan(arr) | (arr == math.inf))
        i = int(bad[0])
        more = f" ({bad.size} invalid entries in total)" if bad.size > 1 else ""
        raise InvalidPotentialError(
            f"{what}[{i}] is {float(arr[i])!r}; log weights must be finite or -inf{more}"
        )
    return arr, m


def _shifted_exp(arr: np.ndarray, m: float) -> np.ndarray:
    """exp(arr − m) for a validated ``arr`` whose maximum ``m`` is finite: every entry in [0, 1], the
    maximum's exactly 1. An entry with arr − m < −1.8e308 (log weights spanning ±1e308) rounds to
    −inf, whose exp is its weight relative to the maximum, 0, exactly: that overflow is not an error."""
    with np.errstate(over="ignore"):
        return np.exp(arr - m)


def _lse(arr: np.ndarray, m: float) -> float:
    """logsumexp of a validated array with maximum ``m``: m + log Σ exp(arr − m) (Σ ∈ [1, N])."""
    if m == -math.inf:
        return -math.inf
    return m + math.log(float(_shifted_exp(arr, m).sum()))


def logsumexp(log_w: Iterable[float] | np.ndarray) -> float:
    """log Σ_i exp(log_w[i]), computed as m + log Σ exp(log_w − m) with m the maximum.

    Empty input or all ``-inf`` gives ``-inf`` (the log of an empty sum, 0).
    """
    return _lse(*_validated(log_w))


def logmeanexp(log_w: Iterable[float] | np.ndarray) -> float:
    """log( (1/N) Σ_i exp(log_w[i]) ) = logsumexp(log_w) − log N.

    This is the log of the importance-sampling evidence estimate of a weighted population.
    Raises ValueError on an empty population (the mean of nothing is undefined).
    """
    arr, m = _validated(log_w)
    if arr.size == 0:
        raise ValueError("logmeanexp of an empty population is undefined")
    return _lse(arr, m) - math.log(arr.size)


def normalize(log_w: Iterable[float] | np.ndarray) -> np.ndarray:
    """Normalised log weights log w̄_i = log_w[i] − logsumexp(log_w), so Σ_i exp(log w̄_i) = 1.

    Computed as (log_w − m) − log Σ exp(log_w − m). ``-inf`` entries stay ``-inf``; a normalised
    log weight below −1.8e308 (possible only when log weights span ±1e308) is not representable
    and becomes ``-inf``, which is its weight, exp(−1.8e308) = 0, exactly. Raises
    ValueError when every entry is ``-inf``: a population with total weight zero has no normalised
    weights (the caller decides, e.g. by raising `NoSurvivingParticles`). Empty in, empty out.
    """
    arr, m = _validated(log_w)
    if arr.size == 0:
        return arr.copy()
    if m == -math.inf:
        raise ValueError("cannot normalise: every log weight is -inf (total weight zero)")
    with np.errstate(over="ignore"):
        shifted = arr - m
    return shifted - math.log(float(np.exp(shifted).sum()))


def normalized_weights(log_w: Iterable[float] | np.ndarray) -> np.ndarray:
    """Probabilities w̄_i = exp(log w̄_i), non-negative and summing to 1.

    ``-inf`` entries give exact zeros (so resampling never picks them). Entries more than ~745
    below the maximum underflow to 0 as well; their true weight is below 1e-323. A final division
    by the float sum removes the O(N·eps) drift of the exponentials. Raises like `normalize`.
    """
    w = np.exp(normalize(log_w))
    if w.size:
        w /= w.sum()
    return w


def log_ess(log_w: Iterable[float] | np.ndarray) -> float:
    """Log effective sample size (Kong): log ESS = 2·logsumexp(log_w) − logsumexp(2·log_w).

    Evaluated with the shifted weights u_i = exp(log_w[i] − m), m the maximum, as
    2·log Σ u − log Σ u² (the same quantity: the shift cancels), where 1 ≤ Σ u ≤ N and
    1 ≤ Σ u² ≤ N, so it cannot overflow when log weights are ~1e308 (2·log_w would be +inf).
    ``-inf`` for an empty or all-dead population; otherwise 0 ≤ log ESS ≤ log N.
    """
    arr, m = _validated(log_w)
    if m == -math.inf:
        return -math.inf
    u = _shifted_exp(arr, m)
    return 2.0 * math.log(float(u.sum())) - math.log(float(np.dot(u, u)))


def ess(log_w: Iterable[float] | np.ndarray) -> float:
    """Effective sample size (Σ w)² / Σ w² ∈ [1, N]; 0.0 when every weight is zero (or N = 0)."""
    return math.exp(log_ess(log_w))


# ---------------------------------------------------------------------------------------------
# evidence
# ---------------------------------------------------------------------------------------------


class EvidenceAccumulator:
    """Running estimate of log Z over an SMC run, the LLaMPPL way.

    Convention: the population's log weights W_i are *cumulative*. At every step each particle adds
    its log incremental weight; when the population is resampled, every offspring gets the weight
    ``logmeanexp(W)`` (`weights_after_resampling`). The evidence estimate after any step is then
    simply ``log Ẑ_t = logmeanexp(W_t)``, and the final estimate is logmeanexp of the final weights.

    Why this is the standard SMC estimator: with G_s the incremental weights, after the resets
    exp(logmeanexp(W_t)) = Π_{epochs e} mean_i(Π_{s ∈ e} G_s,i), the product over resampling epochs
    of the mean incremental weight since the last resampling.

    Unbiasedness (Del Moral 2004, Feynman-Kac Formulae, ch. 7): if each resampling is unbiased, i.e. the expected
    offspring count of particle i is N·w̄_i (true of every scheme in `swarm.resampling`), then
    E[Ẑ] = Z exactly, for any N ≥ 1 and any resampling schedule. The log is concave, so by Jensen
    E[log Ẑ] ≤ log E[Ẑ] = log Z: the reported log evidence is biased *low*, by about Var(Ẑ)/(2Z²)
    for large N; the bias vanishes as N → ∞. Resetting weights to logmeanexp(W) (rather than to 0)
    is what carries the evidence across epochs so that the final logmeanexp is the whole product.
    """

    def __init__(self) -> None:
        self.history: list[float] = []
        """log Ẑ_t after each step t, in order."""

    def log_evidence_after(self, log_w: Iterable[float] | np.ndarray) -> float:
        """Record and return log Ẑ_t = logmeanexp(log_w) for the step that produced ``log_w``."""
        value = logmeanexp(log_w)
        self.history.append(value)
        return value

    @staticmethod
    def weights_after_resampling(log_w: Iterable[float] | np.ndarray, n: int | None = None) -> np.ndarray:
        """The log weights to give the ``n`` offspring of a resampling of ``log_w``: all logmeanexp(log_w).

        ``n`` defaults to len(log_w); changing the population size leaves the estimate unchanged.
        """
        arr = check_log_weights(log_w)
        size = arr.size if n is None else int(n)
        return np.full(size, logmeanexp(arr))

    @property
    def log_evidence(self) -> float:
        """The latest estimate; 0.0 (Z = 1) before any step, i.e. for a program with no factors."""
        return self.history[-1] if self.history else 0.0
