"""Backup operators for search over program steps: mellowmax and its limits (docs/theory.md §7.2).

    mm_ω(x) = (1/ω) · log( (1/n) Σ_{i=1}^n exp(ω x_i) ) = (LSE(ω x) − log n) / ω,    ω > 0.

Properties (Asadi & Littman 2017; the elementary ones are tested with hypothesis):

- mean(x) ≤ mm_ω(x) ≤ max(x), and max(x) − (log n)/ω ≤ mm_ω(x);
- ω → 0 gives mean(x), ω → ∞ gives max(x);
- translation equivariance: mm_ω(x + c·1) = mm_ω(x) + c, so mm_ω(c·1) = c;
- non-expansion: |mm_ω(x) − mm_ω(y)| ≤ ‖x − y‖_∞ (the Bellman-mellowmax operator contracts).

Why it matters for scaffolds: backed up recursively over a tree, LSE is *extensive* (a uniform tree
of depth L and branching b with zero rewards has value L·log b: it counts paths), while mellowmax
is *intensive* (the same tree has value 0 at every depth). Rewards along a path still add up.

`-inf` entries are allowed (a dead branch): they contribute exp(−inf) = 0 to the sums, so mellowmax
and logsumexp ignore them (mm of n values with k dead = the value over the n − k live ones minus
log(n/(n−k))/ω), mean becomes −inf, max ignores them. NaN and +inf raise ValueError.
"""

from __future__ import annotations

import math
from typing import Iterable, Literal

import numpy as np

__all__ = ["BACKUPS", "backup", "logsumexp", "mellowmax"]

BackupKind = Literal["mellowmax", "max", "mean", "logsumexp"]
BACKUPS: tuple[str, ...] = ("mellowmax", "max", "mean", "logsumexp")


def _values(x: Iterable[float] | np.ndarray, what: str = "values") -> np.ndarray:
    arr = np.asarray(list(x) if not isinstance(x, np.ndarray) else x, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{what} must be non-empty (a backup over no children is undefined)")
    bad = np.flatnonzero(np.isnan(arr) | np.isposinf(arr))
    if bad.size:
        raise ValueError(f"{what}[{int(bad[0])}] is {float(arr[bad[0]])!r}; values must be finite or -inf")
    return arr


def logsumexp(x: Iterable[float] | np.ndarray) -> float:
    """LSE(x) = log Σ exp(x_i), shifted by the maximum (−inf when every entry is −inf)."""
    arr = _values(x)
    m = float(np.max(arr))
    if m == -math.inf:
        return -math.inf
    return m + math.log(float(np.sum(np.exp(arr - m))))


def mellowmax(x: Iterable[float] | np.ndarray, omega: float = 1.0) -> float:
    """mm_ω(x) = (LSE(ω x) − log n)/ω, computed stably for every ω > 0.

    Written as max(x) + (1/ω)·log( (1/n) Σ exp(ω (x_i − max x)) ): every exponent is ≤ 0, so nothing
    overflows for large ω, and for tiny ω the log is evaluated with log1p of the mean of expm1, so
    the ω → 0 limit (the mean) is reached without cancellation.
    """
    omega = float(omega)
    if not math.isfinite(omega) or omega <= 0:
        raise ValueError(f"mellowmax: omega must be a finite positive number, got {omega!r}")
    arr = _values(x)
    m = float(np.max(arr))
    if m == -math.inf:
        return -math.inf
    z = omega * (arr - m)                          # ≤ 0, −inf for dead entries
    mean_expm1 = float(np.mean(np.expm1(z)))       # (1/n) Σ (e^{z_i} − 1) ∈ [1/n − 1, 0]: the max gives 0
    return m + math.log1p(mean_expm1) / omega


def backup(values: Iterable[float] | np.ndarray, kind: BackupKind = "mellowmax", omega: float = 1.0) -> float:
    """The value of a node from its children's values.

    - ``"mellowmax"``: mm_ω(values) (intensive, between mean and max);
    - ``"max"``:       max(values) (the best child: a value-of-the-best-found-path operator);
    - ``"mean"``:      (1/n) Σ values;
    - ``"logsumexp"``: LSE(values) = log Σ exp(values) (extensive: grows with the number of children).
    """
    if kind == "mellowmax":
        return mellowmax(values, omega)
    arr = _values(values)
    if kind == "max":
        return float(np.max(arr))
    if kind == "mean":
        return -math.inf if np.isneginf(arr).any() else float(np.mean(arr))
    if kind == "logsumexp":
        return logsumexp(arr)
    raise ValueError(f"backup: kind must be one of {BACKUPS}, got {kind!r}")
