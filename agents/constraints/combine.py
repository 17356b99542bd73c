"""`all_of`: the conjunction (product) of constraints and potentials: Φ = Π_k Φ_k.

The guide of a product holds one state per part: exact parts' rows add up (log φ = Σ_k log φ_k),
estimated parts are applied by AWRS on top (see `agents.constraints.guide`).
"""

from __future__ import annotations

from agents.constraints.base import Constraint, ConstraintError
from agents.constraints.vocabulary import Vocabulary


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
