"""Probes of `policies.Beam`: what its listeners are told against what it returns."""

from __future__ import annotations

import pytest

import policies
from tests.exact_programs import chain3


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
