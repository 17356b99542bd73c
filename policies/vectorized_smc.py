"""Sequential Monte Carlo over one vectorised execution: the population as arrays (Pyro's and
NumPyro's vectorised particles), for numeric programs written to work on arrays."""

from __future__ import annotations

import inspect
import time
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from policies.base import Policy, RunContext, seeded_rng
from policies.sync_bridge import plain_program_body
from swarm.coordinator import StepOutcome
from swarm.errors import NoSurvivingParticles, NotVectorizable
from swarm.population import FINISHED, RUNNING, Genealogy, count_distinct, ess, logmeanexp, normalized_weights
from swarm.resampling import resample as draw_ancestors
from swarm.result import Particle, Result, StepStats
from swarm.vector_run import Restart, Stop, VectorRun, VectorTrace, per_particle


class VectorizedSMC(Policy):
    """SMC (docs/theory.md §3) with the whole population as arrays, for array-polymorphic numeric
    programs: `sample` returns N values, `factor` and `guarantee` take N (`swarm.vector_run`).

        run the program once for all N particles, with W = 0:
        at sync point t (the t-th weighting statement):
            W ← W + ℓ_t;  w̄ = exp(W − logsumexp W);  ESS = 1/Σ w̄²
            if ESS < ess_threshold·N:
                a ~ resample(w̄);  every recorded site x ← x[a];  W ← logmeanexp(W)·1
                restart the program, replaying the recorded sites, and go on live from t
        log Ẑ = logmeanexp(W_final)        (unbiased for Z)

    With `ess_threshold=0` it never resamples: importance sampling (`policies.Importance`) with N
    vectorised draws; with 1.0 it resamples at every sync point.

    Explicit steps: a program written as a generator ends each step at a yield of its state,
    `state = yield state`; the sync points are its yields, and resampling gathers the yielded state
    (state ← state[a]) and sends it back instead of restarting the program, so a long filter costs
    time linear in its steps (a restart replays all the statements so far: quadratic when the
    population resamples often). Per-particle values kept across a yield outside the state raise
    `NotVectorizable` (`swarm.vector_run.VectorRun.drive`).

    The same model as `policies.SMC`, the same estimator, another execution: one Python statement
    per program statement instead of one per particle, so a million particle-steps of a small model
    cost a fraction of a second, most of it building the final `Particle`s. What it cannot run: LLM generations, agent messages, a branch on a particle's
    value (use `np.where`), distributions without a batched draw (`swarm.vector_draws`); those
    raise `NotVectorizable` naming the site. A program exception fails the run (a scalar SMC
    fails only that particle). Draws come from one numpy generator per run: a seed reproduces the
    run, but not the values `policies.SMC` would draw for the same seed. Memory is O(N·T): every
    site's N values are kept (the particles' traces), and the genealogy holds N int64 per
    resampling, shared with the run's own ancestry (the toy filter of bench/toy_programs.py with
    N = 100,000 particles resampled at each of 200 steps peaks at 0.6 GB).
    """

    num_particles: int = Field(1000, gt=0)
    resampling: Literal["multinomial", "systematic", "stratified", "residual"] = "systematic"
    ess_threshold: float = Field(0.5, ge=0.0, le=1.0)
    max_steps: int | None = Field(None, gt=0)

    @field_validator("runtime")
    @classmethod
    def _in_process(cls, value: Any) -> Any:
        if value != "local":
            raise ValueError("VectorizedSMC runs the population as arrays in the calling process: runtime must be "
                             "'local' (policies.SMC distributes particles over Ray)")
        return value

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        n = self.num_particles
        ctx.emit_start(n)
        steps = _Steps(self, ctx, n)
        run = steps.run = VectorRun(n, seeded_rng(ctx.seed, 0), steps.on_sync)
        value, finished = None, False
        while True:
            run.begin()
            try:
                with run:
                    with plain_program_body():  # a plain body may nest a `policy.run(...)`
                        value = ctx.program(*args, **kwargs)
                        if inspect.isgenerator(value):
                            value = run.drive(value)
                    if inspect.isawaitable(value):
                        value = await value
                    elif inspect.isasyncgen(value):
                        raise NotVectorizable("the program is an async generator; a vectorised program with "
                                              "explicit steps is a plain generator (`state = yield state`)")
            except Restart:
                continue
            except Stop:
                break
            except ValueError as exc:
                if "truth value of an array" in str(exc):
                    raise NotVectorizable(
                        f"the program branched on a particle's value ({exc}); in a vectorised run every particle "
                        "executes the same statements: use np.where / np.select, or policies.SMC") from exc
                raise
            finished = True
            break
        if finished:
            run.finish()
            steps.on_sync("<end>", final=True)
        ctx.diagnostics.deaths = dict(run.deaths)
        ctx.diagnostics.genealogy = steps.genealogy.rows()
        values = per_particle(value, n) if finished else [None] * n
        status = "finished" if finished else "running"
        log_w = run.log_w.tolist()
        columns = run.final_columns()
        particles = [Particle.from_engine(pid, v if lw > -np.inf else None, lw, VectorTrace(columns, i),
                                          status if lw > -np.inf else "dead", None if parent < 0 else parent)
                     for i, (pid, v, lw, parent) in enumerate(zip(steps.ids.tolist(), values, log_w,
                                                                  steps.parents.tolist()))]
        # a dead particle has no value, as in SMC (it kept the value its constraint vetoed)
        return ctx.result(particles, logmeanexp(run.log_w))


class _Steps:
    """The policy's side of each sync point: weigh, maybe resample, record and report the step."""

    def __init__(self, policy: VectorizedSMC, ctx: RunContext, n: int) -> None:
        self.policy, self.ctx, self.n = policy, ctx, n
        self.run: VectorRun
        self.step = 0
        self.ids = np.arange(n, dtype=np.int64)
        self.parents = np.full(n, -1, dtype=np.int64)
        self.genealogy = Genealogy(n)
        self._last_w = np.zeros(n)
        self._started_ns = time.time_ns()

    def on_sync(self, site: str, final: bool = False) -> None:
        run, policy, n = self.run, self.policy, self.n
        self.step += 1
        log_w = run.log_w
        alive = log_w > -np.inf
        if not alive.any():
            raise NoSurvivingParticles(run.deaths, policy="VectorizedSMC")
        step_ess = float(ess(log_w))
        log_evidence = logmeanexp(log_w)
        with np.errstate(invalid="ignore"):  # a particle dead before this step gains −∞, not NaN
            increments = np.where(alive, log_w - self._last_w, -np.inf)
        self._last_w = log_w
        ids, parents, ancestors = self.ids, self.parents, None
        if not final and step_ess < policy.ess_threshold * n:
            ancestors = draw_ancestors(policy.resampling, normalized_weights(log_w), self.ctx.step_rng(self.step))
            old_ids = self.ids
            self.parents = old_ids[ancestors]
            self.ids = np.arange(old_ids[-1] + 1, old_ids[-1] + 1 + n, dtype=np.int64)
            run.resample(ancestors, np.full(n, log_evidence))
            self._last_w = run.log_w
        self.genealogy.record(ancestors, copy=False)  # shared with the run's ancestry, which only reads it
        self.ctx.diagnostics.steps.append(StepStats(
            step=self.step, ess=step_ess, log_evidence=log_evidence, resampled=ancestors is not None,
            num_alive=int(np.count_nonzero(alive)),
            unique_ancestors=None if ancestors is None else count_distinct(ancestors)))
        self._report(ids, parents, log_w, increments, step_ess, log_evidence, ancestors, final)
        if not final and (policy.max_steps is not None and self.step >= policy.max_steps):
            self.ctx.diagnostics.stopped_by = "max_steps"
            run.stop()
        elif not final and self.ctx.out_of_budget():
            run.stop()

    def _report(self, ids: np.ndarray, parents: np.ndarray, log_w: np.ndarray, increments: np.ndarray,
                step_ess: float, log_evidence: float, ancestors: np.ndarray | None, final: bool) -> None:
        """A step record for the listeners: the population's weights, ESS, log Ẑ and ancestors (the
        particles' own records are left out: a vectorised step has no per-particle segments)."""
        ctx = self.ctx
        if not (ctx.broadcaster and ctx.broadcaster.wants_steps):
            return
        started, self._started_ns = self._started_ns, time.time_ns()
        ctx.emit_step(StepOutcome(
            step=self.step, moved=np.zeros(0, dtype=np.int64), segments=[], increments=increments,
            ids=ids, parents=parents, log_w=log_w,
            status=np.full(self.n, FINISHED if final else RUNNING, dtype=np.int8), started_ns=started,
            ess=step_ess, log_evidence=log_evidence, ancestors=ancestors,
            offspring_ids=None if ancestors is None else self.ids))
