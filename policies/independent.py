"""Shared by the policies that draw complete, independent executions (Forward, Importance,
Rejection, BestOfN, SelfConsistency): run them in batches, honouring the budget between batches."""

from __future__ import annotations

from swarm.execution import Segment, SegmentRunner, SegmentTask
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
