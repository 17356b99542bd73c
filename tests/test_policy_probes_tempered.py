"""Probes of `policies.TemperedSMC`: deaths by a −∞ factor, which β = 0 does not apply."""

from __future__ import annotations

import math

import pytest

import policies
from swarm import Bernoulli, NoSurvivingParticles, factor, guarantee, sample


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


def _no_two_heads_soft():
    prev, heads = False, 0
    for t in range(4):
        x = sample(f"x{t}", Bernoulli(0.5))
        guarantee(f"ok{t}", not (x and prev))
        prev, heads = x, heads + x
    factor("more_heads", 0.7 * heads)
    return heads


def test_listeners_get_the_initial_population_with_its_deaths():
    """The initial population (β = 0, where guarantees already kill) is the run's step 0 for the
    listeners too: a stream has one StepEnd per entry of `diagnostics.steps`, with the same ESS and
    log Ẑ, and its deaths are the result's. Listeners got the stages only, so a trace file of this
    run showed "deaths: 0" beside the result's deaths."""
    events = list(policies.TemperedSMC(num_particles=60, seed=4).stream(_no_two_heads_soft))
    result = events[-1].result
    ends = [e for e in events if e.type == "step_end"]
    steps = result.diagnostics.steps
    assert [e.step for e in ends] == [s.step for s in steps] and len(ends) >= 2
    assert [e.ess for e in ends] == pytest.approx([s.ess for s in steps], rel=1e-12)
    assert [e.log_evidence for e in ends] == pytest.approx([s.log_evidence for s in steps], rel=1e-12)
    streamed = {}
    for e in ends:
        for site, n in e.deaths.items():
            streamed[site] = streamed.get(site, 0) + n
    assert streamed == result.diagnostics.deaths and sum(streamed.values()) > 0


def test_a_population_dead_at_beta_zero_is_reported_before_the_run_raises():
    def never():
        x = sample("x", Bernoulli(0.5))
        guarantee("never", False)
        return x

    seen = []
    with pytest.raises(NoSurvivingParticles, match="'never' killed 8"):
        for event in policies.TemperedSMC(num_particles=8, seed=0).stream(never):
            seen.append(event)
    (end,) = [e for e in seen if e.type == "step_end"]
    assert end.step == 0 and end.deaths == {"never": 8} and end.alive == 0


def test_no_committed_text_from_a_population_its_moves_rewrite():
    """Step 0 now carries the initial population's texts, but the MH moves of later stages may
    redraw any site, so a prefix every initial particle shares is not final: TemperedSMC's stream
    has text deltas and no CommittedText (here every initial particle starts "alpha", which a
    stream following SMC's rule would have committed)."""
    from agents import Agent, GenerationSettings
    from agents.backends import Scripted

    agent = Agent(name="a", backend=Scripted(["alpha beta", "gamma delta", "alpha gamma", "beta beta"]),
                  settings=GenerationSettings(max_tokens=4))

    async def words():
        w = await sample("w0", agent.generate("say", unit="word"))
        v = await sample("w1", agent.generate("more", unit="word"))
        factor("f", 2.0 if "alpha" in w + v else 0.0)
        return w + v

    events = list(policies.TemperedSMC(num_particles=8, seed=0).stream(words))
    assert any(e.type == "text_delta" for e in events)
    assert not [e for e in events if e.type == "committed"]
    initial = [p for p in events[-1].result.particles]
    assert initial  # the run finished
