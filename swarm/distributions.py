"""Distributions over finite sets, and the contract every distribution (LLM generations too) meets.

A distribution has `sample(rng) -> value`, `log_prob(value) -> float` and `support` (a tuple of
values when finite, None otherwise; `Enumerate` needs it). Asynchronous distributions (LLM
generations) set `is_async = True` and implement `sample_async(rng) -> Draw` instead, returning the
value together with its log-probabilities and metadata, because for an LLM the log-probability is a
by-product of sampling and cannot be recomputed cheaply afterwards.
"""

from __future__ import annotations

import bisect
import itertools
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
        live = [(v, lp) for v, lp in pairs if lp > -math.inf]
        if not live:
            raise InvalidDistributionError(
                f"{self.describe()} has an empty support: none of its {len(pairs)} values has positive probability")
        return live

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
        values = tuple(values)
        if not values:
            raise InvalidDistributionError("Categorical needs a non-empty list of values (the support is empty)")
        if probs is not None and logits is not None:
            raise InvalidDistributionError("Categorical takes 'probs' or 'logits', not both")
        self.values = values
        self._log_probs = self._normalised_log_probs(len(values), probs, logits)
        self._probs = [math.exp(lp) for lp in self._log_probs]
        self._cdf: list[float] | None = None
        self._index: dict[Hashable, int] | None = None
        if len(values) <= 64:  # small supports: check distinctness now (large ones lazily)
            self._lookup()

    def _lookup(self) -> dict[Hashable, int]:
        if self._index is None:
            index: dict[Hashable, int] = {}
            for i, v in enumerate(self.values):
                k = _key(v)
                if k in index:
                    raise InvalidDistributionError(f"Categorical values must be distinct; {v!r} appears twice")
                index[k] = i
            self._index = index
        return self._index

    @staticmethod
    def _normalised_log_probs(n: int, probs: Sequence[float] | None, logits: Sequence[float] | None) -> list[float]:
        """log p as a list, validated (pure Python: building small categoricals inside a program must
        cost microseconds, not a numpy round trip)."""
        if probs is None and logits is None:
            return [-math.log(n)] * n
        if probs is not None:
            p = _as_floats(probs, n, "probs")
            for i, pi in enumerate(p):
                if not math.isfinite(pi):
                    raise InvalidDistributionError(f"Categorical probs must be finite; probs[{i}] = {pi!r}")
                if pi < 0:
                    raise InvalidDistributionError(f"Categorical probs must be non-negative; probs[{i}] = {pi!r}")
            total = math.fsum(p)
            if abs(total - 1.0) > _PROB_TOLERANCE:
                raise InvalidDistributionError(
                    f"Categorical probs must sum to 1 (within {_PROB_TOLERANCE}), they sum to {total!r}; "
                    "pass logits= for unnormalised weights")
            return [math.log(pi / total) if pi > 0 else -math.inf for pi in p]
        lg = _as_floats(logits, n, "logits")
        for i, li in enumerate(lg):
            if math.isnan(li) or li == math.inf:
                raise InvalidDistributionError(f"Categorical logits must not be NaN or +inf; logits[{i}] = {li!r}")
        top = max(lg)
        if top == -math.inf:
            raise InvalidDistributionError("Categorical logits are all -inf: the distribution has no mass")
        log_norm = top + math.log(math.fsum(math.exp(li - top) for li in lg))
        return [li - log_norm for li in lg]

    @property
    def support(self) -> tuple[Any, ...]:
        return self.values

    @property
    def probs(self) -> np.ndarray:
        return np.array(self._probs)

    def sample(self, rng: SiteRandom) -> Any:
        return self.values[self._index_of_uniform(rng.random())]

    def draw_uniform(self, u: float) -> tuple[Any, float]:
        """(value, log p(value)) of the inverse-CDF draw at uniform `u`: what `sample` draws from a
        random stream whose next uniform is `u`, with its log-probability (the fused engine's path)."""
        i = self._index_of_uniform(u)
        return self.values[i], self._log_probs[i]

    def _index_of_uniform(self, u: float) -> int:
        cdf = self._cdf
        if cdf is None:
            cdf = self._cdf = list(itertools.accumulate(self._probs))
            cdf[-1] = 1.0
        i = min(bisect.bisect_right(cdf, u), len(self.values) - 1)
        while self._probs[i] == 0.0:  # never land on a zero-probability value
            i -= 1
        return i

    def log_prob(self, value: Any) -> float:
        i = self._lookup().get(_key(value))
        return -math.inf if i is None else self._log_probs[i]

    def describe(self) -> str:
        return f"Categorical({len(self.values)})"

    def __repr__(self) -> str:
        return f"Categorical(values={list(self.values)!r}, probs={[round(p, 6) for p in self._probs]})"


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
        # built directly (no generic validation): Bernoullis are created inside hot program loops,
        # so the tables of each p met are computed once and shared (they are never mutated)
        tables = _BERNOULLI_TABLES.get(p)
        if tables is None:
            tables = _bernoulli_tables(p)
        self.p = p
        self.values = (True, False)
        self._probs, self._log_probs, self._cdf = tables
        self._index = _BOOL_INDEX

    def describe(self) -> str:
        return "Bernoulli"

    def __repr__(self) -> str:
        return f"Bernoulli(p={self.p!r})"


FINITE_INVERSE_CDF = frozenset({Categorical, Uniform, Bernoulli})
"""Distributions whose `sample(rng)` is `draw_uniform(rng.random())` and whose log-probability of
the drawn value is the one `draw_uniform` returns (exact types: a subclass may override either)."""


_BOOL_INDEX = {True: 0, False: 1}
_BERNOULLI_TABLES: dict[float, tuple[list[float], list[float], list[float]]] = {}


def _bernoulli_tables(p: float) -> tuple[list[float], list[float], list[float]]:
    """(probs, log probs, CDF) of Bernoulli(p), validated; kept for up to 4,096 distinct p."""
    if not (0.0 <= p <= 1.0) or math.isnan(p):
        raise InvalidDistributionError(f"Bernoulli p must lie in [0, 1], got {p!r}")
    tables = ([p, 1.0 - p], [math.log(p) if p > 0 else -math.inf, math.log1p(-p) if p < 1 else -math.inf],
              [p, 1.0])
    if len(_BERNOULLI_TABLES) < 4096:
        _BERNOULLI_TABLES[p] = tables
    return tables


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


def _as_floats(xs: Sequence[float], n: int, what: str) -> list[float]:
    if isinstance(xs, np.ndarray):
        if xs.shape != (n,):
            raise InvalidDistributionError(f"Categorical got {n} values but {what} of shape {xs.shape}")
        return [float(x) for x in xs]
    try:
        out = [float(x) for x in xs]
    except (TypeError, ValueError) as exc:
        raise InvalidDistributionError(f"Categorical {what} must be numbers: {exc}") from exc
    if len(out) != n:
        raise InvalidDistributionError(f"Categorical got {n} values but {len(out)} {what}")
    return out
