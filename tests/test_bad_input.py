"""The bad-input matrix (issue 8, item 1): one test per row, each asserting the error type and that
the message names the culprit (the site, the field or the value). docs/reliability.md has the same
matrix as a table of outcomes.

Rows: NaN / +inf / non-numeric / array-valued potentials; NaN guarantee conditions; negative
probabilities; probabilities that do not sum to 1 (within 1e-6); empty supports; duplicate site
names; a program that raises (the particle dies, the run goes on) and one that always raises
(NoSurvivingParticles names the cause); a program with no weighting statement; non-determinism
detected under replay; invalid policy configuration (every policy class in `policies/`).
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
import pkgutil
import typing
from decimal import Decimal

import annotated_types as at
import numpy as np
import pytest
from pydantic import ValidationError

import policies
import swarm
from policies.base import Budget, Policy
from swarm import Bernoulli, Categorical, Distribution, Uniform, factor, guarantee, interact, plate, sample
from swarm.handlers import replay, seed, trace
from swarm.resampling import SCHEMES
from tests.exact_programs import total_variation


def run_policies():
    """One configured instance of every population policy, small enough for a unit test."""
    from policies.ahead_by_k import AheadByK
    from policies.best_of_n import BestOfN
    from policies.self_consistency import SelfConsistency
    from policies.tempered_smc import TemperedSMC

    return [policies.SMC(num_particles=40, seed=0), policies.Importance(num_particles=40, seed=0),
            policies.Enumerate(), policies.Forward(num_particles=40, seed=0), BestOfN(num_particles=40, seed=0),
            SelfConsistency(num_particles=40, seed=0), TemperedSMC(num_particles=40, seed=0),
            policies.Rejection(num_particles=10, max_attempts=2000, seed=0), AheadByK(k=2, seed=0)]


POLICIES = run_policies()
POLICY_IDS = [type(p).__name__ for p in POLICIES]


# --- potentials --------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
@pytest.mark.parametrize("bad", [float("nan"), np.float64("nan"), np.float32("nan")], ids=["float", "f64", "f32"])
def test_nan_potential_aborts_the_run_naming_the_site(policy, bad):
    def model():
        x = sample("x", Bernoulli(0.5))
        factor("judge_score", bad if x else 0.0)
        guarantee("g", True)
        return x

    with pytest.raises(swarm.InvalidPotentialError, match=r"factor 'judge_score': .*NaN") as info:
        policy.run(model)
    assert isinstance(info.value, ValueError)  # the ARCHITECTURE contract: a ValueError naming the site


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_plus_inf_potential_aborts_the_run_naming_the_site(policy):
    def model():
        x = sample("x", Bernoulli(0.5))
        factor("reward", math.inf if x else 0.0)
        return x

    with pytest.raises(swarm.InvalidPotentialError, match=r"factor 'reward': .*\+inf"):
        policy.run(model)


def test_minus_inf_potential_is_not_an_error_it_kills():
    """The control for the two rows above: −inf is a legal log-potential (Φ = 0)."""
    def model():
        x = sample("x", Bernoulli(0.3))
        factor("veto", -math.inf if x else 0.0)
        return x

    assert policies.Enumerate().run(model).marginal() == {False: pytest.approx(1.0)}


@pytest.mark.parametrize("bad, shown", [("high", "str 'high'"), (None, "NoneType None"),
                                        (complex(1, 1), "complex"), (Decimal("1.5"), "Decimal"),
                                        ([1.0], "list [1.0]"), (True, "boolean")],
                         ids=["str", "None", "complex", "Decimal", "list", "bool"])
def test_non_numeric_potential_names_the_site_and_the_value(bad, shown):
    def model():
        factor("verifier", bad)

    with pytest.raises(swarm.InvalidPotentialError, match="factor 'verifier'") as info:
        policies.SMC(num_particles=5, seed=0).run(model)
    assert shown in str(info.value)


@pytest.mark.parametrize("bad", [np.array([0.1, 0.2]), np.zeros((1,)), np.ones((2, 2))], ids=["(2,)", "(1,)", "(2,2)"])
def test_array_valued_potential_names_the_site_and_the_shape(bad):
    def model():
        factor("per_token_scores", bad)

    with pytest.raises(swarm.InvalidPotentialError, match="factor 'per_token_scores'") as info:
        policies.Importance(num_particles=3, seed=0).run(model)
    assert f"shape {bad.shape}" in str(info.value)


def test_zero_dimensional_array_potential_is_a_scalar():
    def model():
        factor("f", np.array(-0.5))

    assert policies.Importance(num_particles=3, seed=0).run(model).log_evidence == pytest.approx(-0.5)


@pytest.mark.parametrize("bad", [float("nan"), np.float32("nan"), np.array([True, False])], ids=["nan", "f32-nan", "array"])
def test_guarantee_condition_without_a_truth_value_names_the_site(bad):
    """bool(NaN) is True: a NaN score passed as a condition would silently satisfy the constraint."""
    def model():
        guarantee("tests_pass", bad)

    with pytest.raises(swarm.InvalidPotentialError, match="guarantee 'tests_pass'"):
        policies.Importance(num_particles=3, seed=0).run(model)


# --- distributions -----------------------------------------------------------------------------
@pytest.mark.parametrize("make, culprit", [
    (lambda: Categorical(["a", "b"], probs=[1.25, -0.25]), "probs[1] = -0.25"),
    (lambda: Categorical(["a", "b", "c"], probs=np.array([0.5, 0.6, -0.1])), "probs[2] = -0.1"),
    (lambda: Categorical(["a", "b"], probs=[float("nan"), 1.0]), "probs[0] = nan"),
    (lambda: Bernoulli(-0.1), "got -0.1"),
    (lambda: Bernoulli(float("nan")), "got nan"),
], ids=["negative", "numpy-negative", "nan", "bernoulli-negative", "bernoulli-nan"])
def test_negative_or_nan_probabilities_name_the_entry(make, culprit):
    with pytest.raises(swarm.InvalidDistributionError) as info:
        make()
    assert culprit in str(info.value)


def test_probabilities_must_sum_to_one_within_tolerance():
    with pytest.raises(swarm.InvalidDistributionError, match=r"sum to 1 \(within 1e-06\), they sum to 1\.1"):
        Categorical(["a", "b"], probs=[0.5, 0.6])
    with pytest.raises(swarm.InvalidDistributionError, match=r"they sum to 0\.99998"):
        Categorical(["a", "b"], probs=[0.5, 0.49998])
    # inside the tolerance: accepted, and renormalised exactly
    d = Categorical(["a", "b"], probs=[0.5, 0.5 + 5e-7])
    assert math.fsum(d.probs) == pytest.approx(1.0, abs=1e-15)
    assert d.log_prob("b") == pytest.approx(math.log((0.5 + 5e-7) / (1 + 5e-7)), abs=1e-15)


class EmptySupport(Distribution):
    """A user-defined distribution whose finite support has no value of positive probability."""

    @property
    def support(self):
        return ("never",)

    def sample(self, rng):
        raise IndexError("nothing to draw")

    def log_prob(self, value):
        return -math.inf


@pytest.mark.parametrize("make, culprit", [
    (lambda: Categorical([]), "support is empty"), (lambda: Uniform([]), "support is empty"),
    (lambda: Categorical(["a", "b"], logits=[-math.inf, -math.inf]), "no mass"),
    (lambda: Categorical(["a", "b"], probs=[0.0, 0.0]), "they sum to 0.0"),
], ids=["categorical", "uniform", "logits", "zero-probs"])
def test_empty_support_is_rejected_at_construction(make, culprit):
    with pytest.raises(swarm.InvalidDistributionError, match=culprit):
        make()


def test_empty_support_of_a_custom_distribution_names_the_site_under_enumeration():
    def model():
        sample("plan", EmptySupport())
        factor("f", 0.0)

    with pytest.raises(swarm.InvalidDistributionError, match=r"sample 'plan': EmptySupport has an empty support"):
        policies.Enumerate().run(model)


# --- sites -------------------------------------------------------------------------------------
def _twice_sample():
    sample("x", Bernoulli(0.5))
    sample("x", Bernoulli(0.5))


def _twice_in_a_loop():
    for _ in range(3):
        x = sample("step", Bernoulli(0.5))  # the classic bug: a loop without f"step{t}"
        factor("score", 0.0 if x else -1.0)


def _sample_then_factor():
    sample("answer", Bernoulli(0.5))
    factor("answer", 0.0)


def _in_a_plate():
    def replica():
        sample("vote", Bernoulli(0.5))
        sample("vote", Bernoulli(0.5))
    plate("voters", 2, replica)


def test_a_program_called_with_arguments_it_does_not_take_fails_before_the_run():
    """Before, every particle died of the same TypeError and the run ended in NoSurvivingParticles
    ("'TypeError after <program start>' killed 4"), the message of the error nowhere."""
    def program(topic, letter="e"):
        x = sample("x", Categorical(["a", "b"]))
        factor("f", 0.0)
        return topic + x

    for policy in run_policies()[:3]:
        with pytest.raises(TypeError, match=r"program\(topic, letter='e'\) cannot be called with 0 positional, "
                                            r"keywords \['topc'\]: missing a required argument: 'topic'"):
            policy.run(program, topc="cats")
        with pytest.raises(TypeError, match="too many positional arguments"):
            policy.run(program, "cats", "e", "extra")
    assert policies.SMC(num_particles=4, seed=0).run(program, "cats", letter="a").particles  # bound: runs


# --- primitives called with the wrong kind of argument, programs of the wrong kind ----------------
def _misuses_sample_on_one_branch():
    x = sample("x", Bernoulli(0.5))
    if x:
        sample("y", 0.3)  # not a Distribution: a programming error on one branch only
    factor("f", 0.0)
    return x


def _misuses_interact_on_one_branch():
    x = sample("x", Bernoulli(0.5))
    if x:
        interact("planner", None, "hello")
    return x


def _misuses_a_site_name_on_one_branch():
    x = sample("x", Bernoulli(0.5))
    if x:
        factor(3, 0.0)
    return x


def _misuses_a_plate_size_on_one_branch():
    x = sample("x", Bernoulli(0.5))
    if x:
        plate("voters", -1, lambda: sample("v", Bernoulli(0.5)))
    return x


def _misuses_a_plate_replica_on_one_branch():
    x = sample("x", Bernoulli(0.5))
    if x:
        plate("voters", 2, "ask")
    return x


@pytest.mark.parametrize("program, culprit", [
    (_misuses_sample_on_one_branch, r"sample 'y': expected a swarm Distribution, got float"),
    (_misuses_a_plate_size_on_one_branch, r"plate 'voters': size must be a non-negative integer, got -1"),
    (_misuses_a_plate_replica_on_one_branch, r"plate 'voters': the replica must be a function .*got str"),
    (_misuses_interact_on_one_branch, r"interact\(\) needs string sender and receiver, got 'planner' → None"),
    (_misuses_a_site_name_on_one_branch, r"factor\(\) needs a non-empty string site name, got 3"),
], ids=["sample", "plate-size", "plate-replica", "interact", "site-name"])
@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_primitive_misused_on_one_branch_aborts_the_run(program, culprit, policy):
    """Before, the TypeError was an ordinary exception: it killed the particles that took the branch
    (x = True, half of them) and the run returned the others as if the model had said Φ = 0 there,
    marginal {False: 1.0}, with no error."""
    with pytest.raises(swarm.PrimitiveUsageError, match=culprit):
        policy.run(program)


def test_sampling_an_awaitable_says_to_sample_the_generation_instead():
    async def ask():
        return "ok"

    def program():
        return sample("answer", ask())

    with pytest.raises(swarm.PrimitiveUsageError, match=r"got coroutine \(an awaitable, e\.g\. agent\.ask"):
        policies.SMC(num_particles=4, seed=0).run(program)
    with pytest.raises(swarm.PrimitiveUsageError, match="the class, not an instance"):
        policies.SMC(num_particles=4, seed=0).run(lambda: sample("x", Bernoulli))


def _with_proposal(proposal_values, proposal_probs):
    def program():
        return sample("x", Categorical([1, 2, 3], probs=[0.2, 0.2, 0.6]),
                      proposal=Categorical(proposal_values, probs=proposal_probs))
    return program


@pytest.mark.parametrize("policy", [policies.Importance(num_particles=4000, seed=0), policies.SMC(num_particles=40, seed=0),
                                    policies.Enumerate()], ids=["Importance", "SMC", "Enumerate"])
def test_a_proposal_that_misses_part_of_the_target_support_is_refused(policy):
    """Before: Importance with this proposal returned {2: 0.52, 1: 0.48}, without the value 3 that
    carries p = 0.6 (weights p/q never see a value q never draws): biased, silently."""
    with pytest.raises(swarm.InvalidDistributionError, match=r"sample 'x': the proposal Categorical\(2\) never draws "
                                                            r"3, which the target Categorical\(3\) can take"):
        policy.run(_with_proposal([1, 2], [0.5, 0.5]))


def test_a_proposal_covering_the_target_support_gives_the_exact_posterior():
    """The control: a uniform proposal over the whole support. Importance (SNIS) with N = 4,000:
    weights p/q are 0.6, 0.6, 1.8, so the standard error of the mass of 3 is sqrt(0.2592 / 4000)
    = 0.008; the tolerance 0.04 is 5 of them. A proposal with extra values (q > 0 where p = 0)
    is fine too: those draws get weight 0."""
    result = policies.Importance(num_particles=4000, seed=0).run(_with_proposal([1, 2, 3], [1 / 3] * 3))
    assert result.marginal()[3] == pytest.approx(0.6, abs=0.04)
    wider = policies.Importance(num_particles=4000, seed=0).run(_with_proposal([1, 2, 3, 4], [0.25] * 4))
    assert set(wider.marginal()) == {1, 2, 3} and wider.marginal()[3] == pytest.approx(0.6, abs=0.04)


def _generator_program():
    x = sample("x", Bernoulli(0.5))
    yield int(x)


async def _async_generator_program():
    yield 1


def _returns_a_generator_expression():
    x = sample("x", Bernoulli(0.5))
    return (int(x) for _ in range(2))


def _returns_a_coroutine():
    async def later():
        return 1
    return later()


@pytest.mark.parametrize("program, culprit", [
    (_generator_program, r"_generator_program is a generator function .*policies\.VectorizedSMC"),
    (_async_generator_program, r"_async_generator_program is an async generator function"),
    (_returns_a_coroutine, r"_returns_a_coroutine returned an awaitable: declare it `async def`"),
    (_returns_a_generator_expression, r"returned a generator expression, which cannot be a particle's value"),
], ids=["generator", "async-generator", "awaitable", "generator-expression"])
@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_program_of_the_wrong_kind_is_refused(program, culprit, policy):
    """Before, a generator program ran under SMC with an empty trace and every particle's value a
    generator object; a plain def returning a coroutine killed every particle (NoSurvivingParticles)."""
    with pytest.raises(swarm.ProgramKindError, match=culprit):
        policy.run(program)


@pytest.mark.parametrize("program, site", [(_twice_sample, "'x'"), (_twice_in_a_loop, "'step'"),
                                           (_sample_then_factor, "'answer'"), (_in_a_plate, r"'voters\[0\]/vote'")],
                         ids=["sample-sample", "loop", "sample-factor", "plate"])
@pytest.mark.parametrize("policy", [policies.SMC(num_particles=20, seed=0), policies.Enumerate()], ids=["SMC", "Enumerate"])
def test_duplicate_site_names_name_the_site(program, site, policy):
    with pytest.raises(swarm.DuplicateSiteError, match=f"site {site} appears twice"):
        policy.run(program)


# --- programs that raise -----------------------------------------------------------------------
def _raises_on_zero():
    x = sample("x", Uniform(range(4)))
    if x == 0:
        raise ZeroDivisionError("division by x = 0 in the scorer")
    guarantee("ok", True)
    return x


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_program_that_raises_kills_its_particle_and_the_run_goes_on(policy):
    r = policy.run(_raises_on_zero)
    assert r.diagnostics.deaths.get("ZeroDivisionError after x", 0) >= 1
    assert 0 not in r.marginal() and set(r.marginal()) <= {1, 2, 3} and r.marginal()
    for p in r.particles:
        if p.status == "failed":   # population policies keep the dead particle and its ErrorEvent
            assert p.log_weight == -math.inf and p.value is None
            error = p.trace.error
            assert (error.error_type, error.address) == ("ZeroDivisionError", "x")
            assert error.message == "division by x = 0 in the scorer"
        else:
            assert p.trace.error is None


def _always_raises():
    x = sample("x", Uniform(range(4)))
    raise KeyError(f"no tool named {x}")


@pytest.mark.parametrize("policy", [p for p in POLICIES if not isinstance(p, policies.Forward)],
                         ids=[i for i in POLICY_IDS if i != "Forward"])
def test_when_every_particle_raises_no_surviving_particles_names_the_exception(policy):
    with pytest.raises(swarm.NoSurvivingParticles,
                       match=r"'KeyError after x' killed \d+ \(first: KeyError: 'no tool named \d'\)") as info:
        policy.run(_always_raises)  # the message of one of them, not only the count
    assert set(info.value.causes) == {"KeyError after x"} and info.value.causes["KeyError after x"] >= 1


def test_forward_returns_the_failed_draws_instead_of_raising():
    """Forward samples π and weights nothing, so it reports failures rather than refusing: the
    documented exception to the row above."""
    r = policies.Forward(num_particles=8, seed=0).run(_always_raises)
    assert r.diagnostics.deaths == {"KeyError after x": 8}
    assert all(p.status == "failed" and p.trace.error.error_type == "KeyError" for p in r.particles)


# --- no weighting statement --------------------------------------------------------------------
def _no_weighting():
    x = sample("x", Categorical(["a", "b", "c"], probs=[0.6, 0.3, 0.1]))
    y = sample("y", Bernoulli(0.5 if x == "a" else 0.9))
    return (x, y)


def test_program_without_weighting_statement_is_forward_sampling():
    """Φ ≡ 1: the target is the proposal, log Z = 0 exactly, every weight equal; SMC takes one step."""
    exact = policies.Enumerate().run(_no_weighting)
    assert exact.log_evidence == pytest.approx(0.0, abs=1e-12)
    r = policies.SMC(num_particles=4000, seed=1).run(_no_weighting)
    assert r.log_evidence == 0.0 and r.ess == pytest.approx(4000) and len(r.diagnostics.steps) == 1
    assert all(p.status == "finished" and p.log_weight == 0.0 for p in r.particles)
    # TV between 4000 draws and the 6-value law: sd ≈ 0.01, so 0.04 fails only on a real error
    assert total_variation(r.marginal(), exact.marginal()) < 0.04


# --- non-determinism under replay --------------------------------------------------------------
def _recorded(program):
    with seed(0), trace() as tr:
        program()
    return tr.trace


def _replayed(program, recorded):
    with seed(1), trace(), replay(recorded) as rp:
        program()
        rp.check_consumed()


def _divergent_programs():
    """(name, program, culprit) where each execution of `program` differs from the previous one."""
    def factor_value():
        n = next(counter)
        x = sample("x", Bernoulli(0.5))
        factor("noisy_judge", float(n))
        return x

    def guarantee_value():
        n = next(counter)
        guarantee("flaky_check", n % 2 == 0)

    def site_vanishes():
        if next(counter) == 0:
            sample("retry", Bernoulli(0.5))
        factor("done", 0.0)

    def site_appears():
        if next(counter) > 0:
            sample("surprise", Bernoulli(0.5))
        factor("done", 0.0)

    def type_changes():
        if next(counter) == 0:
            sample("s", Bernoulli(0.5))
        else:
            factor("s", 0.0)

    counter = itertools.count()
    return counter, [("factor", factor_value, "factor 'noisy_judge' now gives 1.0"),
                     ("guarantee", guarantee_value, "guarantee 'flaky_check' now evaluates to False"),
                     ("vanishes", site_vanishes, "recorded sample site 'retry' was never reached again"),
                     ("appears", site_appears, "sample site 'surprise' is not in the recorded trace"),
                     ("type", type_changes, "factor 's' now gives 0.0, the recorded trace has 'sample'")]


@pytest.mark.parametrize("case", range(5), ids=["factor", "guarantee", "vanishes", "appears", "type"])
def test_nondeterminism_under_replay_names_the_site(case):
    counter, programs = _divergent_programs()
    _name, program, culprit = programs[case]
    recorded = _recorded(program)
    with pytest.raises(swarm.NondeterminismError) as info:
        _replayed(program, recorded)
    assert culprit in str(info.value)


def test_nondeterminism_is_detected_inside_an_smc_run():
    """Resampled offspring replay their ancestor's trace; a site whose name depends on hidden state
    (here, how many times the program ran) diverges, and the run stops naming it."""
    runs = itertools.count()

    def model():
        x = sample("x", Bernoulli(0.5))
        sample(f"draft{next(runs)}", Bernoulli(0.5))  # hidden state leaks into the site name
        factor("w", 0.0 if x else -1.0)
        factor("end", 0.0)
        return x

    with pytest.raises(swarm.NondeterminismError, match=r"site 'draft\d+'"):
        policies.SMC(num_particles=50, ess_threshold=1.0, seed=0).run(model)


def test_a_factor_renamed_under_replay_is_detected_inside_an_smc_run():
    """The same for a factor: replay matches the recorded statements in order, and a factor at the
    recorded position under another name is a divergence, not the recorded factor."""
    runs = itertools.count()

    def model():
        x = sample("x", Bernoulli(0.5))
        factor("w", 0.0 if x else -1.0)
        factor(f"judge{next(runs)}", 0.0)  # hidden state leaks into the factor's name
        factor("w2", 0.0 if x else -1.0)  # uneven weights: the resampling after it duplicates, and
        return x                          # the duplicates replay past the judge

    with pytest.raises(swarm.NondeterminismError, match=r"judge\d+"):
        policies.SMC(num_particles=50, ess_threshold=1.0, seed=0).run(model)


def test_deterministic_programs_replay_without_error():
    """The control: a deterministic program replays cleanly whatever the replay seed."""
    def model():
        x = sample("x", Bernoulli(0.5))
        factor("f", 0.0 if x else -1.0)
        if x:
            sample("y", Bernoulli(0.5))
        guarantee("g", True)

    for s in range(10):
        with seed(s), trace() as tr:
            model()
        _replayed(model, tr.trace)


# --- configuration -----------------------------------------------------------------------------
def policy_classes() -> list[type[Policy]]:
    """Every concrete Policy subclass defined in a module of the `policies` package."""
    found: dict[str, type[Policy]] = {}
    for info in pkgutil.iter_modules(policies.__path__):
        module = importlib.import_module(f"policies.{info.name}")
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, Policy) and obj is not Policy
                    and not inspect.isabstract(obj) and obj.__module__ == module.__name__):
                found[obj.__qualname__] = obj
    return [found[k] for k in sorted(found)]


def _bounds(field) -> tuple[tuple[float, bool] | None, tuple[float, bool] | None]:
    """((lower, strict), (upper, strict)) from a field's annotated-types constraints."""
    lo = hi = None
    for m in field.metadata:
        if isinstance(m, at.Gt):
            lo = (m.gt, True)
        elif isinstance(m, at.Ge):
            lo = (m.ge, False)
        elif isinstance(m, at.Lt):
            hi = (m.lt, True)
        elif isinstance(m, at.Le):
            hi = (m.le, False)
    return lo, hi


def _scalar_type(annotation) -> type | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return args[0] if len(args) == 1 and args[0] in (int, float) else None


def _literals(annotation) -> set[str]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return set(args)
    return set().union(*(_literals(a) for a in args)) if args else set()


def invalid_values(cls: type) -> list[tuple[str, object]]:
    """(field, bad value) for every constrained field of `cls`: counts at and below their bound,
    fractions on both sides of theirs (and NaN), and an unknown option for every Literal field."""
    rows: list[tuple[str, object]] = []
    for name, field in cls.model_fields.items():
        kind = _scalar_type(field.annotation)
        (lo, hi) = _bounds(field)
        if kind is int and lo is not None:
            edge = lo[0] if lo[1] else lo[0] - 1
            rows += [(name, edge), (name, -1)] if edge != -1 else [(name, -1)]
        elif kind is float and lo is not None and hi is not None:
            rows += [(name, lo[0] if lo[1] else lo[0] - 0.1), (name, hi[0] if hi[1] else hi[0] + 0.1),
                     (name, float("nan"))]
        elif _literals(field.annotation):
            rows.append((name, "no-such-option"))
    return rows


CONFIG_ROWS = [(cls, field, bad) for cls in [*policy_classes(), Budget] for field, bad in invalid_values(cls)]


def test_every_policy_has_a_validated_population_size_and_bounded_fractions():
    """The guard that keeps the next test honest as policies are added: every policy's sizes are
    positive integers, its thresholds and fractions lie in [0, 1], its resampling is a known scheme."""
    classes = policy_classes()
    assert {"SMC", "Importance", "Enumerate", "TemperedSMC", "BestOfN", "SelfConsistency"} <= {c.__name__ for c in classes}
    for cls in classes:
        counts = [n for n, f in cls.model_fields.items() if _scalar_type(f.annotation) is int and _bounds(f)[0]
                  and (_bounds(f)[0][0] >= 1 or _bounds(f)[0] == (0, True))]
        assert counts, f"{cls.__name__} has no positive-integer size field"
        for name, field in cls.model_fields.items():
            lo, hi = _bounds(field)
            if name in ("num_particles", "num_samples", "n", "max_samples", "batch_size", "max_steps"):
                assert lo is not None and (lo[0] >= 1 or lo == (0, True)), f"{cls.__name__}.{name} accepts values ≤ 0"
            if any(w in name for w in ("threshold", "cess", "confidence")):
                assert lo is not None and hi is not None and lo[0] >= 0 and hi[0] <= 1, \
                    f"{cls.__name__}.{name} is not confined to [0, 1]"
            if name == "resampling":
                assert _literals(field.annotation) == set(SCHEMES), f"{cls.__name__}.resampling != {set(SCHEMES)}"


@pytest.mark.parametrize("cls, field, bad", CONFIG_ROWS,
                         ids=[f"{c.__name__}.{f}={b!r}" for c, f, b in CONFIG_ROWS])
def test_invalid_configuration_is_rejected_naming_the_field(cls, field, bad):
    with pytest.raises(ValidationError) as info:
        cls(**{field: bad})
    errors = info.value.errors()
    assert any(e["loc"][:1] == (field,) for e in errors), errors
    assert field in str(info.value)


@pytest.mark.parametrize("cls", policy_classes(), ids=lambda c: c.__name__)
def test_valid_configuration_at_the_boundaries_is_accepted(cls):
    """The control for the test above: values on the closed side of each bound pass the field's own
    validation (a policy may still refuse them for another reason: a required field it was not
    given, or a cross-field rule such as max_attempts ≥ num_samples)."""
    def accepted(name, value):
        try:
            cls(**{name: value})
        except ValidationError as exc:
            assert not any(e["loc"][:1] == (name,) for e in exc.errors()), (name, value, exc)

    for name, field in cls.model_fields.items():
        kind = _scalar_type(field.annotation)
        lo, hi = _bounds(field)
        if kind is int and lo is not None:
            accepted(name, int(lo[0]) + 1 if lo[1] else int(lo[0]))
        elif kind is float and lo is not None and hi is not None:
            accepted(name, (lo[0] + hi[0]) / 2)
            if not lo[1]:
                accepted(name, lo[0])
            if not hi[1]:
                accepted(name, hi[0])


@pytest.mark.parametrize("cls", policy_classes(), ids=lambda c: c.__name__)
def test_a_positional_argument_to_a_policy_says_to_name_the_field(cls):
    """Before: pydantic's "BaseModel.__init__() takes 1 positional argument but 2 were given"."""
    with pytest.raises(TypeError, match=rf"{cls.__name__}\(\) takes keyword arguments only, got 1 positional; "
                                        rf"e\.g\. {cls.__name__}\(\w+=8\)"):
        cls(8)
    if "num_particles" in cls.model_fields:
        with pytest.raises(TypeError, match=rf"{cls.__name__}\(num_particles=8\)"):
            cls(8)


def test_a_policy_that_does_not_checkpoint_says_which_ones_resume(tmp_path):
    """Before: AttributeError: 'Importance' object has no attribute 'resume'."""
    def program():
        return sample("x", Bernoulli(0.5))

    policies.SMC(num_particles=4, seed=0, checkpoint=tmp_path).run(program)
    for policy in (policies.SelfConsistency(num_particles=4, seed=0), policies.Enumerate()):
        with pytest.raises(TypeError, match=rf"{type(policy).__name__} does not checkpoint, so it cannot resume a "
                                            r"run; the policies that do \(with checkpoint=DIR\): BestOfN, Forward, "
                                            r"Importance, SMC, TwistedSMC"):
            policy.resume(tmp_path, program)
    from swarm.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="written by SMC, cannot be resumed by Importance"):
        policies.Importance(num_particles=4, seed=0).resume(tmp_path, program)  # it resumes its own paused runs
    assert policies.SMC(num_particles=4, seed=0).resume(tmp_path, program).particles  # the control


def test_unknown_runtime_is_rejected_naming_the_field():
    with pytest.raises(ValidationError, match="runtime") as info:
        policies.SMC(runtime="gpu-cluster")
    assert "gpu-cluster" in str(info.value)


def test_unknown_resampling_scheme_lists_the_known_ones():
    with pytest.raises(ValidationError) as info:
        policies.SMC(resampling="magic")
    text = str(info.value)
    assert "resampling" in text and all(s in text for s in SCHEMES)
