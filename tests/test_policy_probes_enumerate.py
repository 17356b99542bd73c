"""Probes of `policies.Enumerate` on programs that lose paths to infrastructure failures."""

from __future__ import annotations

import math

import pytest

import policies
from swarm import BackendUnavailable, Uniform, factor, guarantee, sample, ParticleLost


def _lossy(lost_values: int):
    """b ~ Uniform(0..19); b < lost_values is lost (a backend that failed for good)."""
    a = sample("a", Uniform([0, 1, 2]))
    factor("f", 0.5 * a)
    b = sample("b", Uniform(range(20)))
    if b < lost_values:
        raise ParticleLost("backend down", source="fake")
    guarantee("g", a != 2 or b > 10)
    return a


def _unlossy():
    """The same target with the lost values left out of b's support (missing at random)."""
    a = sample("a", Uniform([0, 1, 2]))
    factor("f", 0.5 * a)
    b = sample("b", Uniform(range(1, 20)))
    guarantee("g", a != 2 or b > 10)
    return a


def test_a_lost_path_is_missing_data_not_zero_mass():
    """One b value in 20 is lost on every branch (π(lost) = 0.05). The sampling policies' Ẑ is a
    mean over the particles not lost, i.e. Σ_{not lost} πΦ / (1 − π(lost)); Enumerate computes
    that exactly (the same as enumerating the program without the lost value), and says its result
    is not exact. It summed the found paths only: log Z 0.2203 instead of 0.2716, exact=True."""
    lossy = policies.Enumerate().run(_lossy, 1)
    reference = policies.Enumerate().run(_unlossy)
    assert lossy.log_evidence == pytest.approx(reference.log_evidence, abs=1e-12)
    assert lossy.marginal() == pytest.approx(reference.marginal(), abs=1e-12)
    assert not lossy.exact and reference.exact
    assert lossy.extra["lost_mass"] == pytest.approx(0.05, abs=1e-12)
    assert lossy.diagnostics.lost == 3


def test_losing_more_than_max_lost_fraction_of_the_mass_stops_the_run():
    with pytest.raises(BackendUnavailable, match=r"proposal mass 0\.15 .*max_lost_fraction=0\.1"):
        policies.Enumerate().run(_lossy, 3)
    result = policies.Enumerate(max_lost_fraction=0.2).run(_lossy, 3)
    assert result.extra["lost_mass"] == pytest.approx(0.15, abs=1e-12)
    assert math.isfinite(result.log_evidence)
