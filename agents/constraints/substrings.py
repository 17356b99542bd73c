"""`forbid_substrings` / `forbid_chars`: the reply never contains any of the given strings.

Φ(x) = Φ_end(x) = 1[no forbidden string occurs in x]. Lifted to tokens on the UTF-8 bytes (UTF-8
is self-synchronising, so a byte match is a character match): token v is allowed after x iff the
bytes tail(x)·v contain no forbidden string, where tail(x) is the last (longest − 1) bytes of x.
Vectorised: a static mask of the tokens that contain a forbidden string (computed once per
vocabulary), plus, when x ends with the first j bytes s[:j] of a forbidden s, the tokens that start
with the rest s[j:] (one mask per (s, j), computed once on first use). End-of-generation and control
tokens carry no bytes and are always allowed.
"""

from __future__ import annotations

import json
import math

import numpy as np

from agents.constraints.base import BoundConstraint, Constraint, ConstraintError, TokenState, as_sequence
from agents.constraints.vocabulary import Vocabulary


class ForbidSubstrings(Constraint):
    exact = True
    boolean = True
    defined_by_description = True

    def __init__(self, strings: list[str], label: str = "forbid_substrings") -> None:
        if not strings or any(not isinstance(s, str) or not s for s in strings):
            raise ConstraintError(f"{label}: give non-empty strings, got {strings!r}")
        self.strings = sorted(set(strings))
        self.label = label

    def describe(self) -> str:
        return f"{self.label}({json.dumps(self.strings, ensure_ascii=False)})"

    def prefix(self, text: str) -> float:
        return 0.0 if any(s in text for s in self.strings) else 1.0

    complete = prefix

    def _bind(self, vocab: Vocabulary) -> "BoundSubstrings":
        return BoundSubstrings([s.encode("utf-8") for s in self.strings], vocab)


class BoundSubstrings(BoundConstraint):
    def __init__(self, forbidden: list[bytes], vocab: Vocabulary) -> None:
        self.forbidden = forbidden
        self.vocab = vocab
        self.tail_len = max(len(s) for s in forbidden) - 1
        contains = np.array([any(s in p for s in forbidden) for p in vocab.pieces])
        self.static_row = np.where(contains, -math.inf, 0.0)
        self._starts: dict[bytes, np.ndarray] = {}

    def starts_with(self, rest: bytes) -> np.ndarray:
        """Mask of the tokens whose bytes start with `rest`."""
        mask = self._starts.get(rest)
        if mask is None:
            mask = self._starts[rest] = np.array([p.startswith(rest) for p in self.vocab.pieces])
        return mask

    def start(self, prefix: bytes) -> "SubstringState":
        return SubstringState(self, prefix)


class SubstringState(TokenState):
    exact = True
    boolean = True

    def __init__(self, bound: BoundSubstrings, prefix: bytes) -> None:
        self.bound = bound
        self.dead = any(s in prefix for s in bound.forbidden)
        self.tail = prefix[-bound.tail_len:] if bound.tail_len else b""

    def log_phi_row(self) -> np.ndarray:
        if self.dead:
            return np.full(self.bound.static_row.shape, -math.inf)
        row = self.bound.static_row
        masks = [self.bound.starts_with(s[j:]) for s in self.bound.forbidden
                 for j in range(1, len(s)) if self.tail.endswith(s[:j])]
        if masks:
            row = row.copy()
            for m in masks:
                row[m] = -math.inf
        return row

    def log_phi(self, token: int) -> float:
        if self.dead:
            return -math.inf
        text = self.tail + self.bound.vocab.pieces[token]
        return -math.inf if any(s in text for s in self.bound.forbidden) else 0.0

    def advance(self, token: int) -> None:
        text = self.tail + self.bound.vocab.pieces[token]
        self.dead = self.dead or any(s in text for s in self.bound.forbidden)
        n = self.bound.tail_len
        self.tail = text[-n:] if n else b""


def forbid_substrings(strings: list[str] | str) -> ForbidSubstrings:
    """The reply never contains any of `strings` (case-sensitive; list both cases if needed)."""
    return ForbidSubstrings(as_sequence(strings))


def forbid_chars(chars: str) -> ForbidSubstrings:
    """The reply never contains any character of `chars`, e.g. forbid_chars("eE") (a lipogram)."""
    if not isinstance(chars, str) or not chars:
        raise ConstraintError(f"forbid_chars: give a non-empty string of characters, got {chars!r}")
    return ForbidSubstrings(list(chars), label="forbid_chars")
