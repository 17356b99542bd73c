"""Distributions over finite sets, and the contract every distribution (LLM generations too) meets.

A distribution has `sample(rng) -> value`, `log_prob(value) -> float` and `support` (a tuple of
values when finite, None otherwise; `Enumerate` needs it). Asynchronous distributions (LLM
generations) set `is_async = True` and implement `sample_async(rng) -> Draw` instead, returning the
value together with its log-probabilities and metadata, because for an LLM the log-probability is a
by-product of sampling and cannot be recomputed cheaply afterwards.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np

from swarm.errors import InvalidDistributionError
from swarm.randomness import SiteRandom

_PROB_TOLERANCE = 1e-6


@dataclass
class Draw:
    """What an asynchronous distribution returns: the value, log q(value) under the proposal it was
    drawn from, log p(value) under the model when that differs (else None), and metadata."""

    value: Any
    log_prob: float
    target_log_prob: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Distribution:
    """Base class. Subclasses implement `sample`, `log_prob` and, when finite, `support`."""

    is_async = False

    @property
    def support(self) -> tuple[Any, ...] | None:
        return None

    def sample(self, rng: SiteRandom) -> Any:
        raise NotImplementedError

    def log_prob(self, value: Any) -> float:
        raise NotImplementedError

    async def sample_async(self, rng: SiteRandom) -> Draw:  # pragma: no cover - async dists override
        value = self.sample(rng)
        return Draw(value, self.log_prob(value))

    def enumerate_support(self) -> list[tuple[Any, float]]:
        """[(value, log p(value))] over the finite support, zero-probability values left out."""
        support = self.support
        if support is None:
            raise TypeError(f"{self!r} has no finite support")
        pairs = [(v, self.log_prob(v)) for v in support]
        return [(v, lp) for v, lp in pairs if lp > -math.inf]

    def describe(self) -> str:
        return type(self).__name__


def _key(value: Any) -> Hashable:
    """Values are looked up by equality; unhashable values (lists, dicts) by their repr."""
    try:
        hash(value)
        return value
    except TypeError:
        return ("__repr__", repr(value))


class Categorical(Distribution):
    """A finite distribution over `values` with `probs` (or `logits`), uniform when neither is given.

    probs must be finite, non-negative and sum to 1 within 1e-6 (they are then renormalised
    exactly); logits are normalised with log-sum-exp. Sampling is inverse-CDF with one uniform.
    """

    def __init__(self, values: Sequence[Any], probs: Sequence[float] | None = None,
                 logits: Sequence[float] | None = None) -> None:
        values = list(values)
        if not values:
            raise InvalidDistributionError("Categorical needs a non-empty list of values (the support is empty)")
        if probs is not None and logits is not None:
            raise InvalidDistributionError("Categorical takes 'probs' or 'logits', not both")
        self.values = tuple(values)
        self._log_probs = self._normalised_log_probs(len(values), probs, logits)
        self._probs = np.exp(self._log_probs)
        cdf = np.cumsum(self._probs)
        cdf[-1] = 1.0
        self._cdf = cdf.tolist()
        self._index: dict[Hashable, int] = {}
        for i, v in enumerate(self.values):
            k = _key(v)
            if k in self._index:
                raise InvalidDistributionError(f"Categorical values must be distinct; {v!r} appears twice")
            self._index[k] = i

    @staticmethod
    def _normalised_log_probs(n: int, probs: Sequence[float] | None, logits: Sequence[float] | None) -> np.ndarray:
        if probs is None and logits is None:
            return np.full(n, -math.log(n))
        if probs is not None:
            p = np.asarray(probs, dtype=float)
            if p.shape != (n,):
                raise InvalidDistributionError(f"Categorical got {n} values but probs of shape {p.shape}")
            if not np.all(np.isfinite(p)):
                raise InvalidDistributionError(f"Categorical probs must be finite, got {p.tolist()}")
            if np.any(p < 0):
                bad = int(np.argmin(p))
                raise InvalidDistributionError(f"Categorical probs must be non-negative; probs[{bad}] = {p[bad]}")
            total = float(p.sum())
            if abs(total - 1.0) > _PROB_TOLERANCE:
                raise InvalidDistributionError(
                    f"Categorical probs must sum to 1 (within {_PROB_TOLERANCE}), they sum to {total!r}; "
                    "pass logits= for unnormalised weights")
            with np.errstate(divide="ignore"):
                return np.log(p / total)
        lg = np.asarray(logits, dtype=float)
        if lg.shape != (n,):
            raise InvalidDistributionError(f"Categorical got {n} values but logits of shape {lg.shape}")
        if np.any(np.isnan(lg)) or np.any(lg == math.inf):
            raise InvalidDistributionError(f"Categorical logits must not be NaN or +inf, got {lg.tolist()}")
        top = lg.max()
        if top == -math.inf:
            raise InvalidDistributionError("Categorical logits are all -inf: the distribution has no mass")
        return lg - (top + math.log(np.exp(lg - top).sum()))

    @property
    def support(self) -> tuple[Any, ...]:
        return self.values

    @property
    def probs(self) -> np.ndarray:
        return self._probs.copy()

    def sample(self, rng: SiteRandom) -> Any:
        i = bisect.bisect_right(self._cdf, rng.random())
        i = min(i, len(self.values) - 1)
        while self._probs[i] == 0.0:  # never land on a zero-probability value
            i -= 1
        return self.values[i]

    def log_prob(self, value: Any) -> float:
        i = self._index.get(_key(value))
        return -math.inf if i is None else float(self._log_probs[i])

    def describe(self) -> str:
        return f"Categorical({len(self.values)})"

    def __repr__(self) -> str:
        return f"Categorical(values={list(self.values)!r}, probs={np.round(self._probs, 6).tolist()})"


class Uniform(Categorical):
    """The uniform distribution over a finite set of distinct values."""

    def __init__(self, values: Sequence[Any]) -> None:
        super().__init__(values)

    def describe(self) -> str:
        return f"Uniform({len(self.values)})"


class Bernoulli(Categorical):
    """True with probability `p`, False otherwise."""

    def __init__(self, p: float) -> None:
        p = float(p)
        if not (0.0 <= p <= 1.0) or math.isnan(p):
            raise InvalidDistributionError(f"Bernoulli p must lie in [0, 1], got {p!r}")
        super().__init__([True, False], probs=[p, 1.0 - p])
        self.p = p

    def describe(self) -> str:
        return f"Bernoulli({self.p:g})"

    def __repr__(self) -> str:
        return f"Bernoulli(p={self.p!r})"


class Delta(Distribution):
    """A point mass at `value` (log-probability 0 there, −inf elsewhere)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    @property
    def support(self) -> tuple[Any, ...]:
        return (self.value,)

    def sample(self, rng: SiteRandom) -> Any:
        return self.value

    def log_prob(self, value: Any) -> float:
        try:
            equal = bool(value == self.value)
        except Exception:
            equal = repr(value) == repr(self.value)
        return 0.0 if equal else -math.inf

    def __repr__(self) -> str:
        return f"Delta({self.value!r})"
