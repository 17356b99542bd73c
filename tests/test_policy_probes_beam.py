"""Probes of `policies.Beam`: what its listeners are told against what it returns."""

from __future__ import annotations

import pytest

import policies
from swarm import Bernoulli, NoSurvivingParticles, factor, guarantee, sample
from tests.exact_programs import chain3, no_two_heads


@pytest.mark.parametrize("objective", ["weight", "joint"])
def test_streamed_steps_report_the_ess_the_diagnostics_and_the_result_report(objective):
    """Each step's StepEnd (the listener record) carries the ESS of `diagnostics.steps` (the beam's
    ESS under p̃), and the last one the result's ESS. With objective="weight" the records carried
    the scores' ESS instead (1.65 against 1.99 at the first step of chain3)."""
    events = list(policies.Beam(seed=0, objective=objective).stream(chain3))
    result = events[-1].result
    streamed = [e.ess for e in events if e.type == "step_end"]
    assert streamed == pytest.approx([s.ess for s in result.diagnostics.steps], rel=1e-12)
    assert streamed[-1] == pytest.approx(result.ess, rel=1e-12)


def _stream(policy, program):
    events, error = [], None
    try:
        for event in policy.stream(program):
            events.append(event)
    except Exception as exc:  # noqa: BLE001 - returned to the test
        error = exc
    return events, error


def test_listeners_count_the_children_that_died():
    """Every child that died in a step is in the step's record (weight 0), so the deaths a stream
    or trace file counts are the result's `diagnostics.deaths`; the records held the beam only and
    `swarm inspect` showed "deaths: 0" beside 13 deaths."""
    events, _ = _stream(policies.Beam(seed=4), no_two_heads)
    result = events[-1].result
    streamed: dict[str, int] = {}
    for e in events:
        if e.type == "step_end":
            assert e.alive == next(s.num_alive for s in result.diagnostics.steps if s.step == e.step)
            for site, n in e.deaths.items():
                streamed[site] = streamed.get(site, 0) + n
    assert streamed == result.diagnostics.deaths and sum(streamed.values()) > 0


def test_the_step_in_which_every_child_died_is_recorded_before_the_run_raises():
    def late_death():
        x = sample("x", Bernoulli(0.5))
        factor("a", 0.0)
        sample("y", Bernoulli(0.5))
        guarantee("late", False)
        return x

    events, error = _stream(policies.Beam(seed=0), late_death)
    assert isinstance(error, NoSurvivingParticles)
    ends = [e for e in events if e.type == "step_end"]
    assert [e.step for e in ends] == [1, 2]
    assert ends[-1].deaths == {"late": 8} and ends[-1].alive == 0 and ends[-1].ess == 0.0
