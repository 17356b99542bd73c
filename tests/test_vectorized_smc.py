"""VectorizedSMC against exact answers: the programs of tests/exact_programs.py written for arrays
(one statement for all particles), checked against the same brute-force posteriors and evidence.

Tolerances are those of tests/test_exact_inference.py and fail for a wrong algorithm:
- evidence: Ẑ is unbiased, so the mean of 200 seeded Ẑ must lie within 4 standard errors of Z (a
  correct estimator fails this with probability ~6e-5 per case under the CLT; the seeds are fixed
  and numpy's generators are platform-independent, so every CPU draws the same values);
  `test_the_unbiasedness_check_can_fail` shows a 10% bias is caught;
- posterior: total variation ≤ 0.03 at 10,000 particles (the TV of an ESS-10,000 sample of a
  ≤ 8-value posterior is ~0.01 on average).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import policies
from swarm import (
    Bernoulli,
    Categorical,
    CategoricalRows,
    Delta,
    Distribution,
    InvalidDistributionError,
    InvalidPotentialError,
    NondeterminismError,
    NoSurvivingParticles,
    NotVectorizable,
    factor,
    guarantee,
    sample,
)
from tests.exact_programs import BY_NAME, total_variation
from tests.exact_vector_programs import STEPS_OF, VECTOR_PROGRAMS

CASES = [(name, threshold) for name in VECTOR_PROGRAMS for threshold in (0.5, 1.0)]


def _exact(name: str):
    """The exact program a vectorised one shares its answer with."""
    return BY_NAME[STEPS_OF.get(name, name)]
IDS = [f"{name}-ess{threshold}" for name, threshold in CASES]


def _run(name: str, **config) -> policies.VectorizedSMC:
    program, args = VECTOR_PROGRAMS[name]
    return policies.VectorizedSMC(**config).run(program, *args)


def _z_hat(name: str, **config) -> float:
    try:
        return math.exp(_run(name, **config).log_evidence)
    except NoSurvivingParticles:
        return 0.0


@pytest.mark.parametrize("name,threshold", CASES, ids=IDS)
def test_evidence_is_unbiased_over_200_seeds(name, threshold):
    exact = _exact(name)
    estimates = np.array([_z_hat(name, num_particles=32, ess_threshold=threshold, seed=s) for s in range(200)])
    mean, se = estimates.mean(), estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(mean - exact.Z) <= 4 * se + 1e-12, f"{name}: mean Ẑ {mean:.5f} ± {se:.5f}, Z {exact.Z:.5f}"


def test_the_unbiasedness_check_can_fail():
    """Ẑ·1.1 on chain3 is caught by the same 4-SE test: the test has power."""
    exact = BY_NAME["chain3"]
    estimates = np.array([1.1 * _z_hat("chain3", num_particles=32, seed=s) for s in range(200)])
    mean, se = estimates.mean(), estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(mean - exact.Z) > 4 * se


def _particles_for_tv(name: str, n: int = 10_000) -> int:
    """n particles, as tests/test_exact_inference.py gives each program: a hard-constrained program
    whose proposal puts mass Z < 0.2 on the target gets n/Z (its survivors, ~n, are what the TV is
    measured on; at n = 10,000 needle_guarantees keeps ~1,000 ancestors of a 5-value posterior, whose
    expected TV is then 0.025); `shaped`'s hard twists leave few ancestors, so it gets 4n."""
    exact = _exact(name)
    if exact.hard and exact.Z < 0.2:
        return int(n / exact.Z)
    return 4 * n if name == "shaped" else n


@pytest.mark.parametrize("name,threshold", CASES, ids=IDS)
def test_total_variation_at_10k_particles(name, threshold):
    result = _run(name, num_particles=_particles_for_tv(name), ess_threshold=threshold, seed=7)
    tv = total_variation(result.marginal(), _exact(name).posterior)
    assert tv <= 0.03, f"{name}: TV {tv:.4f} (ESS {result.ess:.0f})"


def test_the_toy_model_at_100k_particles():
    """x_t ~ Bernoulli(0.5), factor(0.1·x_t), t = 1..10: log Z = 10·log((1 + e^0.1)/2) and
    E[Σx] = 10·e^0.1/(1 + e^0.1). At N = 100,000 the standard deviation of log Ẑ is ~5e-4 and of the
    posterior mean ~0.005, so 0.005 and 0.03 are ≥ 6 standard deviations on any CPU."""
    from bench.toy_programs import toy_program

    result = policies.VectorizedSMC(num_particles=100_000, seed=3).run(toy_program(10))
    assert result.log_evidence == pytest.approx(10 * math.log((1 + math.exp(0.1)) / 2), abs=0.005)
    assert result.expectation(float) == pytest.approx(10 * math.exp(0.1) / (1 + math.exp(0.1)), abs=0.03)
    assert len(result.particles) == 100_000 and len(result.diagnostics.steps) == 11


# Resampling, replay, traces ----------------------------------------------------------------------
def _history(steps: int):
    history = []  # mutable program state: rebuilt by the replay after each resampling
    for t in range(steps):
        x = sample(f"x{t}", Categorical([0, 1, 2]))
        history.append(x)
        factor(f"f{t}", np.where(x == 2, 0.0, -1.5))
    return np.stack(history, axis=1)


def test_offspring_inherit_their_ancestors_past_and_draw_their_own_future():
    result = policies.VectorizedSMC(num_particles=500, ess_threshold=1.0, seed=5).run(_history, 6)
    assert all(s.resampled for s in result.diagnostics.steps[:-1])
    for p in result.particles:
        samples = p.trace.samples()
        assert p.value == [samples[f"x{t}"] for t in range(6)]  # the value is the trace's own past
        assert p.parent_id is not None
    values = [tuple(p.value) for p in result.particles]
    assert 1 < len(set(values)) < len(values)  # offspring share ancestors, and not all the same
    last = result.diagnostics.genealogy[-2]
    assert len(last) == 500 and max(last) < 500


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    a = policies.VectorizedSMC(num_particles=200, ess_threshold=1.0, seed=11).run(_history, 4)
    b = policies.VectorizedSMC(num_particles=200, ess_threshold=1.0, seed=11).run(_history, 4)
    c = policies.VectorizedSMC(num_particles=200, ess_threshold=1.0, seed=12).run(_history, 4)
    assert a.values == b.values and a.log_evidence == b.log_evidence
    assert a.values != c.values


def test_a_particle_trace_carries_weights_that_add_up():
    result = _run("custom_proposal", num_particles=100, seed=2)
    for p in result.particles:
        event = p.trace["x"]
        assert event.log_prob == pytest.approx(math.log(0.25))
        assert event.target_log_prob == pytest.approx(math.log([0.7, 0.1, 0.1, 0.1][p.value]))
        assert p.trace.log_weight == pytest.approx(p.log_weight)


def test_deaths_are_counted_by_site_and_no_survivors_is_an_error():
    result = _run("needle_guarantees", num_particles=2_000, ess_threshold=0.0, seed=1)
    deaths = result.diagnostics.deaths
    assert 0.85 * 2_000 < deaths["sum_is_9"] < 0.95 * 2_000 and deaths["x_small"] > 0

    def impossible():
        sample("x", Bernoulli(0.5))
        guarantee("never", np.zeros(8, dtype=bool))

    with pytest.raises(NoSurvivingParticles, match="'never' killed 8"):
        policies.VectorizedSMC(num_particles=8, seed=0).run(impossible)


def test_max_steps_stops_with_running_particles_and_listeners_see_each_step():
    from swarm.listeners import RunListener

    class Steps(RunListener):
        def __init__(self):
            self.records = []

        def on_step(self, record):
            self.records.append(record)

    listener = Steps()
    result = policies.VectorizedSMC(num_particles=50, max_steps=3, seed=0, listeners=[listener]).run(_history, 6)
    assert result.diagnostics.stopped_by == "max_steps"
    assert {p.status for p in result.particles} == {"running"} and len(result.diagnostics.steps) == 3
    assert [r.step for r in listener.records] == [1, 2, 3]
    assert all(len(r.log_weights) == 50 for r in listener.records)


# Clear errors ---------------------------------------------------------------------------------------
def test_what_cannot_be_vectorised_is_refused_naming_the_site():
    class Coin(Distribution):
        def sample(self, rng):
            return rng.random() < 0.5

        def log_prob(self, value):
            return math.log(0.5)

    def branches():
        x = sample("x", Bernoulli(0.5))
        if x:
            factor("f", 1.0)
        return x

    def custom():
        return sample("flip", Coin())

    def returns_a_list():
        return [sample("x", Bernoulli(0.5))]

    class NaNCoin(Coin):
        def batch_sample(self, rng, n):
            return rng.random(n) < 0.5, np.full(n, np.nan)

        def batch_log_prob(self, values):
            return np.full(len(values), np.nan)

    def nan_coin():
        return sample("nan_flip", NaNCoin())

    def talks():
        from swarm import interact
        interact("a", "b", "hello")

    run = policies.VectorizedSMC(num_particles=4, seed=0).run
    with pytest.raises(NotVectorizable, match="branched on a particle's value"):
        run(branches)
    with pytest.raises(NotVectorizable, match="sample 'flip'.*no batched draw"):
        run(custom)
    with pytest.raises(InvalidDistributionError, match="sample 'nan_flip': a log-probability is NaN"):
        run(nan_coin)
    with pytest.raises(NotVectorizable, match="returned a list"):
        run(returns_a_list)
    with pytest.raises(NotVectorizable, match="interact"):
        run(talks)


def test_an_llm_generation_is_refused_naming_the_site():
    from agents import Agent
    from tests.fake_backends import SeededEcho

    agent = Agent(name="writer", backend=SeededEcho())

    async def program():
        return await sample("draft", agent.generate("Say something"))

    with pytest.raises(NotVectorizable, match="sample 'draft'.*LLM generation"):
        policies.VectorizedSMC(num_particles=4, seed=0).run(program)


@pytest.mark.parametrize("value,match", [
    (np.array([0.0, np.nan, 0.0, 0.0]), "factor 'f': the log-potential of particle 1 is NaN"),
    (np.array([0.0, 0.0, np.inf, 0.0]), "particle 2 is \\+inf"),
    (np.zeros(3), "needs 4 log-potentials .* got shape \\(3,\\)"),
    (np.array([True, False, True, True]), "use guarantee"),
])
def test_bad_log_potentials_name_the_site_and_particle(value, match):
    def program():
        sample("x", Bernoulli(0.5))
        factor("f", value)

    with pytest.raises(InvalidPotentialError, match=match):
        policies.VectorizedSMC(num_particles=4, seed=0).run(program)


def test_bad_rows_and_a_program_that_changes_its_statements_are_refused():
    def too_few_rows():
        return sample("z", CategoricalRows([0, 1], np.full((3, 2), 0.5)))

    with pytest.raises(InvalidDistributionError, match="3 rows of probabilities for 4 particles"):
        policies.VectorizedSMC(num_particles=4, seed=0).run(too_few_rows)
    def bad_row():
        return sample("z", CategoricalRows([0, 1], [[0.5, 0.5], [0.5, 0.4]]))

    with pytest.raises(InvalidDistributionError, match="sample 'z': .*row 1 sums to 0.9"):
        policies.VectorizedSMC(num_particles=2, seed=0).run(bad_row)

    calls = []

    def changes():
        calls.append(1)
        x = sample(f"x{len(calls)}", Bernoulli(0.5))
        factor("f", np.where(x, 0.0, -3.0))
        return x

    with pytest.raises(NondeterminismError, match="statement 0 was sample 'x1'.*sample 'x2'"):
        policies.VectorizedSMC(num_particles=100, ess_threshold=1.0, seed=0).run(changes)


def test_the_runtime_must_be_local_and_scalar_programs_still_refuse_arrays():
    with pytest.raises(ValueError, match="runtime must be 'local'"):
        policies.VectorizedSMC(runtime="ray")

    def scalar():
        factor("f", np.zeros(3))

    with pytest.raises(InvalidPotentialError, match="must be a scalar"):
        policies.SMC(num_particles=2, seed=0).run(scalar)


def test_a_vectorised_run_streams_and_exports_its_steps_to_opentelemetry():
    """The listeners' view of a vectorised run: stream events per step and a final Result, and
    OTel spans for the run, each step (with ESS and log Ẑ) and each final particle's weight."""
    import observability
    from bench.toy_programs import toy_program

    events = list(policies.VectorizedSMC(num_particles=300, seed=0).stream(toy_program(5)))
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "RunStart" and kinds[-1] == "RunEnd" and kinds.count("StepEnd") == 6
    handle = observability.instrument("memory")
    try:
        result = policies.VectorizedSMC(num_particles=300, seed=0).run(toy_program(5))
        handle.force_flush()
        spans = handle.memory_exporter.get_finished_spans()
    finally:
        handle.shutdown()
    names = [s.name.split(" ")[0] for s in spans]
    assert names.count("plp.run") == 1 and names.count("plp.step") == 6 and names.count("plp.final") == 300
    run = next(s for s in spans if s.name.startswith("plp.run"))
    assert run.attributes["plp.log_evidence"] == pytest.approx(result.log_evidence)
    assert all("plp.ess" in s.attributes for s in spans if s.name.startswith("plp.step"))


# Explicit steps: generator programs ---------------------------------------------------------------
def _history_steps(steps: int, calls: list[int]):
    calls.append(1)
    history = np.zeros((0,), dtype=int)
    for t in range(steps):
        x = sample(f"x{t}", Categorical([0, 1, 2]))
        factor(f"f{t}", np.where(x == 2, 0.0, -1.5))
        history = np.column_stack([history.reshape(len(x), -1), x]) if t else x[:, None]
        del x
        history = yield history
    return history


def test_a_generator_program_is_never_restarted_and_offspring_keep_their_past():
    calls: list[int] = []
    result = policies.VectorizedSMC(num_particles=500, ess_threshold=1.0, seed=5).run(_history_steps, 6, calls)
    assert calls == [1]  # one execution: resampling gathered the yielded state instead of restarting
    assert sum(s.resampled for s in result.diagnostics.steps) >= 5
    for p in result.particles:
        samples = p.trace.samples()
        assert p.value == [samples[f"x{t}"] for t in range(6)]  # the state and the trace agree


def test_per_particle_values_kept_across_a_yield_outside_the_state_are_refused():
    def stale():
        x = sample("x0", Bernoulli(0.5))
        total = x.astype(int)
        factor("f0", np.where(x, 0.0, -1.0))
        for t in range(1, 4):
            x = yield x  # total is not yielded: after resampling it would be other particles' counts
            x = sample(f"x{t}", Bernoulli(0.5))
            total = total + x
            factor(f"f{t}", np.where(x, 0.0, -1.0))
        return total

    with pytest.raises(NotVectorizable, match="per-particle values in 'total' across a yield"):
        policies.VectorizedSMC(num_particles=100, ess_threshold=1.0, seed=0).run(stale)


def test_gather_state_goes_through_containers_and_leaves_shared_values():
    from swarm.vector_run import gather_state

    a = np.array([2, 0, 0])
    state = {"x": np.array([10, 11, 12]), "pair": (np.array([[1], [2], [3]]), 7), "rows": [np.arange(3)],
             "shared": np.array([5.0, 6.0])}
    out = gather_state(state, a, 3)
    assert out["x"].tolist() == [12, 10, 10] and out["pair"][0].tolist() == [[3], [1], [1]] and out["pair"][1] == 7
    assert out["rows"][0].tolist() == [2, 0, 0] and out["shared"] is state["shared"]


def test_a_delta_draws_its_value_and_weighs_a_proposal_exactly():
    """Delta in a vectorised run: drawn, every particle gets its value; as the target of a
    Categorical proposal, a particle that drew another value dies (log p = −inf) and one that drew
    it gains log 1 − log 0.5, so Ẑ = 2·(share of particles that drew it): an identity, not a
    tolerance."""
    def program():
        d = sample("d", Delta(2))
        x = sample("x", Delta(1), proposal=Categorical([0, 1], probs=[0.5, 0.5]))
        return d + x

    n = 1000
    result = policies.VectorizedSMC(num_particles=n, seed=4, ess_threshold=0.0).run(program)
    kept = sum(p.log_weight > -math.inf for p in result.particles)
    assert 0 < kept < n and result.marginal() == {3: pytest.approx(1.0)}
    assert result.log_evidence == pytest.approx(math.log(2 * kept / n), abs=1e-12)
    assert all(p.log_weight == pytest.approx(math.log(2)) for p in result.particles if p.log_weight > -math.inf)
    assert result.diagnostics.deaths == {"x": n - kept}
