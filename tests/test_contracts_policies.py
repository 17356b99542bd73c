"""`policies.contract.check_policy` against every built-in policy, on exact programs.

Every `Policy` class found by walking the `policies` package must have an entry in `BUILT_IN`
(a factory, its claims and the programs it applies to), so a new policy cannot skip the contract.
Exact answers come from `Enumerate` (itself checked against brute force in test_exact_inference).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, Callable

import pytest

import policies
from policies.contract import Case, Claims, PolicyContractViolation, check_policy
from tests.exact_programs import BY_NAME
from tests.exact_vector_programs import VECTOR_PROGRAMS


def _case(name: str) -> Case:
    prog = BY_NAME[name]
    return Case(name, prog.program, prog.args, prog.kwargs, prog.hard)


SOFT = [_case(n) for n in ("api_example", "hmm", "shaped", "async_program")]
HARD = [_case(n) for n in ("needle_guarantees", "dice")]


def _vector_case(case: Case) -> Case:
    """The same case written for arrays, its exact answer from the scalar program."""
    program, args = VECTOR_PROGRAMS[case.name]
    return Case(case.name, program, args, {}, case.hard, reference=case.program)


def sized(cls: type, n: int, **settings: Any) -> Callable[..., policies.Policy]:
    """A factory for `cls` with population size n: `num_particles` (AheadByK sizes its votes with
    `max_samples`, a cap on draws rather than a population)."""
    size = next(f for f in ("num_particles", "max_samples") if f in cls.model_fields)
    return lambda **overrides: cls(**{size: n, **settings, **overrides})


BUILT_IN: dict[str, tuple[Callable[..., policies.Policy], Claims, list[Case]]] = {
    "Enumerate": (lambda **o: policies.Enumerate(**o), Claims("exact", budget=False), SOFT + HARD),
    "Forward": (sized(policies.Forward, 100), Claims("none", posterior=False), SOFT),
    "Importance": (sized(policies.Importance, 100), Claims("unbiased"), SOFT + HARD),
    "Rejection": (sized(policies.Rejection, 50), Claims("unbiased"), HARD),
    "SMC": (sized(policies.SMC, 100), Claims("unbiased"), SOFT + HARD),
    "TwistedSMC": (sized(policies.TwistedSMC, 100, critic=lambda prefix: 0.3 * len(prefix.samples()),
                         proposal="twisted"),
                   Claims("unbiased"), SOFT + HARD),
    "TemperedSMC": (sized(policies.TemperedSMC, 100, schedule=[0.25, 0.5, 1.0]), Claims("unbiased"), SOFT + HARD),
    "VectorizedSMC": (sized(policies.VectorizedSMC, 100), Claims("unbiased"), [_vector_case(c) for c in SOFT + HARD]),
    "BestOfN": (sized(policies.BestOfN, 100), Claims("unbiased"), SOFT),
    "SelfConsistency": (sized(policies.SelfConsistency, 100), Claims("unbiased"), SOFT),
    "AheadByK": (sized(policies.AheadByK, 300, k=3), Claims("none", posterior=False), HARD),
    "Beam": (lambda **o: policies.Beam(**{"width": 3, "expand": 3, **o}), Claims("lower_bound", posterior=False),
             SOFT + HARD),
    "TreeSearch": (lambda **o: policies.TreeSearch(**{"expand": 3, "num_simulations": 16, **o}),
                   Claims("lower_bound", posterior=False), SOFT + HARD),
}
"""Policy class name → (factory, what it claims, the exact programs it applies to). TemperedSMC
uses a fixed schedule: its adaptive one makes Ẑ consistent but biased (docs/theory.md §5.3).
TwistedSMC gets an arbitrary finite critic: any such twist must leave Ẑ unbiased and the target
unchanged (docs/theory.md §4.3); test_twisted_smc checks the exact critics."""


def policy_classes() -> set[str]:
    found = set()
    for info in pkgutil.walk_packages(policies.__path__, "policies."):
        module = importlib.import_module(info.name)
        found |= {name for name, obj in vars(module).items()
                  if inspect.isclass(obj) and issubclass(obj, policies.Policy) and not inspect.isabstract(obj)
                  and obj.__module__ == module.__name__}
    return found


def test_every_policy_class_is_under_contract():
    assert policy_classes() == set(BUILT_IN)


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_built_in_policy_keeps_the_contract(name):
    make, claims, cases = BUILT_IN[name]
    report = check_policy(make, claims, cases=cases)
    assert set(report) >= {c.name for c in cases} | {"bad input"}


# -- the contract can fail --------------------------------------------------------------------------
class _ForgetsTheDead(policies.Importance):
    """A deliberately broken policy: its Ẑ averages over the surviving draws only, as if killed
    particles were lost (docs/theory.md §3.4 says they are evidence)."""

    async def _run(self, ctx, args, kwargs):
        import numpy as np

        result = await super()._run(ctx, args, kwargs)
        alive = result.log_weights[result.log_weights > -np.inf]
        result.log_evidence = float(np.logaddexp.reduce(alive) - np.log(len(alive)))
        result.policy = type(self).__name__
        return result


class _NamesItsParent(policies.Importance):
    """A subclass that reports its parent's name (what hard-coded policy names did)."""

    async def _run(self, ctx, args, kwargs):
        result = await super()._run(ctx, args, kwargs)
        result.policy = "Importance"
        return result


class _Unseeded(policies.Importance):
    """A policy that draws from an unseeded generator somewhere (here: a jitter on log Ẑ)."""

    async def _run(self, ctx, args, kwargs):
        import random

        result = await super()._run(ctx, args, kwargs)
        result.log_evidence += random.random() * 1e-6
        result.policy = type(self).__name__
        return result


def _ignores(setting: str, make: Callable[..., policies.Policy]) -> Callable[..., policies.Policy]:
    """A factory that silently drops one setting (what a policy with an unvalidated field does)."""
    return lambda **overrides: make(**{k: v for k, v in overrides.items() if k != setting})


@pytest.mark.parametrize(("broken", "claims", "match"), [
    (sized(_ForgetsTheDead, 300), Claims("unbiased"), r"evidence \(unbiased\) on 'needle_guarantees'"),
    (sized(_NamesItsParent, 300), Claims("unbiased"), "not the class name '_NamesItsParent'"),
    (sized(policies.Forward, 300), Claims("unbiased"), r"evidence \(unbiased\)"),
    (sized(policies.Importance, 100), Claims("lower_bound"), r"evidence \(lower bound\)"),
    (sized(policies.Forward, 300), Claims("none", posterior=True), "posterior on 'needle_guarantees'"),
    (sized(_Unseeded, 100), Claims("unbiased"), "reproducibility on 'needle_guarantees'"),
    (_ignores("budget", sized(policies.Importance, 100)), Claims("unbiased"), "budget on 'long_program'"),
    (_ignores("runtime", sized(policies.Importance, 100)), Claims("unbiased"), "runtime='nowhere' was accepted"),
])
def test_the_contract_catches_a_broken_policy(broken, claims, match):
    with pytest.raises(PolicyContractViolation, match=match):
        check_policy(broken, claims, cases=[HARD[0]], repeats=10)
