"""The coordinator: drives a population of executions of one program over a runtime, step by step,
applies their potentials and resamples across the population. It owns the run's global trace.

    swarm = Coordinator(runner, runtime, n=1000)
    while swarm.running().size:
        await swarm.advance()                      # every running particle to its next sync point
        if swarm.ess() < 0.5 * swarm.active_size():
            swarm.resample("systematic", rng)      # offspring share their ancestors' events

One step (docs/theory.md §3): each running particle i runs from its (t−1)-th to its t-th sync point;
its cumulative log weight gains the increment of its trace's effective weight (target weight plus
current twist),  W_i ← W_i + (eff_t − eff_{t−1}).  Finished particles wait. log Ẑ_t = logmeanexp of
the active W (lost particles are missing data: excluded, and replaced at the next resampling).

A step whose lost particles exceed `max_lost_fraction` of the particles it advanced raises
`BackendUnavailable` naming the failure: the survivors of an outage are not a posterior.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import numpy as np

from swarm.errors import BackendUnavailable
from swarm.event_tree import GlobalTrace
from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.pause import PausedStep
from swarm.population import LOST, STATUS_CODES, Genealogy, Population, normalized_weights
from swarm.resampling import resample as draw_ancestors
from swarm.result import Diagnostics


@dataclass
class StepOutcome:
    """What one step did: who moved, with what segments and weight increments, and whether (and
    how) the population was resampled afterwards."""

    step: int
    moved: np.ndarray
    segments: list[Segment]
    increments: np.ndarray
    ids: np.ndarray
    parents: np.ndarray
    log_w: np.ndarray
    """The whole population's log weights after the step, before any resampling."""
    status: np.ndarray
    started_ns: int
    ess: float = 0.0
    log_evidence: float = 0.0
    ancestors: np.ndarray | None = None
    offspring_ids: np.ndarray | None = None
    lost: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Coordinator:
    """See the module docstring. `advance_hook(segments)` may adjust the step's segments before they
    are weighed (TwistedSMC adds its critic's value to each running particle's twist there)."""

    def __init__(self, runner: SegmentRunner, runtime: Any, n: int, *, policy: str = "",
                 max_lost_fraction: float = 0.1, tree: GlobalTrace | None = None,
                 diagnostics: Diagnostics | None = None,
                 on_extinct: Callable[[StepOutcome], None] | None = None) -> None:
        self.runner = runner
        self.on_extinct = on_extinct
        """Called with the step in which the last particle died, before `NoSurvivingParticles` is
        raised, so the step is reported (its deaths, to the listeners) like every other."""
        self.runtime = runtime
        self.policy = policy
        self.max_lost_fraction = max_lost_fraction
        self.tree = tree if tree is not None else GlobalTrace()
        if runner.intern is None:
            runner.intern = self.tree.payloads.intern_info
        self.population = Population(n)
        self.genealogy = Genealogy(n)
        self.step = 0
        self.diagnostics = diagnostics if diagnostics is not None else Diagnostics()
        self.last: StepOutcome | None = None
        self.paused: PausedStep | None = None
        """The current step, while some of its particles wait for a person (see `advance`)."""

    # -- queries --------------------------------------------------------------------------------
    def running(self) -> np.ndarray:
        return self.population.running()

    def active_size(self) -> int:
        return int(np.count_nonzero(self.population.active))

    def ess(self) -> float:
        return self.population.ess()

    def log_evidence(self) -> float:
        return self.population.log_evidence()

    # -- one step -------------------------------------------------------------------------------
    def _tasks(self, moved: np.ndarray, step: int) -> list[SegmentTask]:
        pop, path = self.population, self.tree.path
        return [SegmentTask(stream, (path, leaf), step, None if resume < 0 else resume, source)
                for stream, leaf, resume, source in zip(pop.ids[moved].tolist(), pop.leaf[moved].tolist(),
                                                        pop.resume[moved].tolist(), pop.source[moved].tolist())]

    async def _run_step(self) -> tuple[PausedStep, list[SegmentTask]] | None:
        """Run the step's segments: every running particle's, or, when the step was paused for a
        person (`swarm.pause`), only the waiting ones' again. None when some still wait."""
        if self.paused is None:
            self.step += 1
            moved = self.population.running()
            tasks = self._tasks(moved, self.step)
            step = PausedStep(self.step, moved.tolist(), await self.runtime.run_segments(self.runner, tasks))
        else:
            step, pop, path = self.paused, self.population, self.tree.path
            step.merge(await self.runtime.run_segments(self.runner, step.resume_tasks(
                lambda i: int(pop.ids[i]), lambda i: path(int(pop.leaf[i])), step.step)))
            tasks = self._tasks(np.asarray(step.moved, dtype=np.int64), step.step)
        if step:
            check_lost_fraction(step.segments, self.max_lost_fraction, self.policy, step.step)
            self.paused = step
            return None
        self.paused = None
        return step, tasks

    def pending(self) -> list[Any]:
        """The questions the paused step waits on, each once (`swarm.human.Question`)."""
        return [] if self.paused is None else self.paused.pending(lambda i: int(self.population.ids[i]))

    async def advance(self, advance_hook: Callable[[list[Segment], list[SegmentTask]], Awaitable[None]] | None = None
                      ) -> StepOutcome | None:
        """Advance every running particle to its next sync point and weigh the step. Returns None,
        with `paused` set, when some particles wait for a person's answer (the step is weighed once
        none waits: call `advance` again after the run has the answers)."""
        pop, tree = self.population, self.tree
        started = time.time_ns()
        ran = await self._run_step()
        if ran is None:
            return None
        paused, tasks = ran
        step, segments = paused.step, paused.segments
        moved = np.asarray(paused.moved, dtype=np.int64)
        if advance_hook is not None:
            await advance_hook(segments, tasks)
        codes, log_weights = _digest(segments)
        leaves = tree.extend_many(pop.leaf[moved].tolist(), [seg.events for seg in segments], step,
                                  pop.ids[moved].tolist())
        increments = pop.update(moved, segments, leaves, codes, log_weights)
        pop.continue_own()
        self.diagnostics.account(segments)
        outcome = StepOutcome(step=step, moved=moved, segments=segments, increments=increments, ids=pop.ids.copy(),
                              parents=pop.parents.copy(), log_w=pop.log_w.copy(), status=pop.status.copy(),
                              started_ns=started, lost=int(np.count_nonzero(codes == LOST)))
        self._check_lost(outcome, len(moved))
        self.last = outcome
        if self._extinct():
            outcome.ess, outcome.log_evidence = 0.0, -math.inf
            if self.on_extinct is not None:
                self.on_extinct(outcome)
            lost = int(np.sum(~pop.active))
            raise self.diagnostics.no_survivors(self.policy, detail=f"{lost} lost" if lost else "")
        outcome.ess = self.ess()
        outcome.log_evidence = self.log_evidence()
        return outcome

    def _check_lost(self, outcome: StepOutcome, advanced: int) -> None:
        check_lost_fraction(outcome.segments, self.max_lost_fraction, self.policy, outcome.step)

    def _extinct(self) -> bool:
        """No active particle has a positive weight."""
        pop = self.population
        return not ((pop.log_w > -math.inf) & pop.active).any()

    # -- resampling -----------------------------------------------------------------------------
    def resample(self, scheme: str, rng: np.random.Generator) -> np.ndarray:
        """Draw N ancestors among the active particles in proportion to their weights, replace the
        population by their offspring (new ids, weights reset to the mean: Ẑ stays unbiased)."""
        pop = self.population
        weights = np.zeros(pop.n)
        active = pop.active
        weights[active] = normalized_weights(pop.log_w[active])
        ancestors = draw_ancestors(scheme, weights, rng, pop.n)
        offspring = pop.resample(ancestors)
        if self.last is not None:
            self.last.ancestors, self.last.offspring_ids = ancestors, offspring.copy()
        return ancestors

    def record_genealogy(self) -> None:
        """Close the step in the genealogy (its resampling's ancestors, or the identity)."""
        self.genealogy.record(self.last.ancestors if self.last is not None else None)

    # -- the final population -------------------------------------------------------------------
    def particles(self) -> list[Any]:
        """The final population as `Particle`s (built from the population's arrays without
        validation; a particle's trace stays a lazy view of the global trace)."""
        from swarm.population import STATUS_NAMES
        from swarm.result import Particle

        pop, tree = self.population, self.tree
        trace = tree.trace
        out = []
        for pid, value, log_w, leaf, status, parent in zip(
                pop.ids.tolist(), pop.values, pop.log_w.tolist(), pop.leaf.tolist(), pop.status.tolist(),
                pop.parents.tolist()):
            out.append(Particle.from_engine(pid, value, log_w if status != LOST else -math.inf, trace(leaf),
                                            STATUS_NAMES[status], None if parent < 0 else parent, leaf))
        return out


def _digest(segments: list[Segment]) -> tuple[np.ndarray, np.ndarray]:
    """The status codes and current log weights (`Segment.log_weight`) of a step's segments, in one
    pass. A running particle whose twisted weight is zero (e.g. a critic's −inf) is killed, like a
    failed guarantee: its segment's status becomes "dead"."""
    codes, weights = [], []
    for seg in segments:
        status = seg.status
        if status == "running":
            lw = seg.target_log_weight
            if lw != -math.inf:
                lw += seg.twist
            if lw == -math.inf:
                seg.status = status = "dead"
        elif status == "finished":
            lw = seg.target_log_weight
        else:
            lw = -math.inf
        codes.append(STATUS_CODES[status])
        weights.append(lw)
    return np.array(codes, dtype=np.int8), np.array(weights, dtype=float)


def check_lost_fraction(segments: list[Segment], max_fraction: float, policy: str, step: int) -> None:
    """Raise `BackendUnavailable` when more than `max_fraction` of these executions were lost."""
    lost = [s for s in segments if s.status == "lost"]
    if not lost or len(lost) <= max_fraction * len(segments):
        return
    last = lost[-1]
    raise BackendUnavailable(
        f"{policy or 'run'}: {len(lost)} of {len(segments)} particles advanced at step {step} were lost to "
        f"infrastructure failures (max_lost_fraction={max_fraction:g}); the last at {last.site}: {last.error}",
        site=last.site or "", last_error=last.error or "")


__all__ = ["Coordinator", "StepOutcome", "check_lost_fraction"]
