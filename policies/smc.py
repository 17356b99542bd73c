"""Sequential Monte Carlo over program executions (observe-based SMC, LLaMPPL's smc_standard)."""

from __future__ import annotations

import math
import time
from typing import Literal

import numpy as np
from pydantic import Field

from policies.base import Policy, RunContext
from swarm.errors import NoSurvivingParticles
from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.population import Genealogy, ess, logmeanexp, normalized_weights
from swarm.resampling import resample
from swarm.result import Particle, Result, StepStats


class ParticlePopulation:
    """N particles between steps: their last segment, ids, lineage and log weights.

    `log_w[i]` is particle i's unnormalised log weight; `eff[i]` the effective log weight of its
    trace at its last step (target weight plus current twist), so a step adds eff_new − eff_old.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.segments: list[Segment | None] = [None] * n
        self.ids = list(range(n))
        self.parents: list[int | None] = [None] * n
        self.log_w = np.zeros(n)
        self.eff = np.zeros(n)
        self.next_id = n
        self.resume: list[int | None] = list(range(n))
        """The stream whose suspended execution particle i may continue (None: replay its trace)."""

    def running(self) -> list[int]:
        return [i for i, s in enumerate(self.segments) if s is None or s.status == "running"]

    def tasks(self, indices: list[int], stop_at: int | None) -> list[SegmentTask]:
        return [SegmentTask(stream=self.ids[i], prefix=None if self.segments[i] is None else self.segments[i].trace,
                            stop_at=stop_at, continue_from=self.resume[i]) for i in indices]

    def update(self, indices: list[int], segments: list[Segment]) -> np.ndarray:
        """Store new segments and add their weight increments; return the increments (per index)."""
        inc = np.zeros(self.n)
        for i, seg in zip(indices, segments):
            new = seg.log_weight()
            inc[i] = new - self.eff[i] if new > -math.inf else -math.inf
            self.log_w[i] = self.log_w[i] + inc[i] if new > -math.inf else -math.inf
            self.eff[i] = new
            self.segments[i] = seg
        return inc

    def resample(self, ancestors: np.ndarray) -> list[int]:
        """Replace the population by copies of `ancestors`, each with a new id; weights reset to the
        mean weight logmeanexp(W) so the evidence estimate stays unbiased."""
        mean = logmeanexp(self.log_w)
        self.segments = [self.segments[a] for a in ancestors]
        self.eff = self.eff[ancestors]
        self.parents = [self.ids[a] for a in ancestors]
        claimed: set[int] = set()
        self.resume = []
        for parent in self.parents:  # the first offspring of each parent may continue its execution
            self.resume.append(None if parent in claimed else parent)
            claimed.add(parent)
        self.ids = list(range(self.next_id, self.next_id + self.n))
        self.next_id += self.n
        self.log_w = np.full(self.n, mean)
        return self.ids

    def particles(self) -> list[Particle]:
        out = []
        for i, seg in enumerate(self.segments):
            status = "running" if seg is None else seg.status
            out.append(Particle(id=self.ids[i], value=None if seg is None or seg.status != "finished" else seg.value,
                                log_weight=float(self.log_w[i]), trace=seg.trace if seg else _empty_trace(),
                                status=status, parent_id=self.parents[i]))
        return out


def _empty_trace():
    from swarm.trace import Trace

    return Trace()


class SMC(Policy):
    """Sequential Monte Carlo with resampling on low effective sample size.

    Particles synchronise at each weighting statement (the k-th `factor`/`guarantee` of every live
    particle is step k). After each step, with W the log weights:

        w̄ = exp(W − logsumexp W),   ESS = 1/Σ w̄²,
        if ESS < ess_threshold·N:  aᵢ ~ resample(w̄),  particles ← particles[a],  W ← logmeanexp(W)·1,

    and log Ẑ = logmeanexp(W_final); Ẑ is unbiased for Z. Finished particles wait for the others.
    Offspring continue independently: each re-executes its ancestor's trace by replay and then draws
    its own future from its own random stream. Shaping factors enter W while a particle runs and are
    removed when it finishes, so they change which particles survive but not the target.
    """

    num_particles: int = Field(1000, gt=0)
    resampling: Literal["multinomial", "systematic", "stratified", "residual"] = "systematic"
    ess_threshold: float = Field(0.5, ge=0.0, le=1.0)
    max_steps: int | None = Field(None, gt=0)

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        return await self.run_population(ctx, ctx.runner(args, kwargs), ParticlePopulation(self.num_particles))

    async def run_population(self, ctx: RunContext, runner: SegmentRunner, pop: ParticlePopulation,
                             first_step: int = 1) -> Result:
        genealogy = Genealogy(pop.n)
        step = first_step - 1
        while True:
            running = pop.running()
            if not running:
                break
            if self.max_steps is not None and step >= self.max_steps:
                ctx.diagnostics.stopped_by = "max_steps"
                break
            step += 1
            started = time.time_ns()
            prefixes = [0 if s is None else len(s.trace) for s in pop.segments]
            segments = await ctx.advance(runner, pop.tasks(running, stop_at=step))
            increments = pop.update(running, segments)
            pop.resume = list(pop.ids)
            moved: list[Segment | None] = [None] * pop.n
            for i, seg in zip(running, segments):
                moved[i] = seg
            self._check_alive(ctx, pop)
            self._step(ctx, pop, genealogy, step, moved, prefixes, increments, started)
            if ctx.out_of_budget():
                break
        ctx.diagnostics.genealogy = genealogy.to_lists()
        return ctx.result(type(self).__name__, pop.particles(), logmeanexp(pop.log_w))

    def _check_alive(self, ctx: RunContext, pop: ParticlePopulation) -> None:
        if not np.any(pop.log_w > -math.inf):
            raise NoSurvivingParticles(ctx.diagnostics.deaths, policy=type(self).__name__)

    def _step(self, ctx: RunContext, pop: ParticlePopulation, genealogy: Genealogy, step: int,
              moved: list[Segment | None], prefixes: list[int], increments: np.ndarray, started: int) -> None:
        """Normalise, measure ESS, resample if it is low, report."""
        current_ess = ess(pop.log_w)
        log_z = logmeanexp(pop.log_w)
        ids, parents, log_w = list(pop.ids), list(pop.parents), pop.log_w.copy()
        ancestors = offspring = None
        if current_ess < self.ess_threshold * pop.n and pop.running():
            ancestors = resample(self.resampling, normalized_weights(pop.log_w), ctx.step_rng(step), pop.n)
            offspring = pop.resample(ancestors)
        genealogy.record(ancestors)
        alive = int(np.sum(pop.log_w > -math.inf))
        ctx.diagnostics.steps.append(StepStats(
            step=step, ess=current_ess, log_evidence=log_z, resampled=ancestors is not None, num_alive=alive,
            unique_ancestors=None if ancestors is None else int(len(np.unique(ancestors)))))
        ctx.emit_step(step, moved, prefixes, ids, parents, log_w, increments, log_z, started,
                      ancestors=ancestors, offspring_ids=offspring)
