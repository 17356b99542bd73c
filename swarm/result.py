"""What a policy returns: a weighted population of traces, the evidence estimate, diagnostics."""

from __future__ import annotations

import math
import numbers
from collections import defaultdict
from typing import Any, Callable, Hashable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from swarm.ancestor_rows import AncestorRows
from swarm.errors import EmptyPosteriorError, NoSurvivingParticles, shown
from swarm.human import Question
from swarm.population import ess as _ess
from swarm.population import normalized_weights
from swarm.trace import Trace
from swarm.trusted import trusted


class Particle(BaseModel):
    """One member of the final population."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: int
    value: Any = None
    log_weight: float
    trace: Trace
    status: str = "finished"
    """finished | running (a budget stopped the run first) | dead | failed | lost | waiting (for a
    person's answer: see `Result.pending`)"""
    parent_id: int | None = None
    leaf: int | None = None
    """The particle's last node in the run's global trace (`Result.global_trace`), if it has one."""

    @classmethod
    def from_engine(cls, id: int, value: Any, log_weight: float, trace: Trace, status: str,
                    parent_id: int | None, leaf: int | None = None) -> "Particle":
        """A particle from the engine's own arrays (typed already), built without validation: a
        final population of 100,000 costs milliseconds instead of half a second."""
        return trusted(cls, {"id": id, "value": value, "log_weight": log_weight, "trace": trace, "status": status,
                             "parent_id": parent_id, "leaf": leaf})


class StepStats(BaseModel):
    step: int
    ess: float
    log_evidence: float
    resampled: bool
    num_alive: int
    unique_ancestors: int | None = None
    beta: float | None = None


class Diagnostics(BaseModel):
    steps: list[StepStats] = Field(default_factory=list)
    genealogy: AncestorRows = Field(default_factory=AncestorRows)
    """genealogy[k][j]: index at step k of the parent of the particle at index j after step k (a
    sequence of lists over the run's own arrays: `genealogy.array(k)` is row k as one)."""
    deaths: dict[str, int] = Field(default_factory=dict)
    """address (or error) that killed particles → how many."""
    death_examples: dict[str, str] = Field(default_factory=dict)
    """For a death by the program's own exception ("<Error> after <address>"): the first such
    error's "<Error>: <message>", which `NoSurvivingParticles` shows."""
    lost: int = 0
    """Particles lost to infrastructure failures (an LLM or tool call failing for good): missing data,
    excluded from the weights and from log Ẑ, not counted as deaths."""
    lost_causes: dict[str, int] = Field(default_factory=dict)
    """"<Error> after <address>" → how many particles it lost."""
    tokens: int = 0
    """Every token the run's LLM calls spent: prompts and completions."""
    output_tokens: int = 0
    """The completion tokens among them (`tokens - output_tokens` were prompt tokens)."""
    llm_calls: int = 0
    wall_time_s: float = 0.0
    stopped_by: str | None = None
    """Why the run stopped early ("max_tokens", "max_llm_calls", "max_seconds"), if it did."""

    def account(self, segments: Any) -> None:
        """Add segments' tokens, LLM calls, deaths (killed: dead or failed) and losses."""
        tokens = output_tokens = calls = 0
        for seg in segments:
            tokens += seg.tokens
            output_tokens += getattr(seg, "output_tokens", 0)
            calls += seg.llm_calls
            if seg.status == "running" or seg.status == "finished":
                continue
            if seg.status in ("dead", "failed") and seg.site:
                self.deaths[seg.site] = self.deaths.get(seg.site, 0) + 1
                if seg.status == "failed" and seg.error and seg.site not in self.death_examples:
                    self.death_examples[seg.site] = seg.error
            elif seg.status == "lost":
                self.lost += 1
                cause = seg.site or "lost"
                self.lost_causes[cause] = self.lost_causes.get(cause, 0) + 1
        self.tokens += tokens  # once per call: an assignment to a pydantic field costs a microsecond
        self.output_tokens += output_tokens
        self.llm_calls += calls

    def no_survivors(self, policy: str, detail: str = "") -> NoSurvivingParticles:
        """The error for a run with no particle of positive weight left: the causes counted in
        `deaths`, with the first message of each that is the program's own exception."""
        return NoSurvivingParticles(self.deaths, policy=policy, detail=detail, examples=self.death_examples)

    @property
    def ess_per_step(self) -> list[float]:
        return [s.ess for s in self.steps]

    @property
    def log_evidence_per_step(self) -> list[float]:
        return [s.log_evidence for s in self.steps]


_NAN = float("nan")
"""The one key of every NaN value: NaN ≠ NaN (and NaNs hash by identity), so without it each NaN
particle would be a value of its own in a marginal."""


def hashable(value: Any) -> Hashable:
    """A dictionary key for a value: equal values give equal keys. The value itself if hashable
    (NaN as one shared NaN; tuples item by item, for the NaNs inside); else a canonical form: lists
    and arrays as tuples (an array as its nested `tolist()`: its repr elides the middle of a large
    array, so two arrays differing there would share a key), sets as frozensets, dicts as their
    items sorted by key, pydantic models as their JSON, anything else as its repr."""
    kind = type(value)
    if kind is float or isinstance(value, (float, np.floating)):
        return _NAN if value != value else value
    if kind is tuple:
        return tuple(hashable(v) for v in value)
    try:
        hash(value)
        return value
    except TypeError:
        if isinstance(value, (list, tuple)):
            return tuple(hashable(v) for v in value)
        if isinstance(value, np.ndarray):
            return hashable(value.tolist())
        if isinstance(value, (set, frozenset)):
            return frozenset(hashable(v) for v in value)
        if isinstance(value, dict):
            items = [(k, hashable(v)) for k, v in value.items()]
            try:
                return tuple(sorted(items))
            except TypeError:  # keys of several types (1 and "a"): no natural order, so by their reprs
                return tuple(sorted(items, key=lambda kv: (type(kv[0]).__name__, repr(kv[0]))))
        if isinstance(value, BaseModel):
            return value.model_dump_json()
        return repr(value)


def _term(fn: Callable[[Any], float], particle: Particle) -> float:
    """fn(value) of one particle as a float, for `Result.expectation`."""
    term = fn(particle.value)
    if not isinstance(term, (numbers.Real, np.number, np.bool_)) or isinstance(term, np.complexfloating):
        raise TypeError(f"expectation: fn(value) of particle {particle.id} (value {shown(particle.value)}) is "
                        f"{shown(term)}, not a real number{_hint(term)}")
    term = float(term)
    if term != term:
        raise ValueError(f"expectation: fn(value) of particle {particle.id} (value {shown(particle.value)}) is NaN")
    return term


def _hint(term: Any) -> str:
    if term is None:
        return " (a particle that returned nothing: use an fn that maps None to a number, or marginal())"
    return ""


class Result(BaseModel):
    """A weighted population: `particles`, the evidence estimate `log_evidence`, and diagnostics."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    policy: str
    particles: list[Particle]
    log_evidence: float
    """An estimate of log Z = log Σ_τ π(τ)Φ(τ) (exact for Enumerate; for the sampling policies the
    estimate Ẑ is unbiased for Z, so log Ẑ is biased low by Jensen)."""
    seed: int | None = None
    run_id: str | None = None
    """The run's id: the `run_id` of its listener records, trace file and OTel run span."""
    exact: bool = False
    diagnostics: Diagnostics = Field(default_factory=Diagnostics)
    extra: dict[str, Any] = Field(default_factory=dict)
    global_trace: Any = Field(default=None, exclude=True, repr=False)
    """The run's `swarm.event_tree.GlobalTrace`: every event of every particle, ancestors shared."""
    status: Literal["finished", "waiting"] = "finished"
    """"waiting": the run stopped because some particles wait for a person's answer (`pending`); it
    is written to `checkpoint` and continues with `policy.resume(checkpoint, answers={...})`. A
    waiting result's particles are the population before the paused step and its `log_evidence` the
    estimate up to there: not a posterior yet (docs/human_in_the_loop.md)."""
    pending: list[Question] = Field(default_factory=list)
    """The questions the run waits on, each once (identical questions of many particles are one)."""
    checkpoint: str | None = None
    """The directory a waiting run was written to."""

    @property
    def log_weights(self) -> np.ndarray:
        return np.array([p.log_weight for p in self.particles], dtype=float)

    @property
    def normalized_weights(self) -> np.ndarray:
        if not self.particles:
            return np.zeros(0)
        return normalized_weights(self.log_weights)

    @property
    def ess(self) -> float:
        """Effective sample size of the final population, 1/Σ w̄² (Kong)."""
        return float(_ess(self.log_weights)) if self.particles else 0.0

    @property
    def min_ess(self) -> float:
        """The lowest ESS of any step, measured before that step's resampling (the final ESS when no
        steps were recorded). Resampling resets the weights, so a population that collapsed onto a
        few ancestors at its last weighting statement still reports `ess` = N; this does not."""
        per_step = self.diagnostics.ess_per_step
        return min(per_step) if per_step else self.ess

    @property
    def values(self) -> list[Any]:
        return [p.value for p in self.particles]

    def marginal(self, fn: Callable[[Any], Any] | None = None) -> dict[Any, float]:
        """The posterior over return values (or over `fn(value)`): Σᵢ w̄ᵢ 1(vᵢ = v), most likely first.
        Unhashable values are keyed by a canonical tuple or repr."""
        mass: dict[Hashable, float] = defaultdict(float)
        for particle, w in zip(self.particles, self.normalized_weights):
            if w > 0:
                value = particle.value if fn is None else fn(particle.value)
                mass[hashable(value)] += float(w)
        return dict(sorted(mass.items(), key=lambda kv: -kv[1]))

    def expectation(self, fn: Callable[[Any], float]) -> float:
        """The self-normalised estimate Σᵢ w̄ᵢ fn(vᵢ) (docs/theory.md §1.5). Every fn(vᵢ) of positive
        weight must be a real number, not NaN (±inf is allowed: the estimate is then ±inf); a value
        that is not is named rather than turned into a NaN estimate or a bare TypeError."""
        self._check_posterior("an expectation")
        w = self.normalized_weights
        return float(math.fsum(wi * _term(fn, p) for p, wi in zip(self.particles, w) if wi > 0))

    def map(self) -> Particle:
        """The particle of largest weight."""
        self._check_posterior("a MAP particle")
        return self.particles[int(np.argmax(self.log_weights))]

    def _check_posterior(self, what: str) -> None:
        """`EmptyPosteriorError` unless some particle has positive weight (the estimate would be a
        silent 0.0, or numpy's "argmax of an empty sequence")."""
        if not self.particles or not np.any(self.log_weights > -np.inf):
            dead = f" (all {len(self.particles)} have weight 0)" if self.particles else ""
            raise EmptyPosteriorError(f"{self.policy}: the result has no particle of positive weight{dead}, so no "
                                      f"posterior to take {what} of; log Z = {self.log_evidence:g}")

    def summary(self) -> str:
        top = list(self.marginal().items())[:5]
        listing = ", ".join(f"{k!r}: {v:.3f}" for k, v in top)
        lost = f", {self.diagnostics.lost} lost" if self.diagnostics.lost else ""
        if self.status == "waiting":
            names = ", ".join(repr(q.name) for q in self.pending[:5])
            return (f"{self.policy}: waiting for a person: {len(self.pending)} question(s) ({names}); "
                    f"resume from {self.checkpoint}")
        return (f"{self.policy}: {len(self.particles)} particles{lost}, log Z = {self.log_evidence:.4f}, "
                f"ESS = {self.ess:.1f} (lowest {self.min_ess:.1f}); marginal {{{listing}}}")

    def __repr__(self) -> str:
        return f"Result({self.summary()})"
