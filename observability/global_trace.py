"""`GlobalTrace`: one run as a trace file records it, with the questions one asks of it.

`observability.trace_file.read_trace_file` builds it; `swarm inspect` and `swarm report` read it.
Particle ids are unique within a run: an offspring of resampling gets a new id, and its parent link
is recorded in the step that resampled (`StepRecord.ancestors` / `offspring_ids`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Hashable, Literal

import numpy as np
from pydantic import BaseModel, Field

from swarm.listeners import ParticleStep, RunFinished, RunStarted, StepRecord
from swarm.population import normalized_weights
from swarm.result import hashable


class FinalParticle(BaseModel):
    """A member of the final population as the trace file records it."""

    id: int
    log_weight: float
    normalized_weight: float
    value: Any = None


class Death(BaseModel):
    """Why a particle's weight became zero."""

    particle_id: int
    step: int
    cause: str
    """The address of the statement that killed it, or "<Error> after <address>"."""
    kind: Literal["guarantee", "factor", "sample", "error", "unknown"]
    detail: str = ""


class GlobalTrace(BaseModel):
    """One run read back from a trace file: `run` (RunStarted), `steps`, `finished` (RunFinished)."""

    path: str
    run: RunStarted | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    finished: RunFinished | None = None
    truncated: bool = False
    """The file ended in a torn line (the writer died mid-write); what was complete is here."""
    problems: list[str] = Field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when the run's `run_finished` record was written."""
        return self.finished is not None

    @property
    def failed(self) -> bool:
        """True when the run ended by raising (its `run_finished` record carries the error)."""
        return self.finished is not None and self.finished.status == "failed"

    @property
    def waiting(self) -> bool:
        """True when the run paused for a person's answer (`finished.pending`): its population is
        the one before the paused step, not a final one (`provisional`)."""
        return self.finished is not None and self.finished.status == "waiting"

    @property
    def log_evidence(self) -> float | None:
        """The run's log Ẑ; for an incomplete run the last step's running estimate; None for a run
        that failed without one (a partial estimate would read as the run's)."""
        if self.finished is not None and (self.finished.log_evidence is not None or self.failed):
            return self.finished.log_evidence
        return self.steps[-1].log_evidence if self.steps else None

    def ess_per_step(self) -> list[float]:
        return [s.ess for s in self.steps]

    def log_evidence_per_step(self) -> list[float]:
        return [s.log_evidence for s in self.steps]

    def genealogy(self) -> dict[int, int | None]:
        """{particle id: parent id} for every particle of the run (None for the initial ones, and
        for the offspring of a resampling whose record contradicts itself: `inconsistent_steps`)."""
        parents: dict[int, int | None] = {}
        inconsistent = set(self.inconsistent_steps())
        for step in self.steps:
            for ps in step.particles:
                if ps.parent_id is not None:
                    parents[ps.particle_id] = ps.parent_id
            for pid in step.particle_ids:
                parents.setdefault(pid, None)
            if step.ancestors is not None and step.offspring_ids is not None and step.step not in inconsistent:
                for child, a in zip(step.offspring_ids, step.ancestors):
                    parents[child] = step.particle_ids[a]
        for particle in self.final_population():
            parents.setdefault(particle.id, None)
        return parents

    def inconsistent_steps(self) -> list[int]:
        """The resampling steps whose record names an offspring as its own parent: the policy recorded
        the population's ids after resampling where `StepRecord.particle_ids` are those before it
        (the genealogy is cut at those steps: their offspring show as roots)."""
        return [step.step for step in self.steps if step.ancestors is not None and step.offspring_ids is not None
                and any(child == step.particle_ids[a] for child, a in zip(step.offspring_ids, step.ancestors))]

    def lineage(self, particle_id: int) -> list[int]:
        """The ids from the particle's first ancestor (at the first step) down to `particle_id`."""
        parents = self.genealogy()
        if particle_id not in parents:
            raise KeyError(f"particle {particle_id} does not appear in {self.path}")
        chain = [particle_id]
        while (parent := parents.get(chain[-1])) is not None and len(chain) <= len(parents):
            chain.append(parent)
        return chain[::-1]

    def particle_history(self, particle_id: int, *, with_ancestors: bool = False) -> list[ParticleStep]:
        """Every step the particle moved in, in order (its ancestors' steps first if asked)."""
        wanted = set(self.lineage(particle_id)) if with_ancestors else {particle_id}
        return [ps for step in self.steps for ps in step.particles if ps.particle_id in wanted]

    def deaths(self) -> dict[int, Death]:
        """{particle id: Death} for every particle a factor, guarantee, sample or error killed."""
        out: dict[int, Death] = {}
        for step in self.steps:
            for ps in step.particles:
                if ps.status == "dead":
                    out[ps.particle_id] = _death(ps)
        return out

    def final_population(self) -> list[FinalParticle]:
        """The final population from `run_finished`, else (an incomplete run, or one that failed
        without a population) the last recorded step's: see `provisional`."""
        if self.finished is not None and (self.finished.particle_ids or self.finished.error is None):
            ids, log_w, values = self.finished.particle_ids, self.finished.log_weights, self.finished.values
        elif self.steps:
            last = self.steps[-1]
            ids, log_w = last.particle_ids, last.log_weights
            moved = {ps.particle_id: ps.value for ps in last.particles}
            values = [moved.get(i) for i in ids]
        else:
            return []
        w = _normalized(log_w)
        return [FinalParticle(id=i, log_weight=lw, normalized_weight=float(wi),
                              value=values[k] if k < len(values) else None)
                for k, (i, lw, wi) in enumerate(zip(ids, log_w, w))]

    @property
    def provisional(self) -> bool:
        """True when `final_population()` is not a final one: the last recorded step's population
        (the run did not finish, or failed), or the population a waiting run paused with."""
        return self.finished is None or self.waiting or not (self.finished.particle_ids or self.finished.error is None)

    def final_marginal(self, top: int | None = None) -> dict[Hashable, float]:
        """The posterior over return values, Σᵢ w̄ᵢ 1(vᵢ = v), most likely first (as `Result.marginal`;
        values are as JSON holds them, lists keyed as tuples)."""
        mass: dict[Hashable, float] = defaultdict(float)
        for particle in self.final_population():
            if particle.normalized_weight > 0:
                mass[hashable(particle.value)] += particle.normalized_weight
        ranked = sorted(mass.items(), key=lambda kv: -kv[1])
        return dict(ranked if top is None else ranked[:top])


def _normalized(log_w: list[float]) -> np.ndarray:
    arr = np.asarray(log_w, dtype=float)
    if arr.size == 0 or not np.any(arr > -math.inf):
        return np.zeros(arr.size)
    return normalized_weights(arr)


_DEATH_DETAIL = {"guarantee": "guarantee {!r} failed", "factor": "factor {!r} is -inf",
                 "sample": "sample {!r} has zero probability under its model"}


def _death(ps: ParticleStep) -> Death:
    """The kind of statement that killed a dead particle, from its step's new events."""
    cause, kind, detail = ps.killed_by or "<unknown>", "unknown", ""
    for event in reversed(ps.new_events):
        if event.type == "error":
            kind, detail = "error", f"{event.error_type}: {event.message}"
            break
        if event.address == ps.killed_by and event.type in _DEATH_DETAIL:
            kind, detail = event.type, _DEATH_DETAIL[event.type].format(cause)
            break
    return Death(particle_id=ps.particle_id, step=ps.step, cause=cause, kind=kind, detail=detail)


