"""Killed vs lost particles (issue 11, defects a and b).

- A *killed* particle is evidence: a failed guarantee, a −∞ factor, a −∞ shaping factor or a −∞
  critic value gives it weight zero and it counts in Ẑ.
- A *lost* particle is missing data: an LLM call that fails after its retries is not evidence. The
  particle is left out of the normalisation and of Ẑ, counted in `diagnostics.lost`, and too many
  lost particles in one step stop the run with `BackendUnavailable`.

The backend is a real `OpenAICompatible` client against the stdlib fault server on 127.0.0.1,
which fails every attempt of one request in three (by the request's seed, so the schedule does not
depend on arrival order).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

import policies
import swarm
from agents import Agent, GenerationSettings
from swarm import Bernoulli, factor, guarantee, sample
from tests.test_llm_faults import KeyedFaultServer, backend_for

P_TRUE = 0.3
"""The program's exact evidence: Z = P(x) = 0.3 (the LLM call's value does not enter the weight)."""


def doomed(seed: int | None) -> bool:
    """One request in three fails on every attempt (decided by its seed alone)."""
    return random.Random(f"lost/{seed}").random() < 1 / 3


def failing_plan(seed: int | None, attempt: int) -> str:
    return "500" if doomed(seed) else "ok"


def make_program(backend):
    writer = Agent(name="writer", backend=backend, settings=GenerationSettings(max_tokens=3))

    async def program():
        x = sample("x", Bernoulli(P_TRUE))
        await writer.ask("Say something.")
        guarantee("x_true", x)
        return x

    return program


def run_with_failures(policy):
    with KeyedFaultServer(failing_plan) as srv:
        backend = backend_for(srv)
        backend.max_retries = 0
        result = policy.run(make_program(backend))
    failed_requests = sum(1 for seed in srv.attempts if doomed(seed))
    return result, failed_requests


@pytest.mark.server
@pytest.mark.parametrize("policy", [policies.Importance(num_particles=900, seed=3, max_lost_fraction=0.5),
                                    policies.SMC(num_particles=900, seed=3, max_lost_fraction=0.5)],
                         ids=["Importance", "SMC"])
def test_failed_calls_are_missing_data_not_evidence(policy):
    result, failed_requests = run_with_failures(policy)
    lost = result.diagnostics.lost
    assert lost == failed_requests
    final_lost = sum(p.status == "lost" for p in result.particles)
    # Importance keeps every draw; SMC replaces its lost particles when it resamples (ESS < N/2 here)
    assert final_lost == (lost if isinstance(policy, policies.Importance) else 0)
    active = len(result.particles) - lost
    assert 0.25 * len(result.particles) < lost < 0.42 * len(result.particles)   # one in three, give or take
    # Ẑ is the mean of 1[x] over the n active particles: SE(log Ẑ) ≈ sqrt((1 − p)/(p·n)) (delta method).
    # Counting lost particles as Φ = 0 would give log(p·(1 − 1/3)) = log p − 0.405, about 8 SEs away.
    se = math.sqrt((1 - P_TRUE) / (P_TRUE * active))
    assert abs(result.log_evidence - math.log(P_TRUE)) < 4 * se
    assert abs(math.log(P_TRUE * 2 / 3) - math.log(P_TRUE)) > 6 * se   # the tolerance can tell the two apart
    assert all(p.trace.error is not None and p.trace.error.error_type == "BackendError" and p.log_weight == -math.inf
               for p in result.particles if p.status == "lost")
    assert not result.diagnostics.deaths.get("BackendError", 0)
    assert sum(result.diagnostics.lost_causes.values()) == lost


@pytest.mark.server
def test_too_many_lost_particles_stop_the_run_naming_the_backend_and_the_site():
    with pytest.raises(swarm.BackendUnavailable) as info:
        run_with_failures(policies.SMC(num_particles=60, seed=1))   # max_lost_fraction = 0.1 by default
    message = str(info.value)
    assert "lost to infrastructure failures (max_lost_fraction=0.1)" in message
    assert "writer#0/request" in message and "BackendError" in message and "HTTP 500" in message
    assert "sk-fault-test-key" not in message


# -- killed: a −∞ twist or critic value is a zero weight, not a NaN --------------------------------
def shaped_to_death():
    x = sample("x", Bernoulli(0.1))
    factor("twist", -math.inf if x else 0.0, shaping=True)   # "this prefix can never be completed"
    y = sample("y", Bernoulli(0.5))
    factor("f", 0.0 if y else -1.0)
    return y


@pytest.mark.parametrize("ess_threshold", [0.0, 0.5, 1.0])
def test_minus_inf_shaping_factor_kills_like_a_failed_guarantee(ess_threshold):
    result = policies.SMC(num_particles=400, seed=2, ess_threshold=ess_threshold).run(shaped_to_death)
    if ess_threshold == 0.0:   # no resampling: the killed particles are still in the population
        killed = [p for p in result.particles if p.status == "dead"]
        assert killed and all(p.trace.killed_by() == "twist" for p in killed)
    assert result.diagnostics.deaths.get("twist", 0) > 0
    assert math.isfinite(result.log_evidence)
    assert not np.isnan(result.log_weights).any()
    # The twist is a shaping factor: the target is π(x,y)·e^{f(y)} restricted to x = 0 by the kill.
    exact = math.log(0.9 * (0.5 + 0.5 * math.exp(-1.0)))
    assert abs(result.log_evidence - exact) < 0.15   # N = 400: SE(log Ẑ) ≈ 0.03; 5 SE


def test_minus_inf_critic_value_kills_the_particle_in_twisted_smc():
    def critic(prefix):
        x = prefix["x"].value if "x" in prefix else None
        return -math.inf if x else 0.0

    def program():
        x = sample("x", Bernoulli(0.1))
        factor("step1", 0.0)
        y = sample("y", Bernoulli(0.5))
        factor("f", 0.0 if y else -1.0)
        return x, y

    result = policies.TwistedSMC(num_particles=300, seed=4, critic=critic).run(program)
    assert not np.isnan(result.log_weights).any()
    assert all(p.status == "dead" for p in result.particles if p.value is None or p.value[0])
    # the death is the critic's verdict at that sync point, named so (not the factor's, whose value is 0)
    assert result.diagnostics.deaths.get("TwistedSMC critic (V = -inf) at 'step1'", 0) > 0
    assert "step1" not in result.diagnostics.deaths
