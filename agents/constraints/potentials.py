"""Potentials written in Python: soft ones (`Potential`) and user predicates (`prefix(fn)`).

A `Potential` subclass defines Φ(text) = `prefix(text)` and Φ_end(text) = `complete(text)`, both in
[0, 1]; its token weight is φ(v | x) = Φ(x·v)/Φ(x) (Φ_end(x)/Φ(x) for end of generation). By
default it is evaluated only on the candidates recursive AWRS visits (soft parts weight the drawn
token: see `agents.constraints.guide`), so a costly potential is never run on all 49k tokens and the
weights are estimated (unbiased). A potential that can score every token at once overrides
`prefix_row(text, pieces)` and sets `exact = True`: its weights are then exact.

    class ShortWords(constraints.Potential):
        '''Prefers short words: Φ(x) = 0.9 ** (letters in words longer than 6).'''
        def prefix(self, text): return 0.9 ** sum(max(0, len(w) - 6) for w in text.split())
        complete = prefix

    constraints.prefix(lambda text: text.count("(") >= text.count(")"))   # a hard predicate

Contract (assert_potential_contract): values in [0, 1], and a prefix whose weight is 0 stays 0.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Any, Callable

import numpy as np

from agents.constraints.base import (BoundConstraint, Constraint, ConstraintError, TokenState, check_unit_interval,
                                     decode, safe_log)
from agents.constraints.vocabulary import Vocabulary


class Potential(Constraint):
    """A soft potential on the reply's text (subclass it: define `prefix` and `complete`)."""

    exact = False
    boolean = False
    awrs_runs: int = 4
    """Estimated parts: independent AWRS draws averaged per token (more runs: less weight variance,
    more candidate checks; the checks are cached across the runs of one token)."""

    def describe(self) -> str:
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}({_fields(self)})"

    def prefix_row(self, text: str, pieces: list[bytes], eos: np.ndarray) -> np.ndarray:
        """Φ(text·v) for every token v (Φ_end(text) at end-of-generation ids). Override it (and set
        `exact = True`) when it can be computed at once; the default calls `prefix` per token."""
        data = text.encode("utf-8")
        return np.array([self.complete(text) if eos[i] else self.prefix(decode(data + p)) for i, p in enumerate(pieces)])

    def _bind(self, vocab: Vocabulary) -> "BoundPotential":
        return BoundPotential(self, vocab)


def _fields(obj: object) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(vars(obj).items()) if not k.startswith("_"))


class BoundPotential(BoundConstraint):
    def __init__(self, potential: Constraint, vocab: Vocabulary) -> None:
        self.potential = potential
        self.vocab = vocab
        self.name = potential.describe()

    def value(self, text: str, end: bool) -> float:
        fn = self.potential.complete if end else self.potential.prefix
        return check_unit_interval(fn(text), f"{self.name}.{'complete' if end else 'prefix'}({text[-40:]!r})")

    def start(self, prefix: bytes) -> "PotentialState":
        return PotentialState(self, prefix)


class PotentialState(TokenState):
    def __init__(self, bound: BoundPotential, prefix: bytes) -> None:
        self.bound = bound
        self.exact = bound.potential.exact
        self.boolean = bound.potential.boolean
        self.awrs_runs = max(1, int(bound.potential.awrs_runs))
        self.data = prefix
        self.log_here = safe_log(bound.value(decode(prefix), end=False))
        self._row: np.ndarray | None = None

    def log_phi(self, token: int) -> float:
        if self.log_here == -math.inf:
            return -math.inf
        vocab = self.bound.vocab
        end = bool(vocab.eos_mask[token])
        text = decode(self.data, final=True) if end else decode(self.data + vocab.pieces[token])
        return safe_log(self.bound.value(text, end)) - self.log_here

    def log_phi_row(self) -> np.ndarray:
        if self._row is None:
            v = self.bound.vocab
            if self.log_here == -math.inf:
                self._row = np.full(len(v), -math.inf)
            else:
                values = np.asarray(self.bound.potential.prefix_row(decode(self.data), v.pieces, v.eos_mask), dtype=float)
                if values.shape != (len(v),) or not np.all((values >= 0.0) & (values <= 1.0)):
                    raise ConstraintError(f"{self.bound.name}.prefix_row must return {len(v)} values in [0, 1]")
                ended = decode(self.data, final=True)
                if ended != decode(self.data):  # ending inside a character: the reply reads U+FFFD there
                    values = values.copy()
                    values[v.eos_mask] = self.bound.value(ended, end=True)
                with np.errstate(divide="ignore"):
                    self._row = np.log(values) - self.log_here
        return self._row

    def advance(self, token: int) -> None:
        self.data += self.bound.vocab.pieces[token]
        self.log_here = safe_log(self.bound.value(decode(self.data), end=False))
        self._row = None


class PrefixPredicate(Potential):
    """A hard constraint given by a user predicate on the text so far (see `prefix`)."""

    boolean = True

    def __init__(self, fn: Callable[[str], bool], complete: Callable[[str], bool] | None, name: str | None,
                 awrs_runs: int = 4) -> None:
        if not callable(fn) or (complete is not None and not callable(complete)):
            raise ConstraintError("prefix: give a callable text -> bool (and optionally complete=callable)")
        self.fn, self.complete_fn, self.awrs_runs = fn, complete, awrs_runs
        self.name = name or f"{_code_name(fn)}" + (f", complete={_code_name(complete)}" if complete else "")

    def describe(self) -> str:
        return f"prefix({self.name})"

    def prefix(self, text: str) -> float:
        return 1.0 if self._asked(self.fn, text) else 0.0

    def complete(self, text: str) -> float:
        return 1.0 if self._asked(self.fn, text) and (self.complete_fn is None or
                                                       self._asked(self.complete_fn, text)) else 0.0

    def _asked(self, fn: Callable[[str], bool], text: str) -> bool:
        """`fn(text)`, which must be a bool: a predicate that forgot its `return` answered None,
        read as False, and every particle died with nothing to say why."""
        answer = fn(text)
        if not isinstance(answer, (bool, np.bool_)):
            raise ConstraintError(f"{self.describe()}: the predicate must return True or False, got "
                                  f"{type(answer).__name__} {answer!r} for {text[-40:]!r}")
        return bool(answer)


def _code_name(fn: Callable) -> str:
    """A stable name for a function: its qualified name and a hash of its code, constants and
    closure values (so the response cache tells two different predicates apart); a
    `functools.partial` adds its bound arguments, a callable object its `__call__` and attributes
    (both hashed to one name whatever their arguments or state)."""
    h = hashlib.sha256()
    extra: Any = ()
    if isinstance(fn, functools.partial):
        fn, extra = fn.func, (fn.args, sorted(fn.keywords.items()))
    elif not hasattr(fn, "__code__") and hasattr(type(fn), "__call__"):
        extra = sorted(getattr(fn, "__dict__", {}).items())
        fn = type(fn).__call__
    code = getattr(fn, "__code__", None)
    if code is not None:
        h.update(code.co_code + repr(code.co_consts).encode())
    cells = getattr(fn, "__closure__", None) or ()
    h.update(repr([c.cell_contents for c in cells]).encode())
    if extra:  # a plain function's name is what it always was
        h.update(repr(extra).encode())
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}#{h.hexdigest()[:12]}"


def prefix(fn: Callable[[str], bool], *, complete: Callable[[str], bool] | None = None,
           name: str | None = None, awrs_runs: int = 4) -> PrefixPredicate:
    """A hard constraint from a predicate on the reply so far: fn(text) answers "can this prefix
    still be completed?" (it must stay False once False); a finished reply must satisfy fn and, when
    given, `complete(text)`. Checked only on the candidates AWRS visits, so the
    weights are estimated (unbiased); `name` sets its description (the cache key) explicitly;
    `awrs_runs` AWRS draws are averaged per token (see `Potential.awrs_runs`)."""
    return PrefixPredicate(fn, complete, name, awrs_runs)
