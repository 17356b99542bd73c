"""The semantics of the primitives and handlers, beyond agreement with exact answers."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

import policies
import swarm
from swarm import Bernoulli, Categorical, Delta, Uniform, factor, guarantee, interact, plate, sample
from swarm.execution import SegmentRunner, SegmentTask
from swarm.handlers import block, condition, replay, scale, seed, substitute, trace
from tests.exact_programs import BY_NAME, shaped


# --- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), math.inf, np.float64("nan")])
def test_nan_and_plus_inf_potentials_raise_value_error_naming_the_site(bad):
    def model():
        x = sample("x", Bernoulli(0.5))
        factor("the_bad_factor", bad if x else 0.0)

    with pytest.raises(ValueError, match="the_bad_factor"):
        policies.SMC(num_particles=50, seed=0).run(model)


@pytest.mark.parametrize("bad", ["high", [1.0, 2.0], np.array([1.0, 2.0]), None, True])
def test_non_numeric_and_array_potentials_name_the_site(bad):
    def model():
        factor("weird", bad)

    with pytest.raises(swarm.InvalidPotentialError, match="weird"):
        policies.Importance(num_particles=5, seed=0).run(model)


def test_minus_inf_factor_kills_without_error():
    def model():
        x = sample("x", Bernoulli(0.5))
        factor("veto", -math.inf if x else 0.0)
        return x

    r = policies.Enumerate().run(model)
    assert r.marginal() == {False: pytest.approx(1.0)}


def test_all_rejected_raises_no_surviving_particles_naming_the_guarantee():
    def model():
        x = sample("x", Uniform(range(5)))
        guarantee("impossible_constraint", x > 10)

    for policy in (policies.SMC(num_particles=100, seed=0), policies.Importance(num_particles=100, seed=0),
                   policies.Enumerate(), policies.Rejection(num_particles=5, max_attempts=50, seed=0)):
        with pytest.raises(swarm.NoSurvivingParticles, match="impossible_constraint") as info:
            policy.run(model)
        assert "impossible_constraint" in info.value.causes


def test_duplicate_site_names_raise():
    def model():
        sample("x", Bernoulli(0.5))
        sample("x", Bernoulli(0.5))

    with pytest.raises(swarm.DuplicateSiteError, match="'x'"):
        policies.Importance(num_particles=3, seed=0).run(model)


def test_program_that_raises_kills_its_particle_and_the_run_goes_on():
    def model():
        x = sample("x", Bernoulli(0.5))
        if x:
            raise KeyError("boom")
        factor("ok", 0.0)
        return x

    r = policies.SMC(num_particles=200, seed=0).run(model)
    assert r.marginal() == {False: pytest.approx(1.0)}
    assert any("KeyError" in k for k in r.diagnostics.deaths)
    dead = [p for p in r.particles if p.status == "failed"]
    assert all(p.trace.error.error_type == "KeyError" for p in dead)


def test_invalid_distributions_name_the_problem():
    with pytest.raises(swarm.InvalidDistributionError, match="sum to 1"):
        Categorical(["a", "b"], probs=[0.5, 0.6])
    with pytest.raises(swarm.InvalidDistributionError, match="non-negative"):
        Categorical(["a", "b"], probs=[1.5, -0.5])
    with pytest.raises(swarm.InvalidDistributionError, match="empty"):
        Categorical([])
    with pytest.raises(swarm.InvalidDistributionError):
        Bernoulli(1.5)


def test_invalid_configuration_names_the_field():
    from pydantic import ValidationError

    for kwargs, field in [({"num_particles": 0}, "num_particles"), ({"ess_threshold": 1.5}, "ess_threshold"),
                          ({"resampling": "magic"}, "resampling")]:
        with pytest.raises(ValidationError, match=field):
            policies.SMC(**kwargs)


def test_enumerate_refuses_infinite_support_naming_the_site():
    class Geometric(swarm.Distribution):
        def sample(self, rng):
            return int(-math.log(1 - rng.random()) // 1)

        def log_prob(self, value):
            return -1.0 * value

    def model():
        sample("unbounded", Geometric())

    with pytest.raises(swarm.EnumerationError, match="unbounded"):
        policies.Enumerate().run(model)


def test_nondeterministic_program_is_detected_under_replay():
    import random

    def model():
        x = sample("x", Bernoulli(0.5))
        factor("f0", 0.0)
        factor("noisy", 10 * random.random())  # not routed through sample: replay cannot reproduce it
        return x

    # Only a replayed offspring (the second or later of its parent) can notice, so the resampling
    # after "noisy" must duplicate someone: weights spread over e^10 make that certain in practice
    # (0 of 1,000 runs without a duplicate; with random() alone, weights within e^1, 3 of 300 had none).

    with pytest.raises(swarm.NondeterminismError, match="noisy"):
        policies.SMC(num_particles=20, ess_threshold=1.0, seed=0).run(model)


# --- seeds -------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda s: policies.SMC(num_particles=300, seed=s),
                                  lambda s: policies.Importance(num_particles=300, seed=s),
                                  lambda s: policies.Rejection(num_particles=50, seed=s)])
def test_same_seed_same_result_and_different_seed_different_result(make):
    prog = BY_NAME["no_two_heads"]
    a, b, c = (make(s).run(prog.program) for s in (5, 5, 6))
    assert [p.value for p in a.particles] == [p.value for p in b.particles]
    assert np.array_equal(a.log_weights, b.log_weights) and a.log_evidence == b.log_evidence
    assert [p.value for p in a.particles] != [p.value for p in c.particles]


# --- SMC mechanics -----------------------------------------------------------------------------
def _long_chain():
    total = 0
    for t in range(6):
        x = sample(f"x{t}", Bernoulli(0.5))
        total += x
        factor(f"f{t}", 1.5 if x else -1.5)
    return total


def test_smc_resamples_and_records_genealogy():
    r = policies.SMC(num_particles=500, ess_threshold=0.9, seed=0).run(_long_chain)
    steps = r.diagnostics.steps
    # six weighting statements, then one last step in which every particle runs to its return
    assert len(steps) == 7 and any(s.resampled for s in steps) and not steps[-1].resampled
    assert len(r.diagnostics.genealogy) == 7
    resampled = [s for s in steps if s.resampled]
    assert all(1 <= s.unique_ancestors < 500 for s in resampled)
    assert all(p.parent_id is not None for p in r.particles)


def test_offspring_continue_independently():
    """Two offspring of one ancestor share its past and draw independent futures; advancing one
    never changes the other's trace."""
    runner = SegmentRunner(_long_chain, seed=3)
    ancestor = runner.run_sync(SegmentTask(stream=0, stop_at=2))
    before = list(ancestor.trace.events)
    kids = [runner.run_sync(SegmentTask(stream=s, prefix=ancestor.trace, stop_at=6)) for s in (1, 2)]
    assert ancestor.trace.events == before  # the ancestor's trace was not touched
    for kid in kids:
        assert kid.trace.events[: len(before)] == before  # shared past
    futures = [[e.value for e in kid.trace.events[len(before):] if e.type == "sample"] for kid in kids]
    assert futures[0] != futures[1]
    again = runner.run_sync(SegmentTask(stream=1, prefix=ancestor.trace, stop_at=6))
    assert again.trace.samples() == kids[0].trace.samples()


def _then_fresh_draw():
    x = sample("x", Bernoulli(0.3))
    factor("f", 2.0 if x else 0.0)
    return sample("after", Uniform(range(10)))


def test_offspring_statistics_are_independent():
    """Siblings from the last resampling share their past but draw the site after it independently:
    the correlation of their draws is zero within 4 standard errors."""
    r = policies.SMC(num_particles=2000, ess_threshold=1.0, seed=1).run(_then_fresh_draw)
    by_parent: dict = {}
    for p in r.particles:
        by_parent.setdefault(p.parent_id, []).append(p.value)
    pairs = np.array([v[:2] for v in by_parent.values() if len(v) >= 2], dtype=float)
    assert len(pairs) > 100
    corr = np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]
    assert abs(corr) < 4 / math.sqrt(len(pairs))


def test_live_continuation_equals_pure_replay():
    """Continuing a suspended execution must give exactly what replaying its trace gives."""
    runner = SegmentRunner(_long_chain, seed=11)
    live = runner.run_batch_sync([SegmentTask(stream=0, stop_at=1, continue_from=None)])[0]
    for k in range(2, 7):
        live = runner.run_batch_sync([SegmentTask(stream=0, prefix=live.trace, stop_at=k, continue_from=0)])[0]
    replayed = None
    for k in range(1, 7):
        replayed = runner.run_sync(SegmentTask(stream=0, prefix=None if replayed is None else replayed.trace, stop_at=k))
    assert [(e.address, getattr(e, "value", None)) for e in live.trace.events] == \
           [(e.address, getattr(e, "value", None)) for e in replayed.trace.events]
    assert live.value == replayed.value


# --- shaping -----------------------------------------------------------------------------------
def test_shaping_factors_leave_the_target_exactly_unchanged():
    with_twist = policies.Enumerate().run(shaped, True)
    without = policies.Enumerate().run(shaped, False)
    assert with_twist.log_evidence == pytest.approx(without.log_evidence, abs=1e-12)
    for v, p in without.marginal().items():
        assert with_twist.marginal()[v] == pytest.approx(p, abs=1e-12)


def _phi(heads: int) -> float:
    return 0.9 if heads == 2 else 0.1


def _value(heads: int, left: int) -> float:
    """log E[Φ(heads + K)] with K ~ Binomial(left, ½): the exact log value of a partial run, the
    ideal twist (with it, SMC's resampling selects by the target's own future weight)."""
    return math.log(sum(math.comb(left, k) / 2 ** left * _phi(heads + k) for k in range(left + 1)))


def _twisted_coins():
    """Four fair coins, each followed by the ideal twist (it *replaces* the previous one), then the
    target factor Φ(heads) = 0.9 if heads == 2 else 0.1. Exact: p(h) ∝ C(4,h)/16 · Φ(h), Z = 0.4."""
    heads = 0
    for t in range(4):
        heads += sample(f"x{t}", Bernoulli(0.5))
        factor(f"twist{t}", _value(heads, 3 - t), shaping=True)
    factor("target", math.log(_phi(heads)))
    return heads


_TWISTED_JOINT = {h: math.comb(4, h) / 16 * _phi(h) for h in range(5)}
_TWISTED_Z = sum(_TWISTED_JOINT.values())  # 0.4


def test_shaping_telescopes_under_smc_to_the_exact_target_and_evidence():
    """SMC resampling at every step (ess_threshold=1) selects particles by target weight × the
    current twist; the twists must telescope (each replaces the last, the last is removed when the
    particle finishes), so the final population targets p and Ẑ stays unbiased for Z.

    Tolerances. Marginal: TV ≤ 0.05 at N = 2000. Over the 5 values E[TV] ≈ ½ Σ_h √(p_h(1−p_h)/n)
    with n ≈ 1000 the final ESS (the finishing step removes the last twist, log Φ, so the final
    weights are 0.9 : 0.1) ≈ 0.017; measured 0.019–0.023 over seeds 4–6; 0.05 is 2.5 times that.
    Evidence: the mean of Ẑ over 16 seeds (N = 100 each) within 4 of its standard errors (sample
    standard deviation / 4) of Z = 0.4, as in tests/test_exact_inference.py (measured: 0.07 SE).

    A wrong telescoping lands far outside both (measured, swarm/execution.py deliberately broken):
    the last twist left in the final weight gives TV 0.135–0.138 and mean Ẑ 6.5 SE low; twists
    counted as target factors give TV 0.14–0.15 and mean Ẑ = 0.027. (Twists that accumulate instead
    of replacing each other only change the intermediate targets: still a valid SMC, not a bug.)"""
    exact = {h: w / _TWISTED_Z for h, w in _TWISTED_JOINT.items()}
    r = policies.SMC(num_particles=2000, ess_threshold=1.0, seed=4).run(_twisted_coins)
    assert sum(s.resampled for s in r.diagnostics.steps) >= 4  # the twists did drive resampling
    tv = 0.5 * sum(abs(r.marginal().get(h, 0.0) - p) for h, p in exact.items())
    assert tv <= 0.05, (tv, r.marginal())
    z = np.array([math.exp(policies.SMC(num_particles=100, ess_threshold=1.0, seed=s).run(_twisted_coins)
                           .log_evidence) for s in range(16)])
    se = z.std(ddof=1) / math.sqrt(len(z))
    assert abs(z.mean() - _TWISTED_Z) <= 4 * se + 1e-12, (z.mean(), _TWISTED_Z, se)


def test_shaping_factors_change_which_particles_survive():
    def survivors(use):
        r = policies.SMC(num_particles=2000, ess_threshold=1.0, seed=4).run(shaped, use)
        first = [p.trace["x0"].value for p in r.particles]
        return np.mean(first)

    # the twist 2·heads − 1 favours early heads: more surviving lineages start with x0 = 1
    assert survivors(True) > survivors(False) + 0.1


# --- plates, interact, handlers ------------------------------------------------------------------
def test_plate_addresses():
    def voter():
        return sample("v", Bernoulli(0.5))

    with seed(0), trace() as tr:
        votes = plate("vote", 3, voter)
    assert len(votes) == 3
    assert [e.address for e in tr.trace.events] == ["vote[0]/v", "vote[1]/v", "vote[2]/v"]
    assert votes == [e.value for e in tr.trace.events]


def test_async_plate_runs_its_replicas_concurrently_each_at_its_own_address():
    """`await plate(name, n, async_fn)`: the n replicas run at the same time (each waits at a barrier
    that opens only when all n have reached it: run one after the other, the first would wait
    forever) and every site of replica i is addressed name[i]/site, even after the awaits."""
    async def voter(barrier):
        v = sample("v", Bernoulli(0.5))
        await asyncio.wait_for(barrier.wait(), timeout=10)
        factor("agree", 0.5 if v else 0.0)
        return v

    async def program():
        votes = await plate("vote", 3, voter, asyncio.Barrier(3))
        guarantee("some_yes", any(votes))
        return votes

    r = policies.Importance(num_particles=8, seed=0).run(program)
    assert not r.diagnostics.deaths.keys() - {"some_yes"}, r.diagnostics.deaths
    for p in r.particles:
        addresses = [e.address for e in p.trace.events]
        assert addresses[:3] == ["vote[0]/v", "vote[1]/v", "vote[2]/v"]  # in the replicas' start order
        assert sorted(addresses[3:6]) == ["vote[0]/agree", "vote[1]/agree", "vote[2]/agree"]
        votes = [p.trace[f"vote[{i}]/v"].value for i in range(3)]
        assert [p.trace[f"vote[{i}]/agree"].log_potential for i in range(3)] == [0.5 if v else 0.0 for v in votes]
        assert p.value == (votes if any(votes) else None)  # a particle killed by some_yes has no value


def test_interact_is_recorded_with_sender_and_receiver():
    def model():
        interact("writer", "critic", "a draft")
        factor("ok", 0.0)

    r = policies.Importance(num_particles=2, seed=0).run(model)
    msg = r.particles[0].trace.of_type("interact")[0]
    assert (msg.sender, msg.receiver, msg.content, msg.kind) == ("writer", "critic", "a draft", "message")


def test_handlers_replay_condition_substitute_block_scale():
    def model():
        x = sample("x", Categorical([0, 1, 2], probs=[0.2, 0.3, 0.5]))
        factor("f", float(x))
        return x

    with seed(1), trace() as first:
        model()
    with seed(999), replay(first.trace), trace() as again:
        model()
    assert again.trace["x"].value == first.trace["x"].value

    with condition({"x": 2}), trace() as cond:
        assert model() == 2
    assert cond.trace.log_weight == pytest.approx(math.log(0.5) + 2.0)

    with substitute({"x": 1}), trace() as sub:
        assert model() == 1
    assert sub.trace.log_weight == pytest.approx(1.0)

    with trace() as outer, block(hide=["f"]):
        with seed(0):
            model()
    assert "f" not in outer.trace and "x" in outer.trace

    with seed(0), scale(0.25), trace() as tempered:
        x = model()
    assert tempered.trace.log_potential == pytest.approx(0.25 * x)


def test_delta_and_uniform():
    assert Delta("a").log_prob("a") == 0.0 and Delta("a").log_prob("b") == -math.inf
    u = Uniform(["p", "q", "r", "s"])
    assert u.log_prob("q") == pytest.approx(-math.log(4)) and u.log_prob("zz") == -math.inf
    assert set(u.support) == {"p", "q", "r", "s"}


def test_program_called_directly_runs_forward():
    value = BY_NAME["chain3"].program()
    assert isinstance(value, tuple) and len(value) == 3


def test_budget_stops_cleanly_with_the_population():
    r = policies.SMC(num_particles=100, seed=0, budget=policies.Budget(max_seconds=1e-9)).run(_long_chain)
    assert r.diagnostics.stopped_by == "max_seconds"
    assert len(r.particles) == 100 and len(r.diagnostics.steps) == 1


def test_min_ess_reports_a_collapse_that_resampling_hid():
    """One sharp factor at the end: SMC resamples there, so the final ESS is N, but the population had
    collapsed onto the few particles with x = 9 (prior mass 0.1 each, potential e^8 vs 1)."""
    import policies
    from swarm import Categorical, factor, sample

    def sharp():
        x = sample("x", Categorical(list(range(10))))
        factor("sharp", 8.0 if x == 9 else 0.0)
        return x

    r = policies.SMC(num_particles=500, seed=0, ess_threshold=0.5).run(sharp)
    assert r.ess == pytest.approx(500)
    # exact ESS fraction of the weights before resampling: (Σw)²/(N Σw²) with w = e^8 w.p. 0.1, else 1
    w, p = np.exp(8.0), 0.1
    expected = 500 * (p * w + (1 - p)) ** 2 / (p * w ** 2 + (1 - p))
    assert r.min_ess == pytest.approx(expected, rel=0.25)
    assert r.min_ess < 0.2 * r.ess
    assert "lowest" in r.summary()
