"""Probes of the sequential stopping rules (Rejection, AheadByK): draws run in batches but are
consumed in order, so everything a result reports must be that of the one-at-a-time procedure."""

from __future__ import annotations

import pytest

import policies
from policies.diagnostics import diagnose
from tests.exact_programs import dice


def _report(result):
    return (result.extra.get("samples_used", result.extra.get("attempts")), dict(result.diagnostics.deaths),
            result.log_evidence, [p.id for p in result.particles])


@pytest.mark.parametrize("make", [lambda b: policies.AheadByK(k=3, seed=4, batch_size=b),
                                  lambda b: policies.Rejection(num_particles=10, seed=4, batch_size=b)],
                         ids=["AheadByK", "Rejection"])
def test_deaths_do_not_depend_on_the_batch_size(make):
    """The red flags counted in `diagnostics.deaths` are those of the draws the rule consumed (as
    `samples_used` / `attempts` are): draws made after the stop are not the run's. With a batch of
    100, AheadByK counted 72 red flags beside samples_used = 42 (29 at batch size 1)."""
    one_at_a_time = _report(make(1).run(dice))
    for batch_size in (3, 64, 4096):
        assert _report(make(batch_size).run(dice)) == one_at_a_time, batch_size
    used, deaths, _, particles = one_at_a_time
    assert sum(deaths.values()) == used - len(particles)


def test_diagnosed_failure_rates_stay_fractions_with_large_batches():
    result = policies.AheadByK(k=3, seed=4, batch_size=100).run(dice)
    rates = diagnose(result).finding("composition").metrics["failure_rates"]
    assert 0.0 < rates["at_least_9"] <= 1.0
