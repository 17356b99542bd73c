"""Probes of `policies.TemperedSMC`: deaths by a −∞ factor, which β = 0 does not apply."""

from __future__ import annotations

import math

import pytest

import policies
from swarm import Bernoulli, NoSurvivingParticles, factor, sample


def _half_vetoed():
    x = sample("x", Bernoulli(0.5))
    factor("veto", -math.inf if x else 0.0)
    factor("soft", 0.5 if x else -0.5)
    return x


def _all_vetoed():
    x = sample("x", Bernoulli(0.5))
    factor("veto", -math.inf)
    return x


def test_a_minus_inf_factor_is_counted_as_a_death_like_smc_counts_it():
    """The particles whose Φ is zeroed by a −∞ factor die at the first stage above β = 0: they are
    counted under that factor, exactly as SMC counts the same particles (same seed, same draws)."""
    tempered = policies.TemperedSMC(num_particles=200, seed=0).run(_half_vetoed)
    smc = policies.SMC(num_particles=200, seed=0).run(_half_vetoed)
    assert tempered.diagnostics.deaths == smc.diagnostics.deaths
    assert 0 < tempered.diagnostics.deaths["veto"] < 200


def test_a_run_every_particle_of_which_is_vetoed_names_the_factor():
    with pytest.raises(NoSurvivingParticles, match="'veto' killed 50"):
        policies.TemperedSMC(num_particles=50, seed=0).run(_all_vetoed)


def test_a_vetoed_particle_is_dead_as_in_smc():
    """A particle whose Φ a −∞ factor zeroed has status "dead" and no value, as SMC and Importance
    report it (same seed, same draws); TemperedSMC said "finished" with its value, so filtering the
    finished particles kept a vetoed trace."""
    tempered = policies.TemperedSMC(num_particles=8, seed=1).run(_half_vetoed)
    smc = policies.SMC(num_particles=8, seed=1).run(_half_vetoed)
    assert [(p.status, p.value) for p in tempered.particles] == [(p.status, p.value) for p in smc.particles]
    assert any(p.status == "dead" for p in tempered.particles)
    assert all(p.value is False for p in tempered.particles if p.status == "finished")
