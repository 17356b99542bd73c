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

from swarm.errors import BackendUnavailable, NoSurvivingParticles
from swarm.event_tree import GlobalTrace
from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.population import LOST, RUNNING, Genealogy, Population, normalized_weights
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
                 diagnostics: Diagnostics | None = None) -> None:
        self.runner = runner
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

    # -- queries --------------------------------------------------------------------------------
    def running(self) -> np.ndarray:
        return self.population.running()

    def active_size(self) -> int:
        return int(np.sum(self.population.active))

    def ess(self) -> float:
        return self.population.ess()

    def log_evidence(self) -> float:
        return self.population.log_evidence()

    # -- one step -------------------------------------------------------------------------------
    async def advance(self, advance_hook: Callable[[list[Segment], list[SegmentTask]], Awaitable[None]] | None = None
                      ) -> StepOutcome:
        """Advance every running particle to its next sync point and weigh the step."""
        pop, tree = self.population, self.tree
        self.step += 1
        step, started = self.step, time.time_ns()
        moved = pop.running()
        path = tree.path
        tasks = [SegmentTask(stream, (path, leaf), step, None if resume < 0 else resume, source)
                 for stream, leaf, resume, source in zip(pop.ids[moved].tolist(), pop.leaf[moved].tolist(),
                                                         pop.resume[moved].tolist(), pop.source[moved].tolist())]
        segments = await self.runtime.run_segments(self.runner, tasks)
        if advance_hook is not None:
            await advance_hook(segments, tasks)
        for seg in segments:  # a zero twisted weight (e.g. a critic's −inf) kills, like a failed guarantee
            if seg.status == "running" and seg.log_weight() == -math.inf:
                seg.status = "dead"
        extend = tree.extend
        leaves = [extend(leaf, seg.events, step, pid)
                  for leaf, seg, pid in zip(pop.leaf[moved].tolist(), segments, pop.ids[moved].tolist())]
        increments = pop.update(moved, segments, leaves)
        pop.continue_own()
        self.diagnostics.account(segments)
        outcome = StepOutcome(step=step, moved=moved, segments=segments, increments=increments, ids=pop.ids.copy(),
                              parents=pop.parents.copy(), log_w=pop.log_w.copy(), status=pop.status.copy(),
                              started_ns=started, lost=int(sum(1 for s in segments if s.status == "lost")))
        self._check_lost(outcome, len(moved))
        self._check_alive()
        outcome.ess = self.ess()
        outcome.log_evidence = self.log_evidence()
        self.last = outcome
        return outcome

    def _check_lost(self, outcome: StepOutcome, advanced: int) -> None:
        check_lost_fraction(outcome.segments, self.max_lost_fraction, self.policy, outcome.step)

    def _check_alive(self) -> None:
        pop = self.population
        if not np.any((pop.log_w > -math.inf) & pop.active):
            raise NoSurvivingParticles(self.diagnostics.deaths, policy=self.policy,
                                       detail=f"{int(np.sum(~pop.active))} lost" if np.any(~pop.active) else "")

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
        from swarm.result import Particle

        pop, tree = self.population, self.tree
        from swarm.population import STATUS_NAMES

        return [Particle.model_construct(
            id=int(pop.ids[i]), value=pop.values[i], log_weight=float(pop.log_w[i]) if pop.status[i] != LOST else -math.inf,
            trace=tree.trace(int(pop.leaf[i])), status=STATUS_NAMES[pop.status[i]],
            parent_id=None if pop.parents[i] < 0 else int(pop.parents[i]), leaf=int(pop.leaf[i]))
            for i in range(pop.n)]


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
