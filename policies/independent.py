"""Shared by the policies that draw complete, independent executions (Forward, Importance,
Rejection, BestOfN, SelfConsistency): run them in batches, honouring the budget between batches."""

from __future__ import annotations

import numpy as np

from swarm.errors import NoSurvivingParticles
from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.population import logmeanexp
from swarm.result import Particle

from policies.base import RunContext


async def run_independent(ctx: RunContext, runner: SegmentRunner, count: int, *, first_stream: int = 0,
                          batch_size: int | None = None) -> list[Segment]:
    """Run `count` complete executions with streams first_stream, first_stream+1, …; stop early
    (returning fewer) when the budget runs out between batches."""
    size = batch_size or count
    segments: list[Segment] = []
    for start in range(first_stream, first_stream + count, size):
        stop = min(start + size, first_stream + count)
        segments += await ctx.advance(runner, [SegmentTask(stream=i) for i in range(start, stop)])
        if ctx.out_of_budget():
            break
    return segments


def particle_of(index: int, seg: Segment, log_weight: float) -> Particle:
    return Particle(id=index, value=seg.value, log_weight=log_weight, trace=seg.trace,
                    status="finished" if seg.status == "finished" else seg.status)


async def weighted_independent(ctx: RunContext, runner: SegmentRunner, count: int, policy: str, *,
                               batch_size: int | None = None) -> tuple[list[Segment], np.ndarray, float]:
    """Draw `count` independent executions τᵢ ~ π, report them as one step, and return them with
    their log weights log w(τᵢ) and the evidence estimate log Ẑ = log (1/N) Σ w(τᵢ).

    Raises NoSurvivingParticles (naming what killed them) when every weight is zero."""
    segments = await run_independent(ctx, runner, count, batch_size=batch_size)
    log_w = np.array([s.log_weight() for s in segments])
    log_z = logmeanexp(log_w)
    ctx.emit_step(0, segments, [0] * len(segments), list(range(len(segments))), [None] * len(segments),
                  log_w, log_w, log_z, segments[0].started_ns if segments else 0)
    if not np.any(log_w > -np.inf):
        raise NoSurvivingParticles(ctx.diagnostics.deaths, policy=policy)
    return segments, log_w, log_z


def particles_of(segments: list[Segment], log_w: np.ndarray) -> list[Particle]:
    return [particle_of(i, s, float(lw)) for i, (s, lw) in enumerate(zip(segments, log_w))]
