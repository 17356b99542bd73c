"""Probes of `policies.TwistedSMC`: what a particle its critic killed is counted under."""

from __future__ import annotations

import math

import pytest

import policies
from policies.critics import EnumerationCritic
from swarm import Bernoulli, NoSurvivingParticles, factor, guarantee, sample


def _fails_later():
    sample("a", Bernoulli(0.5))
    factor("f", 0.0)
    return {}["missing"]  # every completion raises: the exact soft value is −inf everywhere


def test_a_run_the_critic_killed_says_the_critic_killed_it():
    """The exact critic sees no completion of any prefix finish, so V = −inf kills every particle at
    'f'. The error named only "'f' killed 8", a factor of log-potential 0; it names the critic."""
    with pytest.raises(NoSurvivingParticles, match=r"critic \(V = -inf\) at 'f'.* killed 8"):
        policies.TwistedSMC(num_particles=8, seed=0, critic=EnumerationCritic()).run(_fails_later)


def test_critic_kills_are_counted_apart_from_the_programs_own():
    def program():
        x = sample("x", Bernoulli(0.5))
        factor("f", 0.0)
        sample("y", Bernoulli(0.5))
        guarantee("g", not x)
        return x

    def critic(prefix):
        return -math.inf if prefix.samples().get("x") else 0.0

    result = policies.TwistedSMC(num_particles=40, seed=0, critic=critic).run(program)
    assert set(result.diagnostics.deaths) == {"TwistedSMC critic (V = -inf) at 'f'"}
    assert all(p.value is False for p in result.particles if p.status == "finished")
