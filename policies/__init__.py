"""Inference policies: each a small class with `.run(program, *args, **kwargs) -> Result`.

Every policy is an approximate sampler for p(τ) ∝ π(τ)Φ(τ) and an estimator of log Z (or, for the
search policies, says precisely what it returns instead). docs/theory.md has the math.

| policy | targets p? | what it returns |
|---|---|---|
| Enumerate | exactly | every path, exact log Z |
| Forward, Importance, Rejection | yes (Importance: SNIS) | weighted draws, unbiased Ẑ |
| SMC, TwistedSMC, TemperedSMC | yes | weighted population, unbiased Ẑ |
| VectorizedSMC (numeric array programs) | yes | the same, the population as arrays |
| SelfConsistency, AheadByK | the answer marginal / a voting contract | vote shares, error bounds |
| BestOfN, Beam, TreeSearch | no: search | the best-found traces; a lower bound on log Z |

The public surface, by kind:

- algorithms: here (`policies.SMC`, …), with `Budget` and the `Policy` base class to write one
  (docs/extending.md; `policies.contract.check_policy` tests it);
- potentials (judges, their calibration, critics): `policies.potentials`;
- utilities: `policies.mellowmax` (backup operators), `policies.diagnostics` (`diagnose`, basins).

The potentials and utilities used to be importable from `policies` itself; those names still work
and warn (DeprecationWarning) with their new home.
"""

import importlib
import types
import warnings

from policies.ahead_by_k import AheadByK
from policies.base import Budget, Policy, RunContext
from policies.beam import Beam
from policies.best_of_n import BestOfN
from policies.enumerate import Enumerate
from policies.forward import Forward
from policies.importance import Importance
from policies.rejection import Rejection
from policies.self_consistency import SelfConsistency
from policies.smc import SMC
from policies.tempered_smc import TemperedSMC
from policies.tree_search import TreeSearch
from policies.twisted_smc import TwistedSMC
from policies.vectorized_smc import VectorizedSMC

__all__ = [
    "Budget", "Policy", "RunContext",
    "Enumerate", "Forward", "Importance", "Rejection", "SMC", "TwistedSMC", "TemperedSMC", "VectorizedSMC",
    "BestOfN", "SelfConsistency", "AheadByK", "Beam", "TreeSearch",
]

_MOVED = {
    "Judge": "policies.potentials", "Calibration": "policies.potentials",
    "RolloutCritic": "policies.potentials", "EnumerationCritic": "policies.potentials",
    "JudgeCritic": "policies.potentials", "diagnose": "policies.diagnostics",
}
"""Names `policies` used to export → the module they live in now."""


def __getattr__(name: str):
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'policies' has no attribute {name!r}")
    warnings.warn(f"policies.{name} is deprecated: import it from {home} (`from {home} import {name}`)",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(home), name)


class _DeprecatedCallableModule(types.ModuleType):
    """`policies.mellowmax` is the module of backup operators; it used to be the function, so calling
    the module still works and warns. Remove with the other deprecated names."""

    def __call__(self, *args, **kwargs):
        warnings.warn("calling policies.mellowmax(...) is deprecated: use "
                      "`from policies.mellowmax import mellowmax`", DeprecationWarning, stacklevel=2)
        return self.mellowmax(*args, **kwargs)


importlib.import_module("policies.mellowmax").__class__ = _DeprecatedCallableModule
