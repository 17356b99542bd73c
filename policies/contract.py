"""The contract every policy keeps, as a check you can run against your own class.

    from policies.contract import Claims, check_policy

    def make(**overrides):                       # build your policy; the contract adds seed, budget, …
        return MyPolicy(num_particles=400, **overrides)

    check_policy(make, Claims(evidence="unbiased", posterior=True))

`check_policy` uses only the public API (`Policy.run` and the `Result` it returns), so it holds
whatever the engine does underneath. It checks, on small programs whose answer `Enumerate` computes
exactly (or on `cases` you give):

- **shape**: a `Result` named after the policy's class, with its seed, log weights that are finite
  or −∞ (never NaN or +∞), normalised weights and a marginal summing to 1, 1 ≤ ESS ≤ N, and a
  log-evidence that is not NaN (a run that keeps no particle, or raises `NoSurvivingParticles`, has
  log-evidence −∞: Ẑ = 0);
- **reproducibility**: the same seed gives the same values, log weights and log-evidence;
- **evidence**, as claimed (docs/theory.md §1.4, §3.3, §7.1): "exact" equals Enumerate's log Z;
  "unbiased": over `repeats` seeds the mean of Ẑ/Z is within 5 standard errors of 1;
  "lower_bound": every log Ẑ ≤ log Z; "none": not checked;
- **posterior**, if claimed: the marginal averaged over the seeds is within 5 standard errors of the
  exact posterior for every value, plus 1/ESS for the O(1/N) bias of self-normalised weights
  (docs/theory.md §1.5); exactly equal for an exact result;
- **budget**: with `Budget(max_seconds=1e-9)` the run stops cleanly (a well-formed `Result` with
  `diagnostics.stopped_by == "max_seconds"`) and does no more work than without it;
- **bad input**: invalid settings raise a ValueError naming the field (an unknown keyword, a bad
  seed, runtime or budget, a size ≤ 0, an unknown option), and a NaN potential in the program raises
  `swarm.InvalidPotentialError` naming the site, not a dead particle.

Thresholds: 5 standard errors from `repeats` = 20 runs is a t-statistic with 19 degrees of freedom,
exceeded with probability < 1e-4 under the claim, so a failure means the claim is false (or the
repeats too few to estimate the spread: raise `repeats`). A violation raises
`PolicyContractViolation` naming the check and the case.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

from policies.base import Budget, Policy
from policies.enumerate import Enumerate
from swarm import Bernoulli, Categorical, factor, guarantee, sample
from swarm.errors import InvalidPotentialError, NoSurvivingParticles, SwarmError
from swarm.result import Result

PolicyFactory = Callable[..., Policy]
"""make(**overrides) -> Policy: your policy with its own settings, updated by `overrides`."""


class PolicyContractViolation(SwarmError, AssertionError):
    """A policy broke its contract; the message names the check and the program."""


@dataclass(frozen=True)
class Claims:
    """What a policy promises about its `Result` (docs/theory.md: §3.3 unbiased, §7.1 lower bound)."""

    evidence: Literal["exact", "unbiased", "lower_bound", "none"] = "unbiased"
    posterior: bool = True
    """The weighted particles estimate the target p (their marginal converges to it)."""
    budget: bool = True
    """The policy honours `Budget` limits (every policy should, except exact enumeration)."""


@dataclass
class Case:
    """A program with arguments; `hard` when every potential is 0 or 1 (guarantees only)."""

    name: str
    program: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    hard: bool = False
    reference: Callable[..., Any] | None = None
    """The program `Enumerate` computes the exact answer from, with the same arguments, when it is
    not `program` itself: the scalar twin of a program written for arrays (`VectorizedSMC`)."""


# -- the default programs --------------------------------------------------------------------------
def _coin_with_a_verdict():
    x = sample("x", Categorical(["a", "b", "c"], probs=[0.5, 0.3, 0.2]))
    factor("prefers_b", 1.0 if x == "b" else 0.0)
    guarantee("not_c", x != "c")
    return x


def _noisy_walk(steps: int = 4):
    position = 0
    for t in range(steps):
        position += 1 if sample(f"up{t}", Bernoulli(0.4 + 0.1 * (position > 0))) else -1
        factor(f"near_two{t}", -0.5 * abs(position - 2))
    return position


def _dice_over_eight():
    a = sample("a", Categorical(list(range(1, 7)), probs=[1 / 6] * 6))
    b = sample("b", Categorical(list(range(1, 7)), probs=[1 / 6] * 6))
    guarantee("sum_over_8", a + b > 8)
    return a + b


DEFAULT_CASES = (Case("coin_with_a_verdict", _coin_with_a_verdict), Case("noisy_walk", _noisy_walk),
                 Case("dice_over_eight", _dice_over_eight, hard=True))


def _long_program(counter: list[int], steps: int = 30):
    """Many steps, for the budget check; `counter` counts the sample statements executed. Its
    potentials are all 1 (guarantees that hold), so policies that accept only hard ones run it too."""
    total = 0
    for t in range(steps):
        counter[0] += 1
        total += sample(f"s{t}", Bernoulli(0.5))
        guarantee(f"step{t}", True)
    return total


def _nan_potential():
    sample("x", Bernoulli(0.5))
    factor("broken_score", float("nan"))


# -- the checks ------------------------------------------------------------------------------------
def _fail(check: str, case: str, detail: str) -> PolicyContractViolation:
    return PolicyContractViolation(f"{check} on {case!r}: {detail}")


def check_shape(policy: Policy, result: Result, case: str, seed: int) -> None:
    """The Result is well formed (see the module docstring)."""
    if not isinstance(result, Result):
        raise _fail("shape", case, f"run returned {type(result).__name__}, not a Result")
    if result.policy != type(policy).__name__:
        raise _fail("shape", case, f"result.policy is {result.policy!r}, not the class name {type(policy).__name__!r}")
    if result.seed != seed:
        raise _fail("shape", case, f"result.seed is {result.seed!r}, the policy's seed is {seed}")
    if not result.particles:
        if result.log_evidence != -math.inf:
            raise _fail("shape", case, f"no particles, yet log_evidence is {result.log_evidence!r} (not -inf)")
        return
    lw = result.log_weights
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise _fail("shape", case, f"log weights must be finite or -inf, got {lw[np.isnan(lw) | np.isposinf(lw)][:3]}")
    if math.isnan(result.log_evidence):
        raise _fail("shape", case, "log_evidence is NaN")
    if np.isfinite(lw).any():
        total, mass = float(result.normalized_weights.sum()), math.fsum(result.marginal().values())
        if abs(total - 1.0) > 1e-9 or abs(mass - 1.0) > 1e-9:
            raise _fail("shape", case, f"normalised weights sum to {total!r}, the marginal to {mass!r}")
        if not 1.0 - 1e-9 <= result.ess <= len(result.particles) + 1e-9:
            raise _fail("shape", case, f"ESS {result.ess!r} outside [1, {len(result.particles)}]")


def _fingerprint(result: Result) -> tuple:
    return (repr(result.values), result.log_weights.tobytes(), float(result.log_evidence))


def check_reproducible(make: PolicyFactory, case: Case, seed: int, first: Result) -> None:
    """Running again with the seed of `first` gives the same values, log weights and log-evidence."""
    again = make(seed=seed).run(case.program, *case.args, **case.kwargs)
    if _fingerprint(again) != _fingerprint(first):
        raise _fail("reproducibility", case.name, f"two runs with seed {seed} gave different results "
                    f"(log Z {first.log_evidence!r} vs {again.log_evidence!r})")


def check_evidence(claim: str, case: str, log_z: float, estimates: Sequence[float]) -> None:
    """The evidence claim against the exact log Z (docs/theory.md §1.4, §3.3, §7.1)."""
    est = np.asarray(estimates, dtype=float)
    if claim == "exact":
        worst = float(np.max(np.abs(est - log_z)))
        if worst > 1e-9:
            raise _fail("evidence (exact)", case, f"log Z off by {worst!r}")
    elif claim == "lower_bound":
        if np.any(est > log_z + 1e-9):
            raise _fail("evidence (lower bound)", case, f"log Ẑ = {est.max()!r} exceeds log Z = {log_z!r}")
    elif claim == "unbiased":
        ratio = np.exp(est - log_z)
        mean, se = float(ratio.mean()), float(ratio.std(ddof=1) / math.sqrt(len(ratio)))
        if abs(mean - 1.0) > 5.0 * se + 1e-9:
            raise _fail("evidence (unbiased)", case, f"mean Ẑ/Z over {len(ratio)} seeds is {mean:.4f} ± {se:.4f} "
                        f"(log Z = {log_z:.4f}); an unbiased Ẑ has mean 1")


def check_posterior(case: str, exact: Result, results: Sequence[Result]) -> None:
    """Each value's averaged marginal against the exact posterior (see the module docstring)."""
    truth = exact.marginal()
    values = set(truth).union(*(r.marginal() for r in results))
    table = np.array([[r.marginal().get(v, 0.0) for v in values] for r in results])
    target = np.array([truth.get(v, 0.0) for v in values])
    if all(r.exact for r in results):
        tol = np.full(len(values), 1e-9)
    else:
        se = table.std(axis=0, ddof=1) / math.sqrt(len(results)) if len(results) > 1 else np.ones(len(values))
        tol = 5.0 * se + 1.0 / float(np.mean([max(r.ess, 1.0) for r in results])) + 1e-9
    bad = np.flatnonzero(np.abs(table.mean(axis=0) - target) > tol)
    if bad.size:
        v = list(values)[int(bad[0])]
        raise _fail("posterior", case, f"p({v!r}) estimated {table.mean(axis=0)[bad[0]]:.4f}, exact "
                    f"{target[bad[0]]:.4f} (tolerance {tol[bad[0]]:.4f})")


def check_budget(make: PolicyFactory, seed: int) -> None:
    """A tiny wall-time budget stops the run cleanly, after no more work than an unlimited run."""
    free, limited = [0], [0]
    make(seed=seed).run(_long_program, free)
    policy = make(seed=seed, budget=Budget(max_seconds=1e-9))
    result = policy.run(_long_program, limited)
    check_shape(policy, result, "long_program under a budget", seed)
    if result.diagnostics.stopped_by != "max_seconds":
        raise _fail("budget", "long_program", f"stopped_by is {result.diagnostics.stopped_by!r}, not 'max_seconds'")
    if limited[0] > free[0]:
        raise _fail("budget", "long_program", f"{limited[0]} sample statements under the budget, {free[0]} without")


def _size_and_option_fields(cls: type[Policy]) -> list[tuple[str, Any]]:
    """(field, invalid value): integers with a lower bound get a value below it; Literal fields an
    unknown option."""
    rows = []
    for name, info in cls.model_fields.items():
        lower = [(m.gt, 0) if hasattr(m, "gt") else (m.ge, 1)
                 for m in info.metadata if hasattr(m, "gt") or hasattr(m, "ge")]
        if lower and int in (info.annotation, *typing.get_args(info.annotation)):
            bound, below = lower[0]
            rows.append((name, bound - below))  # Gt(b): b itself is invalid; Ge(b): b − 1
        elif typing.get_origin(info.annotation) is Literal:
            rows.append((name, "no-such-option"))
    return rows


def check_bad_input(make: PolicyFactory, seed: int) -> None:
    """Invalid settings raise a ValueError naming the field; a NaN potential names its site."""
    cls = type(make(seed=seed))
    rows = [("no_such_setting", 1), ("seed", "not-a-seed"), ("runtime", "nowhere"),
            ("budget", {"max_seconds": -1.0}), *_size_and_option_fields(cls)]
    if "num_particles" in cls.model_fields:  # the population size, by its one name
        rows.append(("num_particles", 0))
    for name, bad in rows:
        try:
            make(**{"seed": seed, name: bad})
        except ValueError as exc:
            if name not in str(exc) and not (name == "budget" and "max_seconds" in str(exc)):
                raise _fail("bad input", cls.__name__, f"{name}={bad!r} raised an error not naming it: {exc}") from exc
            continue
        raise _fail("bad input", cls.__name__, f"{name}={bad!r} was accepted")
    try:
        make(seed=seed).run(_nan_potential)
    except InvalidPotentialError as exc:
        if "broken_score" not in str(exc):
            raise _fail("bad input", "nan_potential", f"the error does not name the site: {exc}") from exc
    else:
        raise _fail("bad input", "nan_potential", "a NaN potential did not raise InvalidPotentialError")


def _runs(make: PolicyFactory, case: Case, seeds: range) -> list[tuple[int, Result | None]]:
    """(seed, result) per seed; None where every particle died (`NoSurvivingParticles`), which is
    Ẑ = 0 for the evidence and no sample for the posterior."""
    out = []
    for s in seeds:
        try:
            out.append((s, make(seed=s).run(case.program, *case.args, **case.kwargs)))
        except NoSurvivingParticles:
            out.append((s, None))
    return out


def check_case(make: PolicyFactory, claims: Claims, case: Case, seeds: range) -> str:
    """Shape, reproducibility, evidence and posterior on one program, over `seeds`."""
    exact = Enumerate().run(case.reference or case.program, *case.args, **case.kwargs)
    runs = _runs(make, case, seeds)
    for s, result in runs:
        if result is not None:
            check_shape(make(seed=s), result, case.name, s)
    done = [(s, r) for s, r in runs if r is not None and r.particles]
    if not done:
        raise _fail("shape", case.name,
                    f"no particle survived in any of {len(runs)} runs (log Z = {exact.log_evidence:.3g})")
    check_reproducible(make, case, *done[0])
    if claims.evidence != "none":
        check_evidence(claims.evidence, case.name, exact.log_evidence,
                       [-math.inf if r is None else r.log_evidence for _, r in runs])
    if claims.posterior:
        check_posterior(case.name, exact, [r for _, r in done])
    return (f"shape and reproducibility on {len(done)} of {len(runs)} seeds (the others kept no particle), "
            f"evidence: {claims.evidence}, posterior: {claims.posterior}")


def check_policy(make: PolicyFactory, claims: Claims = Claims(), *, cases: Sequence[Case] | None = None,
                 repeats: int = 20, seed: int = 7) -> dict[str, str]:
    """Run every check on `make`; returns {check or case: what was checked}. Raises
    `PolicyContractViolation` naming the check and the program.

    `cases` default to `DEFAULT_CASES`; a policy that accepts only hard potentials (0 or 1) needs
    cases with `hard=True`. Each case runs `repeats` times, on seeds seed, seed + 1, …"""
    report: dict[str, str] = {}
    for case in cases if cases is not None else DEFAULT_CASES:
        report[case.name] = check_case(make, claims, case, range(seed, seed + repeats))
    if claims.budget:
        check_budget(make, seed)
        report["budget"] = "max_seconds stops the run cleanly"
    check_bad_input(make, seed)
    report["bad input"] = "settings and a NaN potential are named"
    return report
