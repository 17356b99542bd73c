"""Inference policies: each a small class with `.run(program, *args, **kwargs) -> Result`.

Every policy is an approximate sampler for p(τ) ∝ π(τ)Φ(τ) and an estimator of log Z (or, for the
search policies, says precisely what it returns instead).

| policy | targets p? | what it returns |
|---|---|---|
| Enumerate | exactly | every path, exact log Z |
| Forward, Importance, Rejection | yes (Importance: SNIS) | weighted draws, unbiased Ẑ |
| SMC, TwistedSMC, TemperedSMC | yes | weighted population, unbiased Ẑ |
| SelfConsistency, AheadByK | the answer marginal / a voting contract | vote shares, error bounds |
| BestOfN, Beam, TreeSearch | no: search | the best-found traces; a lower bound on log Z |
"""

from policies.ahead_by_k import AheadByK
from policies.base import Budget, Policy, RunContext
from policies.beam import Beam
from policies.best_of_n import BestOfN
from policies.critics import EnumerationCritic, JudgeCritic, RolloutCritic
from policies.diagnostics import diagnose
from policies.enumerate import Enumerate
from policies.forward import Forward
from policies.importance import Importance
from policies.judges import Calibration, Judge
from policies.mellowmax import mellowmax
from policies.rejection import Rejection
from policies.self_consistency import SelfConsistency
from policies.smc import SMC
from policies.tempered_smc import TemperedSMC
from policies.tree_search import TreeSearch
from policies.twisted_smc import TwistedSMC

__all__ = [
    "Budget", "Policy", "RunContext",
    "Enumerate", "Forward", "Importance", "Rejection", "SMC", "TwistedSMC", "TemperedSMC",
    "BestOfN", "SelfConsistency", "AheadByK", "Beam", "TreeSearch",
    "Judge", "Calibration", "diagnose", "mellowmax",
    "RolloutCritic", "EnumerationCritic", "JudgeCritic",
]
