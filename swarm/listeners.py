"""The listener interface: how observers (OpenTelemetry, trace files, progress bars) see a run.

The core imports no observer. A policy reports what happens through these records to every
listener passed to it (`listeners=[...]`) and every listener registered globally with
`add_listener`. Records carry wall-clock times (`time.time_ns()`), so an observer can build spans
after the fact with exact start and end times, and they carry the weights:

- `RunStarted`   once, before the first step;
- `StepRecord`   after every population step (an SMC step: all live particles advanced to their next
                 weighting statement, weights normalised, maybe resampled);
- `RunFinished`  once, with the final population summary (or the error that ended the run).

Listeners must not raise; an exception in a listener is reported once and the listener is dropped,
so an observer can never cost the user a run.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from swarm.trace import Event
from swarm.trusted import trusted

log = logging.getLogger("swarm.listeners")


class RunStarted(BaseModel):
    run_id: str
    policy: str
    program: str
    config: dict[str, Any] = Field(default_factory=dict)
    arguments: dict[str, Any] = Field(default_factory=dict)
    """The program's arguments as JSON-able values (`repr` of what JSON cannot hold): "args", "kwargs"."""
    num_particles: int
    runtime: str = "local"
    started_at_ns: int


class ParticleStep(BaseModel):
    """One particle advanced by one step: from its previous weighting statement to its next one."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    particle_id: int
    """Unique within the run; an offspring of resampling gets a new id."""
    parent_id: int | None = None
    """The particle this one was copied from at the last resampling (None at step 0)."""
    index: int
    """Position in the population array at this step."""
    step: int
    status: Literal["running", "finished", "dead", "lost"]
    """"dead": killed by the target (or a program error); "lost": its infrastructure failed it."""
    site: str | None = None
    """Address of the weighting statement the particle stopped at (None when it finished)."""
    log_weight: float
    """Unnormalised log weight after this step (before any resampling)."""
    log_increment: float
    normalized_weight: float = 0.0
    new_events: list[Event] = Field(default_factory=list)
    started_at_ns: int
    ended_at_ns: int
    value: Any = None
    killed_by: str | None = None
    """What killed it (dead), or what lost it (lost)."""


class StepRecord(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    run_id: str
    step: int
    particles: list[ParticleStep]
    """The particles that moved in this step (finished particles waiting for the others do not)."""
    log_weights: list[float] = Field(default_factory=list)
    """The whole population's log weights after this step, before any resampling, by index."""
    particle_ids: list[int] = Field(default_factory=list)
    """The whole population's particle ids before any resampling, by index."""
    ess: float
    log_evidence: float
    """Running estimate of log Z after this step (the evidence accumulated so far)."""
    resampled: bool
    ancestors: list[int] | None = None
    """If resampled: ancestors[j] is the index (at this step) of the parent of new particle j."""
    offspring_ids: list[int] | None = None
    """If resampled: the particle ids of the new population, in order."""
    started_at_ns: int
    ended_at_ns: int
    tokens: int = 0
    llm_calls: int = 0
    lost: int = 0
    """Particles lost in this step (excluded from `log_evidence` and from resampling)."""


class RunFinished(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    run_id: str
    policy: str
    log_evidence: float | None = None
    ess: float | None = None
    num_particles: int = 0
    log_weights: list[float] = Field(default_factory=list)
    particle_ids: list[int] = Field(default_factory=list)
    values: list[Any] = Field(default_factory=list)
    marginal: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    ended_at_ns: int
    tokens: int = 0
    llm_calls: int = 0
    status: Literal["finished", "waiting", "failed"] = "finished"
    """How the run ended: "finished" (the population above is the final one), "failed" (`error` says
    why), or "waiting": it paused for a person's answer, so the population above is the one before
    the paused step and `log_evidence` the estimate up to there, not a posterior (`pending` holds
    the questions, `checkpoint` the directory `swarm resume` continues from)."""
    pending: list[dict[str, Any]] = Field(default_factory=list)
    """A waiting run's questions (`swarm.human.Question` fields: name, question, particles, ...)."""
    checkpoint: str | None = None
    """The directory a waiting run was written to."""

    @model_validator(mode="after")
    def _failed_when_an_error_ended_it(self) -> "RunFinished":
        """A record with an error ended a failed run (trace files written before `status` existed
        carry only the error)."""
        if self.error is not None and self.status == "finished":
            self.status = "failed"
        return self


def step_record(run_id: str, outcome: Any, diagnostics: Any) -> StepRecord:
    """The listeners' view of one step (a `swarm.coordinator.StepOutcome`)."""
    import numpy as np

    from swarm.population import normalized_weights

    log_w = outcome.log_w
    active = outcome.status != _LOST_CODE
    w = np.zeros(len(log_w))
    if ((log_w > -np.inf) & active).any():
        w[active] = normalized_weights(log_w[active])
    ids, parents, log_ws = outcome.ids.tolist(), outcome.parents.tolist(), log_w.tolist()
    increments, weights, step = outcome.increments.tolist(), w.tolist(), outcome.step
    particles = []
    for i, seg in zip(outcome.moved.tolist(), outcome.segments):
        status, parent = seg.status, parents[i]
        particles.append(particle_step({
            "particle_id": ids[i], "parent_id": None if parent < 0 else parent, "index": i, "step": step,
            "status": "dead" if status in ("dead", "failed") else status,
            "site": seg.site if status == "running" else None,
            "log_weight": log_ws[i] if status != "lost" else -math.inf, "log_increment": increments[i],
            "normalized_weight": weights[i], "new_events": list(seg.events), "started_at_ns": seg.started_ns,
            "ended_at_ns": seg.ended_ns, "value": seg.value if status == "finished" else None,
            "killed_by": seg.site if status in ("dead", "failed", "lost") else None}))
    return StepRecord(
        run_id=run_id, step=step, particles=particles, log_weights=log_ws, particle_ids=ids,
        ess=float(outcome.ess), log_evidence=float(outcome.log_evidence), resampled=outcome.ancestors is not None,
        ancestors=None if outcome.ancestors is None else np.asarray(outcome.ancestors).tolist(),
        offspring_ids=None if outcome.offspring_ids is None else np.asarray(outcome.offspring_ids).tolist(),
        started_at_ns=outcome.started_ns, ended_at_ns=time.time_ns(), tokens=diagnostics.tokens,
        llm_calls=diagnostics.llm_calls, lost=outcome.lost)


def particle_step(values: dict[str, Any]) -> ParticleStep:
    """A `ParticleStep` of `values` that give every field, in order, from the engine (trusted,
    already typed): `model_construct`'s per-field handling made it most of a step record's cost (one
    per particle per step, for every listener that wants steps: streams, OpenTelemetry, the live view)."""
    return trusted(ParticleStep, values)


_LOST_CODE = 4  # swarm.population.LOST


class RunListener:
    """Base class: override what you need. Every method is called from the coordinator's thread."""

    wants_steps: bool = True
    """False for a listener that ignores `on_step`: a run whose listeners all say so builds no step
    records (one `ParticleStep` per particle per step)."""

    def on_run_start(self, record: RunStarted) -> None:  # pragma: no cover - default no-op
        pass

    def on_step(self, record: StepRecord) -> None:  # pragma: no cover - default no-op
        pass

    def on_run_end(self, record: RunFinished) -> None:  # pragma: no cover - default no-op
        pass


_global: list[RunListener] = []
_lock = threading.Lock()


def add_listener(listener: RunListener) -> RunListener:
    """Register a listener for every run in this process (what `observability.instrument` does)."""
    with _lock:
        if listener not in _global:
            _global.append(listener)
    return listener


def remove_listener(listener: RunListener) -> None:
    with _lock:
        if listener in _global:
            _global.remove(listener)


def global_listeners() -> list[RunListener]:
    with _lock:
        return list(_global)


class Broadcaster:
    """Fans records out to listeners, dropping (once, loudly) any listener that raises."""

    def __init__(self, listeners: Sequence[RunListener] = ()) -> None:
        self.listeners = [*global_listeners(), *[l for l in listeners if l not in _global]]

    def __bool__(self) -> bool:
        return bool(self.listeners)

    @property
    def wants_steps(self) -> bool:
        """Whether any listener reads step records (see `RunListener.wants_steps`)."""
        return any(getattr(listener, "wants_steps", True) for listener in self.listeners)

    def emit(self, method: str, record: BaseModel) -> None:
        for listener in list(self.listeners):
            try:
                getattr(listener, method)(record)
            except Exception:  # an observer must never cost the user the run
                log.exception("listener %r failed in %s; it is detached for this run", listener, method)
                self.listeners.remove(listener)
