"""Probes of `policies.TreeSearch`: what its listeners are told against its diagnostics."""

from __future__ import annotations

import pytest

import policies
from swarm.listeners import RunListener
from tests.exact_programs import chain3, no_two_heads


@pytest.mark.parametrize("program", [no_two_heads, chain3], ids=lambda p: p.__name__)
def test_streamed_steps_agree_with_the_diagnostics(program):
    """Each simulation's StepEnd and its `diagnostics.steps` entry describe the same children: the
    same ESS (of their joint masses log π + log w, the result's particle weights) and the same
    number alive. The stream got the children's values Q as log weights and the diagnostics the
    number of children as ESS, so on no_two_heads they disagreed at 3 of 8 steps."""
    events = list(policies.TreeSearch(seed=0, num_simulations=8).stream(program))
    result = events[-1].result
    ends = [e for e in events if e.type == "step_end"]
    steps = result.diagnostics.steps
    assert [e.ess for e in ends] == pytest.approx([s.ess for s in steps], rel=1e-12)
    assert [e.alive for e in ends] == [s.num_alive for s in steps]
    assert all(0.0 <= s.ess <= s.num_alive for s in steps)


def test_a_step_records_the_joint_masses_of_the_children():
    """The records' log weights are the children's joint masses (dead ones −inf), as the result's."""
    records = []

    class Steps(RunListener):
        def on_step(self, record):
            records.append(record)

    result = policies.TreeSearch(seed=0, num_simulations=40, listeners=[Steps()]).run(no_two_heads)
    finals = {p.id: p.log_weight for p in result.particles}
    seen = {pid: lw for r in records for pid, lw in zip(r.particle_ids, r.log_weights)}
    assert finals and all(seen[pid] == pytest.approx(lw, rel=1e-12) for pid, lw in finals.items())
    assert all(lw <= 0.0 for lw in seen.values())  # log π + log w of a program with guarantees only


def test_listeners_count_the_deaths_the_diagnostics_count():
    """Children that die as duplicates of a sibling merge into one node, but each execution's death
    is in `diagnostics.deaths`; the step records hold them too, so a stream counts the same deaths
    (it counted 6 of 13 on this run)."""
    events = list(policies.TreeSearch(seed=4, num_simulations=20).stream(no_two_heads))
    result = events[-1].result
    streamed: dict[str, int] = {}
    for e in events:
        if e.type == "step_end":
            for site, n in e.deaths.items():
                streamed[site] = streamed.get(site, 0) + n
    assert streamed == result.diagnostics.deaths and sum(streamed.values()) > 0
