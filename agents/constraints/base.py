"""Constraints and potentials on the text a generation writes, applied token by token inside the
proposal.

A constraint C defines, for every text x (the assistant reply so far, as bytes), a prefix weight
Φ(x) ∈ [0, 1] ("can x still be completed?"; 0 or 1 for a hard constraint) and a complete weight
Φ_end(x) ∈ [0, 1] (x is a finished text). Lifted to a vocabulary, the weight of token v after x is

    φ(v | x) = Φ(x·v) / Φ(x)          for a text token v,
    φ(EOS | x) = Φ_end(x) / Φ(x)      for an end-of-generation token,

so a generation t₁…t_n that ends with EOS has Π_i φ(t_i | t_<i) = Φ_end(t₁…t_n) / Φ(ε): the token
weights telescope to the whole-text potential. Contract (checked by `assert_potential_contract`):
values in [0, 1], Φ(x) = 0 ⇒ Φ(x·y) = 0 and Φ_end(x·y) = 0 (a dead prefix stays dead).

A *guide* applies C to one generation. At each position the backend hands it the proposal's row
log q(v) (after temperature and top-p); the guide draws from the guided proposal

    q_C(v) = q(v) φ(v | x) / Z(x),      Z(x) = Σ_v q(v) φ(v | x),

and returns the token, log q_C(token) and log Z(x): the site's log weight gains Σ log Z over the
positions drawn, so the generation targets π(text)·Φ(text)/Φ(ε) exactly and a population's Ẑ
estimates π's expectation of Φ (for a hard constraint, the probability π satisfies it). Parts that
can be evaluated on the whole vocabulary at once (character sets, llguidance masks, vectorised
potentials) give Z exactly; parts that can only be checked token by token (a user predicate, a
costly potential) are handled by recursive AWRS (`agents.constraints.awrs`), whose weight is an
unbiased estimate of Z (properly weighted), and the draw is marked estimated.
"""

from __future__ import annotations

from swarm.errors import SwarmError

import codecs
import math
import weakref
from typing import TYPE_CHECKING, Sequence


from agents.constraints.state import GuidedDraw, TokenState  # noqa: F401 - re-exported
from agents.constraints.vocabulary import Vocabulary

if TYPE_CHECKING:
    from agents.constraints.guide import Guide


class ConstraintError(SwarmError, ValueError):
    """A constraint was built wrongly or misbehaved (bad pattern, schema, a potential outside [0, 1])."""


class BoundConstraint:
    """A constraint lifted to one vocabulary (the expensive part, done once and cached)."""

    def start(self, prefix: bytes) -> TokenState:  # pragma: no cover - subclasses override
        """The state after the reply's existing text `prefix` (assistant_prefix)."""
        raise NotImplementedError


_BINDINGS: "weakref.WeakKeyDictionary[Constraint, dict[str, BoundConstraint]]" = weakref.WeakKeyDictionary()
_BINDINGS_BY_DESCRIPTION: dict[tuple[str, str], BoundConstraint] = {}
_MAX_DESCRIBED = 256


class Constraint:
    """Base class of every constraint and potential. Subclasses define `describe`, `prefix`,
    `complete` (the definition, on text) and `_bind` (the token-level lift)."""

    exact: bool = True
    """True when the token weights of every token are computed at once (masks, vectorised rows);
    False when they can only be checked on sampled candidates (AWRS: estimated weights)."""
    boolean: bool = True
    """Hard constraint: Φ ∈ {0, 1}."""
    defined_by_description: bool = False
    """True for built-ins whose `describe()` determines them entirely (bindings shared by description)."""

    def describe(self) -> str:  # pragma: no cover - subclasses override
        """A stable description: part of the response-cache key and of the sample event's info."""
        raise NotImplementedError

    def prefix(self, text: str) -> float:  # pragma: no cover - subclasses override
        """Φ(text) ∈ [0, 1]: can `text` still be completed (and with which weight)?"""
        raise NotImplementedError

    def complete(self, text: str) -> float:  # pragma: no cover - subclasses override
        """Φ_end(text) ∈ [0, 1]: the weight of `text` as a finished reply."""
        raise NotImplementedError

    def _bind(self, vocab: Vocabulary) -> BoundConstraint:  # pragma: no cover - subclasses override
        raise NotImplementedError

    def parts(self) -> list["Constraint"]:
        return [self]

    def bind(self, vocab: Vocabulary) -> BoundConstraint:
        """The lift of this constraint to `vocab`, computed once per (constraint, vocabulary); for
        built-ins whose description defines them (`defined_by_description`), once per (description,
        vocabulary), so a program that builds the same constraint in every call pays for it once."""
        if self.defined_by_description:
            key = (self.describe(), vocab.fingerprint)
            bound = _BINDINGS_BY_DESCRIPTION.get(key)
            if bound is None:
                bound = _BINDINGS_BY_DESCRIPTION[key] = self._bind(vocab)
                while len(_BINDINGS_BY_DESCRIPTION) > _MAX_DESCRIBED:
                    _BINDINGS_BY_DESCRIPTION.pop(next(iter(_BINDINGS_BY_DESCRIPTION)))
            return bound
        per_vocab = _BINDINGS.setdefault(self, {})
        bound = per_vocab.get(vocab.fingerprint)
        if bound is None:
            bound = per_vocab[vocab.fingerprint] = self._bind(vocab)
        return bound

    def guide(self, vocab: Vocabulary, prefix: str = "") -> "Guide":
        """A fresh guide for one generation whose reply already holds `prefix`."""
        from agents.constraints.guide import Guide

        data = prefix.encode("utf-8")
        return Guide([c.bind(vocab).start(data) for c in self.parts()], vocab, self.describe())

    def __and__(self, other: "Constraint") -> "Constraint":
        return all_of(self, other)

    __mul__ = __and__

    def __repr__(self) -> str:
        return self.describe()


def check_unit_interval(value: object, what: str) -> float:
    """A potential's value as a float in [0, 1], or a ConstraintError naming `what`."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConstraintError(f"{what} returned {value!r}, not a number in [0, 1]") from None
    if not (0.0 <= x <= 1.0):  # NaN fails too
        raise ConstraintError(f"{what} returned {x!r}; potentials must lie in [0, 1]")
    return x


def safe_log(x: float) -> float:
    return math.log(x) if x > 0.0 else -math.inf


def decode(data: bytes, final: bool = False) -> str:
    """The text of a byte string as the reply will read: decoded like the backend decodes its
    tokens, an invalid byte as U+FFFD (dropping it let a potential judge a shorter text than the
    reply). An incomplete UTF-8 character at the end is left out (the next token may finish it),
    unless `final` (the reply ends there): then it is U+FFFD, as in the reply."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data, final=final)


def as_sequence(items: Sequence[str] | str) -> list[str]:
    return [items] if isinstance(items, str) else list(items)


class AllOf(Constraint):
    def __init__(self, parts: list[Constraint]) -> None:
        flat: list[Constraint] = []
        for c in parts:
            if not isinstance(c, Constraint):
                raise ConstraintError(f"all_of: {c!r} is not a constraint (build one with agents.constraints)")
            flat.extend(c.parts())
        if not flat:
            raise ConstraintError("all_of: give at least one constraint")
        self._parts = flat
        self.exact = all(c.exact for c in flat)
        self.boolean = all(c.boolean for c in flat)

    def parts(self) -> list[Constraint]:
        return list(self._parts)

    def describe(self) -> str:
        return "all_of(" + ", ".join(c.describe() for c in self._parts) + ")"

    def prefix(self, text: str) -> float:
        value = 1.0
        for c in self._parts:
            value *= c.prefix(text)
        return value

    def complete(self, text: str) -> float:
        value = 1.0
        for c in self._parts:
            value *= c.complete(text)
        return value

    def _bind(self, vocab: Vocabulary):  # pragma: no cover - guides bind the parts one by one
        raise ConstraintError("all_of is bound part by part (Constraint.guide)")


def all_of(*constraints: Constraint) -> Constraint:
    """The conjunction of constraints (the product of potentials); `a & b` is all_of(a, b)."""
    return constraints[0] if len(constraints) == 1 and isinstance(constraints[0], Constraint) else AllOf(list(constraints))
