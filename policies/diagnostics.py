"""Diagnostics over a `Result`: basins, genealogy, vote dependence, and a failure attribution that
follows docs/theory.md §10's order, coverage → selection (judge) → dependence → composition.

Metrics (docs/theory.md §9.1, §10):

- basin masses p̂_b = Σᵢ w̄ᵢ 1(b(τᵢ) = b) and N_basins = 1/Σ_b p̂_b² (Rényi-2; the ESS when every
  particle is its own basin);
- K_eff = K / (1 + (K−1)ρ): what K votes with pairwise correlation ρ are worth in independent votes;
- ρ̂, the pooled (intraclass) correlation of vote indicators within a trace (`pairwise_correlation`).
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from typing import Any, Callable, Hashable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, Field

from policies.judges import Judge
from swarm.population import AncestorRows, count_distinct
from swarm.result import Particle, Result, hashable

STAGES = ("coverage", "selection", "dependence", "composition")
FIXES = {
    "coverage": "proposal interventions: retrieval, more context, decomposition, proposal diversity",
    "selection": "selection interventions: judge training, rubrics, critic panels, calibrated thresholds",
    "dependence": "diversify: prompts, personas, strategies, model ensembles",
    "composition": "audit conditional independencies, add interface checks, re-decompose",
}


# -- basins and genealogy ------------------------------------------------------------------------
def basins(result: Result, key: Callable[[Any], Any] | None = None, *,
           on: Literal["value", "particle"] = "value") -> dict[Hashable, float]:
    """Basin masses p̂_b = Σᵢ w̄ᵢ 1(b(τᵢ) = b), largest first. The basin map b is `key` applied to
    each particle's value (``on="value"``, like `Result.marginal`) or to the `Particle` itself
    (``on="particle"``, e.g. a plan template read from the trace); None is the value itself."""
    if on not in ("value", "particle"):
        raise ValueError(f"basins: on must be 'value' or 'particle', got {on!r}")
    mass: dict[Hashable, float] = {}
    if not result.particles or not np.any(result.log_weights > -math.inf):
        return mass
    for particle, w in zip(result.particles, result.normalized_weights):
        if w > 0:
            x = particle.value if on == "value" else particle
            b = hashable(x if key is None else key(x))
            mass[b] = mass.get(b, 0.0) + float(w)
    return dict(sorted(mass.items(), key=lambda kv: -kv[1]))


def n_basins(result: Result, key: Callable[[Any], Any] | None = None, *,
             on: Literal["value", "particle"] = "value") -> float:
    """N_basins = 1/Σ_b p̂_b² ∈ [1, #basins] (0.0 for a population with no weight)."""
    mass = basins(result, key, on=on)
    return 1.0 / math.fsum(m * m for m in mass.values()) if mass else 0.0


def root_ancestors(result: Result) -> np.ndarray:
    """For each final particle, the index of its ancestor in the initial population, from
    `result.diagnostics.genealogy` (no genealogy: every particle is its own root)."""
    idx = np.arange(len(result.particles), dtype=np.int64)
    steps = result.diagnostics.genealogy
    if not isinstance(steps, AncestorRows):  # assigned as lists after the result was built
        steps = AncestorRows.from_lists(steps)
    if steps and len(steps[-1]) != len(idx):
        raise ValueError(f"the genealogy's final population has {len(steps[-1])} particles, "
                         f"the result has {len(idx)}")
    for k in range(len(steps) - 1, -1, -1):
        idx = steps.array(k)[idx]
    return idx


def unique_ancestors(result: Result) -> int:
    """How many initial particles have descendants in the final population (N without resampling)."""
    return count_distinct(root_ancestors(result))


def root_correlation(result: Result) -> float:
    """The fraction of pairs of final particles that descend from the same initial particle,
    (Σ_a n_a² − N)/(N(N−1)) with n_a the number of descendants of root a: the pairwise correlation
    of their correctness indicators if correctness were fixed at the root (0 for independent draws)."""
    roots = root_ancestors(result)
    n = roots.size
    if n < 2:
        return 0.0
    counts = np.bincount(roots)
    return float((np.sum(counts.astype(float) ** 2) - n) / (n * (n - 1)))


# -- dependence -----------------------------------------------------------------------------------
def k_eff(K: float, rho: float) -> float:
    """K_eff = K / (1 + (K−1)ρ): from K (ρ = 0) down to 1 (ρ = 1); the variance of a mean of K votes
    with pairwise correlation ρ equals that of K_eff independent ones."""
    if not K >= 1:
        raise ValueError(f"k_eff: K must be ≥ 1, got {K!r}")
    if K > 1 and not (-1.0 / (K - 1) <= rho <= 1.0):
        raise ValueError(f"k_eff: rho must lie in [-1/(K-1), 1] = [{-1.0 / (K - 1):.3g}, 1] for K={K}, got {rho!r}")
    return K / (1.0 + (K - 1) * rho)


def pairwise_correlation(indicators: Sequence[Sequence[float]] | np.ndarray,
                         weights: Sequence[float] | np.ndarray | None = None) -> float:
    """The pooled pairwise (intraclass) correlation of indicators x_{r,i} (row r: one trace, or one
    question; entries: its K_r votes, e.g. 1 if vote i is correct):

        d = x − x̄ (x̄ the weighted mean of every entry),
        ρ̂ = [Σ_r w_r Σ_{i≠j} d_ri d_rj / Σ_r w_r K_r(K_r−1)] / [Σ_r w_r Σ_i d_ri² / Σ_r w_r K_r].

    1 for votes that always agree, ≈ 0 for independent ones. Rows may differ in length (rows with one
    entry add no pairs). NaN when undefined (no variance, or no row with two entries).
    """
    rows = [np.asarray(r, dtype=float).ravel() for r in indicators]
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (len(rows),) or np.any(w < 0) or not np.isfinite(w).all():
        raise ValueError(f"pairwise_correlation: weights must be {len(rows)} non-negative numbers, got shape {w.shape}")
    sizes = np.array([r.size for r in rows], dtype=float)
    total = np.sum(w * sizes)
    if total == 0 or np.sum(w * sizes * (sizes - 1)) == 0:
        return math.nan
    mean = sum(wr * r.sum() for wr, r in zip(w, rows)) / total
    pairs = squares = 0.0
    for wr, r in zip(w, rows):
        d = r - mean
        s, q = d.sum(), float(np.dot(d, d))
        pairs += wr * (s * s - q)
        squares += wr * q
    if squares <= 1e-15 * total:
        return math.nan
    return float((pairs / np.sum(w * sizes * (sizes - 1))) / (squares / total))


# -- the attribution --------------------------------------------------------------------------------
class Finding(BaseModel):
    stage: Literal["coverage", "selection", "dependence", "composition"]
    assessed: bool = True
    flagged: bool = False
    metrics: dict[str, Any] = Field(default_factory=dict)
    reasons: list[str] = Field(default_factory=list)


class Diagnosis(BaseModel):
    """Which failure mode (docs/theory.md §10) explains a weak result: the first flagged stage in the
    prescribed order coverage → selection → dependence → composition is the primary suspect."""

    policy: str
    num_particles: int
    primary: Literal["coverage", "selection", "dependence", "composition"] | None
    findings: list[Finding]

    def finding(self, stage: str) -> Finding:
        return next(f for f in self.findings if f.stage == stage)

    def __str__(self) -> str:
        head = f"Diagnosis ({self.policy} result, {self.num_particles} particles): "
        head += f"primary suspect = {self.primary}" if self.primary else "no failure mode detected"
        lines = [head]
        for i, f in enumerate(self.findings, 1):
            state = "FLAGGED" if f.flagged else ("ok" if f.assessed else "not assessed")
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in f.metrics.items())
            lines.append(f"  {i}. {f.stage:<11} [{state}] {shown}")
            lines += [f"       - {r}" for r in f.reasons]
        if self.primary:
            lines.append(f"  suggested fix: {FIXES[self.primary]}")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    return repr(v) if isinstance(v, str) else str(v)


def diagnose(result: Result, *, correct: Callable[[Any], bool] | None = None, judge: Judge | None = None,
             key: Callable[[Any], Any] | None = None, votes: Callable[[Any], Sequence[Any]] | None = None,
             min_coverage: float = 0.1, min_ess_fraction: float = 0.1, min_youden: float = 0.3,
             max_rho: float = 0.5, max_failure_rate: float = 0.2) -> Diagnosis:
    """Attribute a weak result to coverage, selection, dependence or composition (docs/theory.md §10).

    `key` maps a particle's value to its answer (None: the value); `correct(answer) -> bool` is an
    oracle; `judge` a `policies.judges.Judge` with a calibration; `votes(value)` lists the K votes
    inside one trace (e.g. a plate of voters), whose correlation is the dependence measurement.

    - **coverage**: accepted fraction (executions with Φ > 0), ESS/N, log Ẑ, and with an oracle the
      fraction of accepted particles that are correct; flagged below `min_coverage` /
      `min_ess_fraction` (defaults are conventions, not derived thresholds).
    - **selection**: the judge's q₀, q₁, J (flagged when J < `min_youden`), its pass rate on the
      population and the corrected θ̂ with its CI; with an oracle, oracle best-of-N (any correct
      particle) vs the selected answer (flagged when a correct particle existed but the selected
      answer is wrong) and the weighted vs unweighted accuracy.
    - **dependence**: N_basins vs N, unique ancestors, the root-sharing correlation, and with `votes`
      ρ̂ over the vote indicators (correct(vote), or agreement with the modal vote) and K_eff;
      flagged when a correlation reaches `max_rho`.
    - **composition**: failure rate of each guarantee/factor/error site in `diagnostics.deaths`,
      deaths / executions (for Beam and TreeSearch: every segment they ran); flagged when one
      reaches `max_failure_rate`.
    """
    answer = (lambda v: v) if key is None else key
    parts = result.particles
    alive = [p for p in parts if p.log_weight > -math.inf]
    executions = int(result.extra.get("attempts") or result.extra.get("samples_used") or len(parts))
    findings = [
        _coverage(result, alive, executions, answer, correct, min_coverage, min_ess_fraction),
        _selection(result, alive, answer, correct, judge, min_youden),
        _dependence(result, answer, correct, votes, max_rho),
        _composition(result, _attempts_at_sites(result, executions), max_failure_rate),
    ]
    primary = next((f.stage for f in findings if f.flagged), None)
    return Diagnosis(policy=result.policy, num_particles=len(parts), primary=primary, findings=findings)


def _is_correct(correct: Callable[[Any], bool], a: Any) -> bool:
    return bool(correct(a))


def _coverage(result: Result, alive: list[Particle], executions: int, answer: Callable, correct: Any,
              min_coverage: float, min_ess: float) -> Finding:
    f = Finding(stage="coverage")
    n = len(result.particles)
    accepted = len(alive) / executions if executions else 0.0
    ess_fraction = result.ess / n if n else 0.0
    f.metrics.update(accepted_fraction=accepted, executions=executions, log_evidence=result.log_evidence,
                     ess_fraction=ess_fraction)
    if accepted < min_coverage:
        f.reasons.append(f"only {accepted:.1%} of {executions} executions were accepted (Φ > 0); "
                         f"the proposal puts little mass where the target lives")
    if ess_fraction < min_ess:
        f.reasons.append(f"ESS/N = {ess_fraction:.3f}: a few traces carry the weight (proposal far from target)")
    if correct is not None and alive:
        frac = sum(_is_correct(correct, answer(p.value)) for p in alive) / len(alive)
        f.metrics["correct_fraction"] = frac
        if frac < min_coverage:
            f.reasons.append(f"only {frac:.1%} of the accepted traces are correct: a support gap")
    f.flagged = bool(f.reasons)
    return f


def _selected_answer(result: Result, answer: Callable) -> Any:
    extra = result.extra
    for name in ("answer", "winner"):
        if extra.get(name) is not None:
            return extra[name]
    if isinstance(extra.get("best"), Particle):
        return answer(extra["best"].value)
    mass = basins(result, answer)
    return next(iter(mass)) if mass else None


def _selection(result: Result, alive: list[Particle], answer: Callable, correct: Any, judge: Judge | None,
               min_youden: float) -> Finding:
    f = Finding(stage="selection", assessed=judge is not None or correct is not None)
    if judge is not None:
        cal = judge.require_calibration()
        f.metrics.update(q0=cal.q0, q1=cal.q1, youden=cal.youden)
        if cal.youden < min_youden:
            f.reasons.append(f"judge {judge.name!r} has Youden J = {cal.youden:.3f} < {min_youden}: "
                             "its verdicts barely separate correct from incorrect traces")
        verdicts = _sync_verdicts(judge, [p.value for p in alive])
        if verdicts:
            rate = sum(verdicts) / len(verdicts)
            f.metrics["judge_pass_rate"] = rate
            if cal.youden > 0 and cal.m0 > 0 and cal.m1 > 0:
                theta, ci = judge.corrected_accuracy(rate, len(verdicts))
                f.metrics.update(corrected_accuracy=theta, corrected_ci=ci)
            if correct is not None:
                _measured_rates(f, judge, verdicts, [_is_correct(correct, answer(p.value)) for p in alive],
                                min_youden)
    if correct is not None and alive:
        w = result.normalized_weights
        flags = [_is_correct(correct, answer(p.value)) for p in result.particles if p.log_weight > -math.inf]
        weighted = float(sum(wi for p, wi in zip(result.particles, w)
                             if p.log_weight > -math.inf and _is_correct(correct, answer(p.value))))
        selected = _selected_answer(result, answer)
        sel_ok = selected is not None and _is_correct(correct, selected)
        f.metrics.update(oracle_best_of_n=float(any(flags)), selected_correct=float(sel_ok),
                         weighted_accuracy=weighted, unweighted_accuracy=sum(flags) / len(flags))
        if any(flags) and not sel_ok:
            f.reasons.append(f"a correct trace was present (oracle best-of-N = 1) but the selected answer "
                             f"{selected!r} is wrong")
    f.flagged = bool(f.reasons)
    return f


def _sync_verdicts(judge: Any, values: list[Any]) -> list[bool] | None:
    """The judge's verdicts on `values`, or None for an async judge (not run from here)."""
    fn = judge.fn
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
        return None
    verdicts = [judge.verdict(v) for v in values]
    return None if any(inspect.isawaitable(v) for v in verdicts) else verdicts


def _measured_rates(f: Finding, judge: Any, verdicts: list[bool], truth: list[bool], min_youden: float) -> None:
    """With an oracle, measure the judge on this very population: does its calibration transfer?"""
    n1 = sum(truth)
    n0 = len(truth) - n1
    if n1 == 0 or n0 == 0:
        return
    q1 = sum(v and t for v, t in zip(verdicts, truth)) / n1
    q0 = sum(not v and not t for v, t in zip(verdicts, truth)) / n0
    f.metrics.update(measured_q0=q0, measured_q1=q1, measured_youden=q0 + q1 - 1.0)
    if q0 + q1 - 1.0 < min_youden:
        f.reasons.append(f"on this population judge {judge.name!r} measures J = {q0 + q1 - 1.0:.3f} "
                         f"(q0={q0:.3f}, q1={q1:.3f}) < {min_youden}: its calibration does not transfer")


def _dependence(result: Result, answer: Callable, correct: Any, votes: Any, max_rho: float) -> Finding:
    f = Finding(stage="dependence")
    n = len(result.particles)
    rho_root = root_correlation(result)
    f.metrics.update(n_basins=n_basins(result, answer), n=n, unique_ancestors=unique_ancestors(result),
                     root_correlation=rho_root, k_eff_particles=k_eff(n, rho_root) if n else 0.0)
    if rho_root >= max_rho:
        f.reasons.append(f"{rho_root:.0%} of particle pairs share an initial ancestor: the population "
                         "has collapsed onto few lineages")
    if votes is not None:
        live = [(p, wi) for p, wi in zip(result.particles, result.normalized_weights) if wi > 0]
        rows = [[hashable(v) for v in votes(p.value)] for p, _ in live]
        if correct is not None:
            ind = [[float(_is_correct(correct, v)) for v in row] for row in rows]
        else:
            modal = Counter(v for row in rows for v in row).most_common(1)[0][0] if any(rows) else None
            ind = [[float(v == modal) for v in row] for row in rows]
        rho = pairwise_correlation(ind, [wi for _, wi in live])
        k = float(np.mean([len(r) for r in rows])) if rows else 0.0
        f.metrics.update(vote_correlation=rho, votes_per_trace=k,
                         k_eff_votes=k_eff(k, rho) if k >= 1 and not math.isnan(rho) else math.nan)
        if not math.isnan(rho) and rho >= max_rho:
            f.reasons.append(f"the votes inside a trace are correlated (ρ̂ = {rho:.2f}): "
                             f"{k:.0f} votes are worth K_eff = {k_eff(k, rho):.2f} independent ones")
    f.flagged = bool(f.reasons)
    return f


SEARCH_POLICIES = ("Beam", "TreeSearch")
"""Policies whose `diagnostics.deaths` count every segment they ran (`extra["executions"]`), not
only the particles they return."""


def _attempts_at_sites(result: Result, executions: int) -> int:
    """The executions `diagnostics.deaths` counts over: a search policy's every segment run (a beam
    returns `width` particles after expanding hundreds of children, whose deaths are all counted:
    dividing those by `width` gave failure rates above 100%), otherwise `executions`."""
    if result.policy in SEARCH_POLICIES and result.extra.get("executions"):
        return max(executions, int(result.extra["executions"]))
    return executions


def _composition(result: Result, executions: int, max_rate: float) -> Finding:
    f = Finding(stage="composition")
    rates = {site: count / executions for site, count in result.diagnostics.deaths.items()} if executions else {}
    f.metrics.update(failure_rates=dict(sorted(rates.items(), key=lambda kv: -kv[1])),
                     union_bound=min(1.0, math.fsum(rates.values())))
    for site, rate in rates.items():
        if rate >= max_rate:
            f.reasons.append(f"{site!r} rejects {rate:.1%} of executions")
    f.flagged = bool(f.reasons)
    return f
