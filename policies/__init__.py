"""Inference policies: each a small class with `.run(program, *args, **kwargs) -> Result`.

Every policy is an approximate sampler for p(τ) ∝ π(τ)Φ(τ) and an estimator of log Z (or, for the
search policies, says precisely what it returns instead).
"""

from policies.base import Budget, Policy, RunContext
from policies.enumerate import Enumerate
from policies.forward import Forward
from policies.importance import Importance
from policies.rejection import Rejection
from policies.smc import SMC

__all__ = ["Budget", "Policy", "RunContext", "Enumerate", "Forward", "Importance", "Rejection", "SMC"]
