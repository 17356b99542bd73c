"""Probes of budgets: a run a budget stops before any particle survives says so."""

from __future__ import annotations

import pytest

import policies
from policies import Budget
from swarm import NoSurvivingParticles
from tests.exact_programs import impossible

INSTANT = Budget(max_seconds=1e-9)


@pytest.mark.parametrize("policy", [
    policies.AheadByK(k=3, seed=0, budget=INSTANT),
    policies.Rejection(num_particles=3, batch_size=1, seed=0, budget=INSTANT),
    policies.Importance(num_particles=6, batch_size=1, seed=0, budget=INSTANT),
    policies.SelfConsistency(num_particles=6, batch_size=1, seed=0, budget=INSTANT),
    policies.BestOfN(num_particles=6, batch_size=1, seed=0, budget=INSTANT),
], ids=lambda p: type(p).__name__)
def test_a_budget_stop_before_any_survivor_is_named(policy):
    """The budget stops these after their first draw; the error names it, beside the one death,
    where it read as if the program could not succeed ("'never' killed 1 (0 of 1 draws accepted)")."""
    with pytest.raises(NoSurvivingParticles, match=r"'never' killed 1 .*the budget \(max_seconds\) stopped the run first"):
        policy.run(impossible)


def test_without_a_budget_the_error_is_unchanged():
    with pytest.raises(NoSurvivingParticles) as caught:
        policies.Importance(num_particles=6, seed=0).run(impossible)
    assert "budget" not in str(caught.value)
