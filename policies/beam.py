"""Beam search over program steps (sync points), by cumulative log weight, without replacement."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from policies.base import Policy, RunContext
from policies.search import Objective, evidence_lower_bound, joint_log_mass, score, trace_key
from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.population import ess
from swarm.result import Particle, Result, StepStats

__all__ = ["Beam"]


@dataclass
class _Element:
    """A beam element: a particle suspended at a sync point (or finished), with its search score."""

    seg: Segment
    stream: int
    parent: int | None
    score: float
    key: tuple


class Beam(Policy):
    """Beam search over program steps: the steps are the sync points (top-level factor/guarantee, in
    program order), a beam element is a particle suspended at one.

        B₀ = {∅}
        repeat until every element of B is finished:
            C = {finished elements of B} ∪ { expand children of each running s ∈ B }
                (child = s continued to its next sync point on its own random stream, so children differ)
            merge duplicates of C (same sampled values: the same trace)
            B = the `width` elements of C with the largest score          (ties: first found)

    The score is the cumulative log weight log w(s) (objective="weight": the potential found so far,
    plus the program's own shaping twist while running) or log π(s) + log w(s) (objective="joint":
    MAP search of p̃). Finished traces stay in the beam and compete with the running ones.

    **It does not target p.** It is a search policy: with `width` at least the number of paths and
    `expand` large enough to draw every value, the beam holds every path and its best element is the
    exact argmax of the score (the MAP trace of p with objective="joint"); with width 1 it is greedy.

    **What is returned.** `particles`: the final beam, most-scoring first; each particle's log weight
    is its joint log mass log π(τ) + log w(τ), so `result.marginal()` is p restricted to the beam.
    `log_evidence = log Σ_{finished τ in the beam} π(τ)Φ(τ) ≤ log Z` (distinct traces, so a
    deterministic lower bound, exact when the beam holds every path; −inf if none finished).
    `extra`: "best" (the top particle), "best_score", "scores", "objective", "executions" (segment
    runs), "merged" (duplicate children merged). Diagnostics per step: the beam's ESS under p̃ and
    the running lower bound.
    """

    width: int = Field(4, gt=0)
    """How many elements the beam keeps."""
    expand: int = Field(4, gt=0)
    """How many children each running element is expanded into at each step."""
    objective: Objective = "weight"
    max_steps: int | None = Field(None, gt=0)

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.width)
        runner = ctx.runner(args, kwargs)
        beam: list[_Element | None] = [None]  # None: the empty prefix
        state = {"next_stream": 0, "executions": 0, "merged": 0}
        step = 0
        while any(e is None or e.seg.status == "running" for e in beam):
            if self.max_steps is not None and step >= self.max_steps:
                ctx.diagnostics.stopped_by = "max_steps"
                break
            step += 1
            started = time.time_ns()
            beam = await self._step(ctx, runner, beam, step, state)
            self._record(ctx, beam, step, started, state.pop("dead"))
            if ctx.out_of_budget():
                break
        return self._result(ctx, [e for e in beam if e is not None], state)

    async def _step(self, ctx: RunContext, runner: SegmentRunner, beam: list[_Element | None], step: int,
                    state: dict) -> list[_Element]:
        """Expand every running element, merge duplicates, keep the top `width`."""
        tasks, parents = [], []
        for elem in beam:
            if elem is not None and elem.seg.status != "running":
                continue
            for c in range(self.expand):
                tasks.append(SegmentTask(
                    stream=state["next_stream"], prefix=None if elem is None else elem.seg.trace,
                    stop_at=1 if elem is None else elem.seg.sync_count + 1,
                    continue_from=elem.stream if elem is not None and c == 0 else None))
                parents.append(elem)
                state["next_stream"] += 1
        segments = await ctx.advance(runner, tasks)
        state["executions"] += len(tasks)
        candidates = [e for e in beam if e is not None and e.seg.status != "running"]
        state["dead"] = []
        for task, seg, parent in zip(tasks, segments, parents):
            elem = _Element(seg, task.stream, None if parent is None else parent.stream, score(seg, self.objective), ())
            if elem.score > -math.inf:
                elem.key = trace_key(seg.trace)
                candidates.append(elem)
            else:
                state["dead"].append(elem)
        unique: dict[tuple, _Element] = {}
        for elem in candidates:
            unique.setdefault(elem.key, elem)
        state["merged"] += len(candidates) - len(unique)
        if not unique:
            self._record(ctx, [], step, 0, state.pop("dead"))
            raise ctx.diagnostics.no_survivors(ctx.policy_name)
        ranked = sorted(unique.values(), key=lambda e: -e.score)  # stable: ties keep the order found
        return ranked[: self.width]

    def _record(self, ctx: RunContext, beam: list[_Element], step: int, started: int, dead: list[_Element]) -> None:
        """The step's diagnostics and listener record, both with the beam's weights under p̃,
        log π(s) + log w(s) (the result's particle weights): its ESS is 1/Σ w̄² of those. The
        record also holds the children that died in the step (weight 0), so listeners count their
        deaths, and a step in which every child died is recorded before the run raises (ESS 0).
        The records used to carry the scores, so with objective="weight" a trace file or stream
        showed another ESS than `diagnostics.steps` and the result, and no death at all."""
        log_p = np.array([joint_log_mass(e.seg.trace) for e in beam])
        bound = evidence_lower_bound([e.seg.trace for e in beam if e.seg.status == "finished"])
        ctx.diagnostics.steps.append(StepStats(step=step, ess=float(ess(log_p)) if beam else 0.0, log_evidence=bound,
                                               resampled=True, num_alive=len(beam)))
        shown = beam + dead
        ctx.emit_segments(step, [e.seg for e in shown], np.concatenate([log_p, np.full(len(dead), -math.inf)]), bound,
                          ids=[e.stream for e in shown], parents=[e.parent for e in shown], increments=np.zeros(len(shown)))

    def _result(self, ctx: RunContext, beam: list[_Element], state: dict) -> Result:
        particles = [Particle(id=e.stream, value=e.seg.value if e.seg.status == "finished" else None,
                              log_weight=joint_log_mass(e.seg.trace), trace=e.seg.trace, status=e.seg.status,
                              parent_id=e.parent) for e in beam]
        bound = evidence_lower_bound([e.seg.trace for e in beam if e.seg.status == "finished"])
        return ctx.result(particles, bound, extra={
            "best": particles[0], "best_score": beam[0].score, "scores": [e.score for e in beam],
            "objective": self.objective, "executions": state["executions"], "merged": state["merged"]})
