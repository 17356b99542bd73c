"""Probes of `policies.diagnostics.diagnose` on the results of every kind of policy."""

from __future__ import annotations

import policies
from policies.diagnostics import diagnose
from tests.exact_programs import no_two_heads


def test_search_failure_rates_are_fractions_of_the_segments_run():
    """A beam returns `width` particles but counts the deaths of every child it expanded: its
    failure rate of a site is deaths / segments run (`extra["executions"]`), a fraction in [0, 1].
    Dividing by the 4 returned particles reported 'ok4' rejecting 125% of executions."""
    for policy in (policies.Beam(width=4, expand=4, seed=0), policies.TreeSearch(num_simulations=30, seed=0)):
        result = policy.run(no_two_heads)
        assert sum(result.diagnostics.deaths.values()) > len(result.particles)  # the case in question
        rates = diagnose(result).finding("composition").metrics["failure_rates"]
        assert rates and all(0.0 <= r <= 1.0 for r in rates.values()), (type(policy).__name__, rates)
        executions = result.extra["executions"]
        assert rates == {site: n / executions for site, n in result.diagnostics.deaths.items()}
