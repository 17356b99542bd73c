"""`all_of`: the conjunction (product) of constraints and potentials: Φ = Π_k Φ_k (defined in
`agents.constraints.base`, beside `Constraint.__and__`, which builds it)."""

from agents.constraints.base import AllOf, all_of  # noqa: F401 - re-exported
