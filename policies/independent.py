"""Shared by the policies that draw complete, independent executions (Forward, Importance,
Rejection, BestOfN, SelfConsistency, AheadByK): run them in batches, honouring the budget between
batches, add them to the run's global trace, weigh them, and report them as one step."""

from __future__ import annotations

import math

import numpy as np

from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.population import logmeanexp
from swarm.result import Particle

from policies.base import RunContext


async def run_independent(ctx: RunContext, runner: SegmentRunner, count: int, *, first_stream: int = 0,
                          batch_size: int | None = None) -> list[Segment]:
    """Run `count` complete executions with streams first_stream, first_stream+1, …; stop early
    (returning fewer) when the budget runs out between batches. Each batch may lose at most the
    policy's `max_lost_fraction` of its executions to infrastructure failures."""
    size = batch_size or count
    segments: list[Segment] = []
    for start in range(first_stream, first_stream + count, size):
        stop = min(start + size, first_stream + count)
        batch = await ctx.advance(runner, [SegmentTask(stream=i) for i in range(start, stop)])
        ctx.check_lost(batch)
        segments += batch
        if ctx.out_of_budget():
            break
    return segments


def unconsumed(ctx: RunContext, segments: list[Segment]) -> None:
    """Take back from the run's diagnostics the deaths and losses of executions that were drawn in a
    batch but not consumed: a sequential stopping rule (Rejection, AheadByK) stopped before them.
    Their tokens and calls were spent and stay counted; their deaths are not the run's, whose
    `attempts` / `samples_used` end where the rule stopped (a batch of 100 reported 72 red flags of
    42 draws used, and `diagnose` a failure rate of 171%)."""
    d = ctx.diagnostics
    for seg in segments:
        if seg.status in ("dead", "failed") and seg.site:
            _decrement(d.deaths, seg.site)
        elif seg.status == "lost":
            d.lost -= 1
            _decrement(d.lost_causes, seg.site or "lost")


def _decrement(counts: dict[str, int], key: str) -> None:
    counts[key] -= 1
    if not counts[key]:
        del counts[key]


def particle_of(ctx: RunContext, stream: int, seg: Segment, log_weight: float) -> Particle:
    """The particle of a complete execution, its events added to the run's global trace."""
    leaf = ctx.tree.extend(-1, seg.events, 0, stream)
    return Particle.model_construct(id=stream, value=seg.value, log_weight=log_weight, trace=ctx.tree.trace(leaf),
                                    status=seg.status, parent_id=None, leaf=leaf)


def log_weights(segments: list[Segment]) -> np.ndarray:
    """log w(τ) of each execution (−inf for killed ones; lost ones are −inf and excluded by `active`)."""
    return np.array([s.log_weight() for s in segments])


def active(segments: list[Segment]) -> np.ndarray:
    """The executions that count: every one that was not lost."""
    return np.array([s.status != "lost" for s in segments], dtype=bool)


def log_evidence(segments: list[Segment], log_w: np.ndarray) -> float:
    """log Ẑ = log (1/N) Σ w(τᵢ) over the executions that were not lost (lost ones are missing)."""
    mask = active(segments)
    return logmeanexp(log_w[mask]) if mask.any() else -math.inf


class ConsumedDraws:
    """The draws a sequential stopping rule (Rejection, AheadByK) consumed, in order, with log weight
    0 if accepted and −∞ if not, for the step the listeners get: every consumed draw, so a trace
    file counts the rejected ones as deaths (it reported only the accepted ones, and `swarm inspect`
    showed "deaths: 0" beside 16 rejections in `diagnostics.deaths`). Kept only when a listener
    wants steps: a million rejected draws are not held for nobody."""

    def __init__(self, ctx: RunContext) -> None:
        self.keep = bool(ctx.broadcaster and ctx.broadcaster.wants_steps)
        self.streams: list[int] = []
        self.segments: list[Segment] = []
        self.log_w: list[float] = []

    def add(self, stream: int, seg: Segment, accepted: bool) -> None:
        if self.keep:
            self.streams.append(stream)
            self.segments.append(seg)
            self.log_w.append(0.0 if accepted else -math.inf)

    def report(self, ctx: RunContext, log_z: float) -> None:
        if self.keep:
            report_step(ctx, self.segments, np.array(self.log_w, dtype=float), log_z, ids=self.streams)


def report_step(ctx: RunContext, segments: list[Segment], log_w: np.ndarray, log_z: float,
                ids: list[int] | None = None) -> None:
    """Report independent executions to the listeners as one step (step 0)."""
    ctx.emit_segments(0, segments, log_w, log_z, ids=ids)


async def weighted_independent(ctx: RunContext, runner: SegmentRunner, count: int, *,
                               batch_size: int | None = None) -> tuple[list[Segment], np.ndarray, float]:
    """Draw `count` independent executions τᵢ ~ π, report them as one step, and return them with
    their log weights log w(τᵢ) and the evidence estimate log Ẑ = log (1/N) Σ w(τᵢ) (over the
    executions not lost).

    Raises NoSurvivingParticles (naming what killed them) when every weight is zero."""
    return weigh_independent(ctx, await run_independent(ctx, runner, count, batch_size=batch_size))


def weigh_independent(ctx: RunContext, segments: list[Segment]) -> tuple[list[Segment], np.ndarray, float]:
    """The second half of `weighted_independent`, for draws made already (`PausableDraws.draws`)."""
    log_w = log_weights(segments)
    log_z = log_evidence(segments, log_w)
    report_step(ctx, segments, log_w, log_z)
    if not np.any(log_w[active(segments)] > -np.inf):
        raise ctx.no_survivors()
    return segments, log_w, log_z


def particles_of(ctx: RunContext, segments: list[Segment], log_w: np.ndarray) -> list[Particle]:
    return [particle_of(ctx, i, s, float(lw)) for i, (s, lw) in enumerate(zip(segments, log_w))]
