"""Probes of what listeners (the trace file, `policy.stream`) are told by each policy."""

from __future__ import annotations

import pytest

import policies
from tests.exact_programs import dice, impossible

from swarm import NoSurvivingParticles


@pytest.mark.parametrize("make", [lambda: policies.Rejection(num_particles=10, seed=4),
                                  lambda: policies.AheadByK(k=3, seed=4, batch_size=7)],
                         ids=["Rejection", "AheadByK"])
def test_a_sequential_rule_reports_its_rejected_draws_as_deaths(make):
    """The step a listener gets holds every draw the rule consumed: the accepted ones (weight 1)
    and the rejected ones, dead by the guarantee they failed, so its deaths are the result's
    `diagnostics.deaths` (the step held only the accepted draws: "deaths: 0" in `swarm inspect`
    beside 16 rejections), while its ESS and log Ẑ stay those of the result."""
    events = list(make().stream(dice))
    result = events[-1].result
    (step,) = [e for e in events if e.type == "step_end"]
    assert step.deaths == result.diagnostics.deaths and step.deaths["at_least_9"] > 0
    assert step.alive == len(result.particles)
    assert step.num_particles == result.extra.get("attempts", result.extra.get("samples_used"))
    assert step.ess == pytest.approx(result.ess) and step.log_evidence == result.log_evidence


@pytest.mark.parametrize("make", [lambda: policies.Rejection(num_particles=3, max_attempts=20, seed=0),
                                  lambda: policies.AheadByK(k=2, max_samples=20, seed=0)],
                         ids=["Rejection", "AheadByK"])
def test_a_sequential_rule_that_accepts_nothing_reports_its_draws_before_raising(make):
    stream = iter(make().stream(impossible))
    seen = []
    with pytest.raises(NoSurvivingParticles):
        for event in stream:
            seen.append(event)
    (step,) = [e for e in seen if e.type == "step_end"]
    assert step.deaths == {"never": 20} and step.alive == 0
