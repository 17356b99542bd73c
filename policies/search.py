"""What the search policies (Beam, TreeSearch) share: trace identity, scores, the evidence bound.

Search policies do not sample from p(τ) ∝ π(τ)Φ(τ); they look for high-scoring traces. They rank
prefixes and traces by one of two scores (the `objective`):

    "weight":  log w(s) = log Φ(s) + Σ_sites (log p − log q)      (the potential: reward, verifier score)
    "joint":   log π(s) + log w(s) = Σ_sites log p + log Φ(s)      (log p̃, the unnormalised target: MAP search)

and return the distinct complete traces they found, each with its *joint* log mass as its particle
log weight, so `result.marginal()` is p restricted to the found traces (exact when they include
every path) and

    log_evidence = log Σ_{distinct complete traces found} π(τ)Φ(τ)  ≤  log Z,

a deterministic lower bound (a partial sum of Z's terms over distinct paths), tight when the search
found every path of positive mass; −inf when it found no complete trace.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from swarm.execution import Segment
from swarm.population import logsumexp
from swarm.result import hashable
from swarm.trace import Trace

Objective = Literal["weight", "joint"]


def trace_key(trace: Trace) -> tuple:
    """Identity of a trace or prefix: its sampled values in order. Programs are deterministic given
    their samples, so equal keys mean equal traces (same weights, same future)."""
    return tuple((e.address, hashable(e.value)) for e in trace.events if e.type == "sample")


def joint_log_mass(trace: Trace) -> float:
    """log π(τ) + log w(τ) = Σ log p + log Φ: the unnormalised target of a trace (of a prefix: of
    what it contains so far)."""
    lw = trace.log_weight
    return lw if lw == -math.inf else trace.proposal_log_prob + lw


def score(seg: Segment, objective: Objective) -> float:
    """The search score of a segment's trace: its log weight (with the program's current shaping
    twist while it runs), plus log π for the "joint" objective."""
    lw = seg.log_weight()
    if objective == "weight" or lw == -math.inf:
        return lw
    return seg.trace.proposal_log_prob + lw


def segment_log_prob(seg: Segment, start: int) -> float:
    """log π of the sample sites a segment added after event `start` (the proposal probability of
    the step it took)."""
    return math.fsum(e.log_prob for e in seg.trace.events[start:] if e.type == "sample")


def evidence_lower_bound(traces: list[Trace]) -> float:
    """log Σ π(τ)Φ(τ) over distinct complete traces: ≤ log Z (−inf for none)."""
    masses = [joint_log_mass(t) for t in traces]
    return logsumexp(np.array(masses)) if masses else -math.inf
