"""`LineageSampler`: export every span on a surviving lineage, and a fraction of the others.

What a reader of a weighted run follows is the history of the answers: the particles of the final
population with a non-zero weight and their ancestors. A particle id whose lineage went extinct
(it got no offspring at a resampling, or died, or ended with weight 0) matters less, one such
particle much like another. So for populations too large to trace in full (opt-in, `rate` < 1):

- run, step and final-population spans are always exported (ESS, evidence and counts stay exact);
- the particle-step spans (with their LLM and tool child spans) of a particle id are buffered
  until its fate is known: when its lineage goes extinct they are exported with probability `rate`
  (a deterministic multiplicative hash of the id, so a kept id keeps all its steps), and when the
  run ends on a surviving lineage they are all exported.

A node is a particle id; its lineage goes extinct when the id ends (dead, or it was replaced at a
resampling) with no offspring alive. The buffer holds the spans of undecided ids only; past
`max_buffered` spans the whole buffer is exported at once (never dropped: that keeps more than
the rule asks, never less), which bounds memory for runs that never resample.

Links from an offspring to a parent span that was not kept dangle (Phoenix drops links anyway;
`plp.parent_particle_id` and `plp.lineage` are always set).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from observability.span_data import SpanData
from observability.span_plan import Owned
from swarm.listeners import RunFinished, StepRecord

_HASH, _MASK = 0x9E3779B97F4A7C15, (1 << 64) - 1


@dataclass
class _Node:
    parent: int | None
    spans: list[SpanData] = field(default_factory=list)
    alive: int = 0
    """Offspring of this id whose lineage is not extinct yet."""


@dataclass
class _RunState:
    nodes: dict[int, _Node] = field(default_factory=dict)
    buffered: int = 0
    kept: int = 0
    """Particle-owned spans exported so far."""


class LineageSampler:
    """Decides which particle-owned spans are exported (see the module docstring)."""

    def __init__(self, rate: float, max_buffered: int = 50_000) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"particle_sampling={rate!r} must be in (0, 1]")
        self.rate = rate
        self.max_buffered = max_buffered
        self._threshold = int(rate * (1 << 64))
        self.runs: dict[str, _RunState] = {}

    def sampled(self, particle_id: int) -> bool:
        """Whether an extinct lineage's id keeps its spans (probability `rate`)."""
        return self._threshold > _MASK or ((particle_id * _HASH) & _MASK) < self._threshold

    def add(self, run_id: str, owned: list[Owned]) -> list[SpanData]:
        """Spans to export now (those of no particle); particles' spans are buffered."""
        state = self.runs.setdefault(run_id, _RunState())
        now: list[SpanData] = []
        nodes = state.nodes
        for owner, span in owned:
            if owner is None:
                now.append(span)
                continue
            node = nodes.get(owner)
            if node is None:
                node = nodes[owner] = _Node(None)
            node.spans.append(span)
            state.buffered += 1
        if state.buffered > self.max_buffered:
            now.extend(self._release_all(state))
        return now

    def after_step(self, record: StepRecord) -> list[SpanData]:
        """Resolve the lineages this step ended: dead particles, and ids left without offspring by
        a resampling."""
        state = self.runs.setdefault(record.run_id, _RunState())
        out: list[SpanData] = []
        for p in record.particles:
            if p.status == "dead" and state.nodes.get(p.particle_id, _Node(None)).alive == 0:
                self._extinct(state, p.particle_id, out)
        if record.resampled and record.ancestors is not None and record.offspring_ids is not None:
            ids = record.particle_ids or [p.particle_id for p in sorted(record.particles, key=lambda p: p.index)]
            parents = [ids[a] for a in record.ancestors if a < len(ids)]
            counts = Counter(parents)
            for child, parent in zip(record.offspring_ids, parents):
                state.nodes[child] = _Node(parent)
                node = state.nodes.get(parent)
                if node is None:
                    node = state.nodes[parent] = _Node(None)
                node.alive += 1
            for pid in ids:
                if counts[pid] == 0 and pid in state.nodes:
                    self._extinct(state, pid, out)
        return out

    def end_run(self, record: RunFinished) -> list[SpanData]:
        """At the end: keep the lineages of final particles with a non-zero weight, resolve the rest."""
        state = self.runs.pop(record.run_id, None)
        if state is None:
            return []
        out: list[SpanData] = []
        weights = dict(zip(record.particle_ids, record.log_weights))
        for pid in record.particle_ids:
            if weights.get(pid, -math.inf) > -math.inf:
                self._keep_lineage(state, pid, out)
        for pid in [pid for pid, node in state.nodes.items() if node.alive == 0]:
            if pid in state.nodes:
                self._extinct(state, pid, out)
        out.extend(self._release_all(state))   # anything left (records that skipped an end)
        return out

    def kept(self, run_id: str) -> int:
        state = self.runs.get(run_id)
        return 0 if state is None else state.kept

    def close(self) -> list[SpanData]:
        """Export everything still buffered (runs that never ended)."""
        out: list[SpanData] = []
        for state in self.runs.values():
            out.extend(self._release_all(state))
        self.runs.clear()
        return out

    # -- resolution -----------------------------------------------------------------------------
    def _extinct(self, state: _RunState, pid: int, out: list[SpanData]) -> None:
        """`pid`'s lineage has no living offspring: sample its spans, then its parent's, up."""
        while pid is not None:
            node = state.nodes.pop(pid, None)
            if node is None:
                return
            state.buffered -= len(node.spans)
            if node.spans and self.sampled(pid):
                out.extend(node.spans)
                state.kept += len(node.spans)
            parent = state.nodes.get(node.parent) if node.parent is not None else None
            if parent is None:
                return
            parent.alive -= 1
            if parent.alive > 0:
                return
            pid = node.parent

    def _keep_lineage(self, state: _RunState, pid: int | None, out: list[SpanData]) -> None:
        """Export the spans of `pid` and of all its ancestors (they survive)."""
        while pid is not None:
            node = state.nodes.pop(pid, None)
            if node is None:
                return
            state.buffered -= len(node.spans)
            state.kept += len(node.spans)
            out.extend(node.spans)
            pid = node.parent

    def _release_all(self, state: _RunState) -> list[SpanData]:
        """Export every buffered span (the genealogy is kept)."""
        out = [s for node in state.nodes.values() for s in node.spans]
        for node in state.nodes.values():
            node.spans = []
        state.kept += len(out)
        state.buffered = 0
        return out
