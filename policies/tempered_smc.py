"""Tempered SMC: anneal from the proposal to the target along p_β ∝ π·Φ^β (docs/theory.md §5).

Every particle is a *complete* trace. Each stage raises β, reweights, resamples and moves the
particles with Metropolis–Hastings steps that leave π·Φ^β invariant. Without the moves the
incremental weights telescope to Φ and tempering is plain importance sampling with extra resampling
noise (§8, "key caveat"); the moves are what make it work.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from policies.base import Policy, RunContext
from swarm.coordinator import StepOutcome
from swarm.effects import UNSET, Handler, Message
from swarm.errors import InvalidDistributionError
from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.population import STATUS_CODES, Genealogy, count_distinct, ess, logmeanexp, logsumexp, normalize, normalized_weights
from swarm.resampling import resample
from swarm.result import Particle, Result, StepStats
from swarm.trace import Trace
from swarm.weights import importance_correction, log_potential

__all__ = ["TemperedSMC", "target_log_potential", "log_correction", "prefix_before_site", "num_sample_sites",
           "next_beta", "conditional_ess"]


# --- what a complete trace contributes ---------------------------------------------------------------
def target_log_potential(trace: Trace) -> float:
    """log Φ(τ) at scale 1, whatever β the trace was run at: target factors plus guarantees."""
    return log_potential(trace.events, unscaled=True)


def log_correction(trace: Trace) -> float:
    """Σ_sites (log p − log q): non-zero only for sites drawn from a proposal other than their model."""
    return importance_correction(trace.events)


def num_sample_sites(trace: Trace) -> int:
    return sum(1 for e in trace.events if e.type == "sample")


def prefix_before_site(trace: Trace, j: int) -> Trace:
    """The events recorded before the j-th sample site (0-based): replaying them and running on
    regenerates sites j, j+1, … from the proposal."""
    seen = 0
    for pos, e in enumerate(trace.events):
        if e.type == "sample":
            if seen == j:
                return Trace(list(trace.events[:pos]))
            seen += 1
    raise IndexError(f"trace has {seen} sample sites, no site {j}")


def _at_full_scale(trace: Trace) -> Trace:
    """A copy whose target factors carry scale 1 (the particle was run at β = 0)."""
    return Trace([dataclasses.replace(e, scale=1.0) if e.type == "factor" and not e.shaping else e
                  for e in trace.events])


# --- choosing the next temperature ------------------------------------------------------------------
def conditional_ess(log_W: np.ndarray, log_phi: np.ndarray, delta: float) -> float:
    """CESS(β + δ)/N = (Σ W_i u_i)² / Σ W_i u_i² with u_i = Φ_i^δ and Σ W_i = 1 (Zhou et al. 2016).

    `log_W` are normalised log weights. A particle with Φ = 0 has u = 0 for every δ > 0."""
    with np.errstate(invalid="ignore"):
        log_u = np.where(np.isneginf(log_phi), -math.inf, delta * log_phi)
    return math.exp(2.0 * logsumexp(log_W + log_u) - logsumexp(log_W + 2.0 * log_u))


def next_beta(beta: float, log_W: np.ndarray, log_phi: np.ndarray, target: float, iterations: int = 60) -> float:
    """The β' ∈ (β, 1] whose CESS is `target` times the CESS just above β, found by bisection on δ.

    CESS is non-increasing in δ (the u²-tilt favours large log Φ more than the u-tilt), so bisection
    applies. Just above β it equals the live mass a = Σ_{Φ_i>0} W_i (dead particles drop out at any
    δ > 0); the target is target·a, so Φ = 0 particles cannot stall the schedule. When even δ = 1 − β
    keeps the CESS above target, β' = 1.
    """
    alive = np.isfinite(log_phi)
    live_mass = float(np.sum(np.exp(log_W[alive]))) if alive.any() else 0.0
    want = target * live_mass
    hi = 1.0 - beta
    if conditional_ess(log_W, log_phi, hi) >= want:
        return 1.0
    lo = 0.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if conditional_ess(log_W, log_phi, mid) >= want:
            lo = mid
        else:
            hi = mid
    return beta + (lo if lo > 0.0 else hi)


class _Population:
    """N complete traces: their segments, ids, parent ids and log weights W."""

    def __init__(self, segments: list[Segment]) -> None:
        self.n = len(segments)
        self.segments = segments
        self.ids = np.arange(self.n, dtype=np.int64)
        self.parents = np.full(self.n, -1, dtype=np.int64)
        self.log_w = np.zeros(self.n)
        self.next_id = self.n

    def resample(self, ancestors: np.ndarray) -> np.ndarray:
        """Copies of `ancestors` with new ids; weights reset to logmeanexp(W) (Ẑ stays unbiased)."""
        mean = logmeanexp(self.log_w)
        self.segments = [self.segments[a] for a in ancestors]
        self.parents = self.ids[ancestors]
        self.ids = np.arange(self.next_id, self.next_id + self.n, dtype=np.int64)
        self.next_id += self.n
        self.log_w = np.full(self.n, mean)
        return self.ids

    def particles(self, ctx: RunContext) -> list[Particle]:
        """The final particles. A finished trace of weight zero (Φ(τ) = 0: a −∞ factor, which the
        run at β = 0 did not apply) is "dead" with no value, as SMC reports it; it was "finished"
        with its value, so `[p for p in particles if p.status == "finished"]` held traces the
        target excludes."""
        out = []
        for i, seg in enumerate(self.segments):
            trace = _at_full_scale(seg.trace)
            leaf = ctx.tree.extend(-1, trace.events, 0, int(self.ids[i]))
            status = "dead" if seg.status == "finished" and self.log_w[i] == -math.inf else seg.status
            out.append(Particle.model_construct(
                id=int(self.ids[i]), value=seg.value if status == "finished" else None,
                log_weight=float(self.log_w[i]), trace=trace, status=status,
                parent_id=None if self.parents[i] < 0 else int(self.parents[i]), leaf=leaf))
        return out


class _Chains:
    """Per-particle quantities of the complete traces: log Φ and the number of sample sites."""

    def __init__(self, segments: list[Segment]) -> None:
        self.log_phi = np.array([_log_phi(s) for s in segments])
        self.sites = np.array([num_sample_sites(s.trace) for s in segments])

    def take(self, ancestors: np.ndarray) -> None:
        self.log_phi, self.sites = self.log_phi[ancestors], self.sites[ancestors]

    def set(self, i: int, seg: Segment) -> None:
        self.log_phi[i], self.sites[i] = _log_phi(seg), num_sample_sites(seg.trace)


def zero_potential_site(trace: Trace) -> str:
    """The address of the first target factor of log-potential −∞ in a trace (Φ(τ) = 0)."""
    for e in trace.events:
        if e.type == "factor" and not e.shaping and e.log_potential == -math.inf:
            return e.address
    return "<zero potential>"


def _count_zero_potentials(ctx: RunContext, pop: "_Population", killed: np.ndarray) -> None:
    """Count in `diagnostics.deaths` the live particles a step to β > 0 kills, those with Φ(τ) = 0
    (a −∞ factor, which at β = 0 had scale 0), by the factor that zeroed Φ, as SMC counts them.
    Before, they were not counted: a run they all died in raised "no particle was weighted"
    without naming the factor, and a run that went on reported none of these deaths."""
    for i in np.flatnonzero(killed):
        site = zero_potential_site(pop.segments[i].trace)
        ctx.diagnostics.deaths[site] = ctx.diagnostics.deaths.get(site, 0) + 1


def _log_phi(seg: Segment) -> float:
    return target_log_potential(seg.trace) if seg.status == "finished" else -math.inf


# --- the two Metropolis–Hastings moves --------------------------------------------------------------
class _SiteMove(Handler):
    """Lightweight MH (Wingate, Stuhlmüller & Goodman 2011): redraw one site, keep every other value.

    `plan = (address to redraw, {address: value to keep})`, one per proposal execution. A kept
    value is re-scored under its (possibly changed) distribution; sites the old trace did not have
    are drawn fresh.
    """

    def __init__(self, plan: tuple[str, dict]) -> None:
        super().__init__()
        self.plan = plan

    def process_message(self, msg: Message) -> None:
        if msg.type != "sample" or msg.value is not UNSET:
            return
        redraw, keep = self.plan
        if msg.name == redraw or msg.name not in keep:
            return
        source = msg.proposal if msg.proposal is not None else msg.fn
        if source.is_async or msg.fn.is_async:
            raise InvalidDistributionError(
                f"TemperedSMC(move='site') must re-score the kept value of site {msg.name!r}, an asynchronous "
                "generation it cannot score; use move='suffix' for programs with LLM sites")
        value = keep[msg.name]
        msg.value, msg.log_prob = value, source.log_prob(value)  # a new execution: its events are recorded
        msg.target_log_prob = None if msg.proposal is None else msg.fn.log_prob(value)


def _site_terms(trace: Trace, kept: set[str]) -> float:
    """Σ_{kept sites} log p(x) + Σ_{other sites} (log p − log q)(x): what a trace contributes to the
    MH ratio when the sites outside `kept` were drawn from their proposals."""
    total = 0.0
    for e in trace.events:
        if e.type == "sample":
            log_p = e.log_prob if e.target_log_prob is None else e.target_log_prob
            total += log_p if e.address in kept else log_p - e.log_prob
    return total


def _log_acceptance(beta: float, old: Trace, old_phi: float, new: Segment, kept: set[str]) -> float:
    """log of  [Φ(τ')/Φ(τ)]^β · [m(τ)/m(τ')] · Π_kept p'(x)/p(x) · [w_fresh(τ')/w_stale(τ)]."""
    new_phi = _log_phi(new)
    if new_phi == -math.inf:
        return -math.inf
    return (beta * (new_phi - old_phi) + _site_terms(new.trace, kept) - _site_terms(old, kept)
            + math.log(num_sample_sites(old)) - math.log(num_sample_sites(new.trace)))


def _sample_events(trace: Trace) -> list:
    return [e for e in trace.events if e.type == "sample"]


class TemperedSMC(Policy):
    """Adaptive tempered SMC with Metropolis–Hastings rejuvenation moves.

    Path of targets f_β(τ) = π(τ)·Φ(τ)^β·1[guarantees(τ)], β: 0 = β₀ < β₁ < … < β_S = 1.

        draw τ_i ~ π (complete traces, run at β = 0; guarantees are hard at every β)
        W_i ∝ 1[guarantees(τ_i)] · Π_sites p/q           (the importance weight against f_0)
        log Ẑ ← log mean_i W_i
        repeat until β = 1:
            β' ← the β' with CESS(β') = target_cess·N,  CESS = N(Σ W_i u_i)²/Σ W_i u_i²,  u_i = Φ_i^{β'−β}
            log Ẑ ← log Ẑ + log Σ_i W_i u_i ;   W_i ← W_i u_i / Σ_j W_j u_j
            if β' < 1: resample; then k times, for every particle τ:
                j ~ Uniform{0, …, m(τ)−1}           (m = number of sample sites of τ)
                τ' ← move(τ, j)
                accept with min(1, [Φ(τ')/Φ(τ)]^β' · [m(τ)/m(τ')] · Π_kept p'(x)/p(x) · w_fresh(τ')/w_stale(τ))
            β ← β'

    Moves (`move`):
    - "suffix": replay the sites before j, draw site j and everything after it afresh from the
      program. The kept sites are the prefix (their p is unchanged) and the fresh suffix is drawn from
      π itself, so π cancels: the ratio is [Φ(τ')/Φ(τ)]^β·m(τ)/m(τ'). Works for any program, LLM
      generations included, but at high β a long fresh suffix is rarely accepted.
    - "site": lightweight MH (Wingate et al. 2011): redraw site j alone and keep every other value,
      re-scored under its possibly changed distribution (Π_kept p'/p); sites that appear or vanish
      are drawn fresh / dropped. Needs every kept site to be scorable (finite distributions, not LLM
      generations), and mixes far better on long traces.

    m(τ)/m(τ') is the ratio of the probabilities of choosing j (1 when every trace has the same number
    of sites); w = p/q corrects sites drawn from a custom proposal (1 otherwise). A proposal that
    fails a guarantee or raises has f_β = 0 and is rejected. With a fixed `schedule`, Ẑ is unbiased for
    Z = Σ π Φ. With the adaptive schedule the temperatures are chosen from the same particles that
    then estimate the increments, so Ẑ is consistent but biased at finite N (an O(1/N) bias, Beskos,
    Jasra, Kantas & Thiery 2016; measured on a sharp needle at N = 50: E[Ẑ]/Z ≈ 0.8, at N = 200 ≈ 0.94);
    for an unbiased Ẑ, take the β's of an adaptive pilot run (`extra["betas"][1:]`) as a fixed
    schedule for a fresh run. Without moves (k = 0) the increments telescope to Φ and this is
    importance sampling with extra resampling noise (docs/theory.md §5.2). The final population is the weighted population at β = 1 (not
    resampled), so `result.ess` is its real ESS.

    Cost: N + k·N·(S − 1) program executions, reported in `extra["executions"]`.
    """

    num_particles: int = Field(1000, gt=0)
    schedule: Literal["adaptive"] | list[float] = "adaptive"
    """"adaptive" (CESS bisection) or an increasing list of temperatures in (0, 1] ending at 1."""
    target_cess: float = Field(0.5, gt=0.0, lt=1.0)
    rejuvenation_steps: int = Field(2, ge=0)
    move: Literal["suffix", "site"] = "suffix"
    resampling: Literal["multinomial", "systematic", "stratified", "residual"] = "systematic"
    max_stages: int = Field(100, ge=1)
    """The stage that reaches this count jumps to β = 1 (an adaptive schedule never runs longer)."""

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value):
        if value == "adaptive":
            return value
        betas = [float(b) for b in value]
        if not betas or betas[-1] != 1.0:
            raise ValueError(f"schedule must end at 1.0, got {value!r}")
        if any(not 0.0 < b <= 1.0 for b in betas) or any(b >= c for b, c in zip(betas, betas[1:])):
            raise ValueError(f"schedule must be strictly increasing in (0, 1], got {value!r}")
        return betas

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        n = self.num_particles
        runner = ctx.runner(args, kwargs, beta=0.0)
        plans: dict = {}
        mover = ctx.runner(args, kwargs, beta=0.0)
        mover.extra_handlers = lambda stream: [_SiteMove(plans[stream])]
        pop = _Population(list(await ctx.advance(runner, [SegmentTask(stream=i) for i in range(n)])))
        chains = _Chains(pop.segments)
        pop.log_w = np.array([log_correction(s.trace) if s.status == "finished" else -math.inf for s in pop.segments])
        ctx.emit_segments(0, pop.segments, pop.log_w, logmeanexp(pop.log_w), ids=pop.ids.tolist())
        self._check_alive(ctx, pop)
        state = {"beta": 0.0, "executions": n, "stages": [], "genealogy": Genealogy(n), "stopped": False,
                 "runner": runner if self.move == "suffix" else mover, "plans": plans}
        self._record(ctx, state, pop, 0, 0.0, None, None, None)
        while state["beta"] < 1.0:
            await self._stage(ctx, pop, chains, state)
        ctx.diagnostics.genealogy = state["genealogy"].rows()
        return ctx.result(pop.particles(ctx), logmeanexp(pop.log_w), extra=_extra(state))

    async def _stage(self, ctx: RunContext, pop: _Population, chains: _Chains, state: dict) -> None:
        """One tempering stage: choose β', reweight, and (below β' = 1) resample and move."""
        started = time.time_ns()
        stage, beta = len(state["stages"]), state["beta"]
        new_beta = self._choose_beta(stage, beta, pop, chains, state["stopped"])
        finite_phi = np.nan_to_num(chains.log_phi, neginf=0.0)
        log_u = np.where(np.isneginf(chains.log_phi), -math.inf, (new_beta - beta) * finite_phi)
        log_increment = logsumexp(normalize(pop.log_w) + log_u)
        _count_zero_potentials(ctx, pop, np.isfinite(pop.log_w) & np.isneginf(log_u))
        pop.log_w = pop.log_w + log_u
        self._check_alive(ctx, pop)
        stage_ess = ess(pop.log_w)
        reweighted = StepOutcome(  # what the step reports: the population before resampling
            step=stage, moved=np.zeros(0, dtype=np.int64), segments=[], increments=log_u, ids=pop.ids.copy(),
            parents=pop.parents.copy(), log_w=pop.log_w.copy(),
            status=np.array([STATUS_CODES[s.status] for s in pop.segments]), started_ns=started, ess=stage_ess,
            log_evidence=logmeanexp(pop.log_w))
        ancestors = offspring = rate = None
        if new_beta < 1.0:
            ancestors = resample(self.resampling, normalized_weights(pop.log_w), ctx.step_rng(stage), pop.n)
            offspring = pop.resample(ancestors)
            chains.take(ancestors)
            rate = await self._rejuvenate(ctx, pop, chains, new_beta, stage, state)
        state["beta"] = new_beta
        state["stopped"] = state["stopped"] or ctx.out_of_budget() is not None
        self._record(ctx, state, pop, stage, log_increment, rate, ancestors, stage_ess)
        reweighted.ancestors, reweighted.offspring_ids = ancestors, offspring
        ctx.emit_step(reweighted)  # `swarm.listeners.StepRecord`: ids and weights before the resampling

    def _choose_beta(self, stage: int, beta: float, pop: _Population, chains: _Chains, stopped: bool) -> float:
        if stopped or stage >= self.max_stages:
            return 1.0  # out of budget or stages: one last importance step straight to the target
        if self.schedule != "adaptive":
            return self.schedule[stage - 1]
        return next_beta(beta, normalize(pop.log_w), chains.log_phi, self.target_cess)

    async def _rejuvenate(self, ctx: RunContext, pop: _Population, chains: _Chains, beta: float,
                          stage: int, state: dict) -> float | None:
        """k sweeps of MH at temperature β over every particle; returns the acceptance rate."""
        proposed = accepted = 0
        for sweep in range(self.rejuvenation_steps):
            rng = ctx.step_rng(stage, sweep + 1)
            movable = [i for i in range(pop.n) if chains.sites[i] > 0]
            sites = [int(rng.integers(chains.sites[i])) for i in movable]
            tasks, kept = self._proposals(pop, movable, sites, f"mh{stage}.{sweep}", state["plans"])
            proposals = await _run_proposals(ctx, state["runner"], tasks)
            state["executions"] += len(tasks)
            log_uniform = np.log(rng.random(len(tasks)))
            for i, seg, keep, log_v in zip(movable, proposals, kept, log_uniform):
                proposed += 1
                old = pop.segments[i].trace
                if log_v < _log_acceptance(beta, old, chains.log_phi[i], seg, keep(seg.trace)):
                    pop.segments[i] = seg
                    chains.set(i, seg)
                    accepted += 1
        state["plans"].clear()
        return accepted / proposed if proposed else None

    def _proposals(self, pop: _Population, movable: list[int], sites: list[int], tag: str, plans: dict):
        """The proposal tasks, and for each a function giving the kept addresses from the new trace."""
        tasks, kept = [], []
        for i, j in zip(movable, sites):
            trace, stream = pop.segments[i].trace, f"{tag}.{i}"
            if self.move == "suffix":
                prefix = prefix_before_site(trace, j)
                tasks.append(SegmentTask(stream=stream, prefix=prefix))
                kept.append(lambda new, a=frozenset(e.address for e in _sample_events(prefix)): a)
            else:
                events = _sample_events(trace)
                plans[stream] = (events[j].address, {e.address: e.value for e in events})
                tasks.append(SegmentTask(stream=stream))
                kept.append(lambda new, old=plans[stream]: {e.address for e in _sample_events(new)
                                                            if e.address in old[1] and e.address != old[0]})
        return tasks, kept

    def _check_alive(self, ctx: RunContext, pop: _Population) -> None:
        if not np.any(pop.log_w > -math.inf):
            raise ctx.diagnostics.no_survivors(type(self).__name__)

    def _record(self, ctx: RunContext, state: dict, pop: _Population, stage: int, log_increment: float,
                rate: float | None, ancestors: np.ndarray | None, stage_ess: float | None) -> None:
        state["genealogy"].record(ancestors)
        stage_ess = ess(pop.log_w) if stage_ess is None else stage_ess
        log_z = logmeanexp(pop.log_w)
        state["stages"].append({"beta": state["beta"], "ess": stage_ess, "acceptance_rate": rate,
                                "log_increment": log_increment, "log_evidence": log_z})
        ctx.diagnostics.steps.append(StepStats(
            step=stage, ess=stage_ess, log_evidence=log_z, resampled=ancestors is not None,
            num_alive=int(np.sum(pop.log_w > -math.inf)), beta=state["beta"],
            unique_ancestors=None if ancestors is None else count_distinct(ancestors)))


def _extra(state: dict) -> dict:
    stages = state["stages"]
    return {"betas": [s["beta"] for s in stages], "ess": [s["ess"] for s in stages],
            "acceptance_rates": [s["acceptance_rate"] for s in stages],
            "log_increments": [s["log_increment"] for s in stages], "stages": stages,
            "num_stages": len(stages) - 1, "executions": state["executions"]}


async def _run_proposals(ctx: RunContext, runner: SegmentRunner, tasks: list[SegmentTask]) -> list[Segment]:
    """Run MH proposals, counting their tokens and calls (a rejected proposal is not a particle, so
    its death is not added to `diagnostics.deaths`)."""
    segments = await ctx.runtime.run_segments(runner, tasks)
    for seg in segments:
        ctx.diagnostics.tokens += seg.tokens
        ctx.diagnostics.llm_calls += seg.llm_calls
        ctx.diagnostics.output_tokens += seg.output_tokens
    return segments
