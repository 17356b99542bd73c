"""The population: N particles between steps as arrays, and their genealogy (docs/theory.md §3).

The log-space math every population needs (logsumexp, normalisation, ESS, the evidence estimate)
lives in `swarm.logspace` and is re-exported here.

`Population` is the coordinator's whole per-particle state, one numpy array per quantity: particle
ids, parent ids, each particle's leaf in the global trace, cumulative log weights W, the effective
log weight of its trace at its last step (target weight plus current twist), status codes and the
sync point each has reached. Resampling indexes the arrays; no per-particle Python object exists
beyond the program's own values. A particle is

- *running*, *finished* (waits for the others), *dead* (killed by the target: weight zero, it counts
  in Ẑ), *failed* (killed by an exception of the program, with an `ErrorEvent`), or
- *lost* (its infrastructure failed: missing, not evidence). Lost particles are excluded from the
  normalisation, the ESS and Ẑ (`active`), and are replaced at the next resampling, which draws
  ancestors among the others only.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from swarm.ancestor_rows import AncestorRows, count_distinct
from swarm.logspace import (  # noqa: F401 - re-exported: the population's math
    EvidenceAccumulator,
    check_log_weights,
    ess,
    log_ess,
    logmeanexp,
    logsumexp,
    normalize,
    normalized_weights,
)

__all__ = [
    "AncestorRows", "EvidenceAccumulator", "Genealogy", "Population", "STATUS_NAMES", "check_log_weights",
    "count_distinct", "ess", "log_ess", "logmeanexp", "logsumexp", "normalize", "normalized_weights",
]

RUNNING, FINISHED, DEAD, FAILED, LOST = range(5)
STATUS_NAMES = ("running", "finished", "dead", "failed", "lost")
STATUS_CODES = {name: code for code, name in enumerate(STATUS_NAMES)}
ROOT = -1
"""The leaf of a particle that has recorded nothing yet."""


class Population:
    """N particles between steps (see the module docstring)."""

    def __init__(self, n: int, first_id: int = 0) -> None:
        if n < 1:
            raise ValueError(f"a population needs at least one particle, got {n}")
        self.n = n
        self.ids = np.arange(first_id, first_id + n, dtype=np.int64)
        self.parents = np.full(n, -1, dtype=np.int64)
        self.leaf = np.full(n, ROOT, dtype=np.int64)
        self.log_w = np.zeros(n)
        self.eff = np.zeros(n)
        self.status = np.zeros(n, dtype=np.int8)
        self.sync = np.zeros(n, dtype=np.int64)
        self.resume = self.ids.copy()
        """The stream whose kept-alive execution particle i may continue (−1: rebuild by replay)."""
        self.source = self.ids.copy()
        """The stream whose recorded path is particle i's past (its own; its parent's after resampling)."""
        self.values: list[Any] = [None] * n
        self.sites: list[str | None] = [None] * n
        self.next_id = first_id + n

    def running(self) -> np.ndarray:
        return (self.status == RUNNING).nonzero()[0]

    @property
    def active(self) -> np.ndarray:
        """A boolean mask of the particles that count: every one that is not lost."""
        return self.status != LOST

    def active_log_weights(self) -> np.ndarray:
        return self.log_w[self.active]

    def log_evidence(self) -> float:
        """log Ẑ = logmeanexp of the active particles' cumulative log weights (−inf if none)."""
        active = self.active_log_weights()
        return logmeanexp(active) if active.size else -math.inf

    def ess(self) -> float:
        return ess(self.active_log_weights())

    def alive(self) -> int:
        """Particles with positive weight (lost ones excluded)."""
        return int(np.count_nonzero((self.log_w > -math.inf) & self.active))

    def update(self, indices: np.ndarray, segments: Sequence[Any], leaves: Sequence[int],
               codes: np.ndarray | None = None, log_weights: np.ndarray | None = None) -> np.ndarray:
        """Store the step's outcome of the particles at `indices` and add their weight increments
        eff_new − eff_old to W; return the increments (by index, 0 where a particle did not move).
        A killed particle's W becomes −inf; a lost one's W is kept but no longer counts. `codes` and
        `log_weights` are the segments' status codes and `log_weight()`s, when the caller has them."""
        inc = np.zeros(self.n)
        if not len(indices):
            return inc
        if codes is None:
            codes = np.fromiter((STATUS_CODES[s.status] for s in segments), dtype=np.int8, count=len(segments))
        new = log_weights if log_weights is not None else \
            np.fromiter((s.log_weight() for s in segments), dtype=float, count=len(segments))
        self.leaf[indices] = leaves
        self.status[indices] = codes
        sites, sync = self.sites, []
        for i, seg in zip(indices.tolist(), segments):
            sites[i] = seg.site
            sync.append(seg.sync_count)
        self.sync[indices] = sync
        for i in (codes == FINISHED).nonzero()[0].tolist():
            self.values[indices[i]] = segments[i].value
        counted = codes != LOST
        if not counted.all():
            indices, new = indices[counted], new[counted]
        step = new - self.eff[indices]  # the eff of a particle that moved is finite (else it was killed)
        step[new == -math.inf] = -math.inf  # killed: W = −inf
        inc[indices] = step
        self.log_w[indices] += step
        self.eff[indices] = new
        return inc

    def resample(self, ancestors: np.ndarray) -> np.ndarray:
        """Replace the population by copies of `ancestors` (indices), each with a new id; weights reset
        to the active particles' mean weight logmeanexp(W), so Ẑ stays unbiased. The first offspring
        of each parent may continue the parent's execution; the others are rebuilt by replay.
        Returns the new ids."""
        mean = self.log_evidence()
        a = np.asarray(ancestors, dtype=np.int64)
        self.parents = self.ids[a]
        for name in ("leaf", "eff", "status", "sync"):
            setattr(self, name, getattr(self, name)[a])
        self.values = [self.values[j] for j in a]
        self.sites = [self.sites[j] for j in a]
        first = np.zeros(len(a), dtype=bool)
        _, first_index = np.unique(a, return_index=True)
        first[first_index] = True
        self.resume = np.where(first, self.parents, -1)
        self.source = self.parents.copy()
        self.n = len(a)
        self.ids = np.arange(self.next_id, self.next_id + self.n, dtype=np.int64)
        self.next_id += self.n
        self.log_w = np.full(self.n, mean)
        return self.ids

    def continue_own(self) -> None:
        """After a step without resampling every particle continues its own execution."""
        self.resume = self.ids.copy()
        self.source = self.ids.copy()


class Genealogy:
    """Ancestry of an SMC run: one int64 ancestor array per step.

    Step t weights a population P_t (indices 0..len-1), then maybe resamples it into P_t'.
    ``ancestors_at(t)[j]`` is the index in P_t of the parent of particle j of P_t' (the convention
    of `StepRecord.ancestors`). Steps without resampling store the identity, so P_t' = P_t. The
    next step weights the same particles: P_{t+1} = P_t' index for index.
    """

    def __init__(self, num_particles: int) -> None:
        if num_particles < 0:
            raise ValueError(f"num_particles must be >= 0, got {num_particles}")
        self.num_particles = int(num_particles)
        self._steps: list[np.ndarray] = []
        self._identity: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def size(self) -> int:
        """Number of particles in the current (latest post-resampling) population."""
        return self._steps[-1].size if self._steps else self.num_particles

    def record(self, ancestors: Iterable[int] | np.ndarray | None = None, copy: bool = True) -> None:
        """Append one step: the resampling's ancestor indices, or None for a step without one.
        `copy=False` keeps an int64 array itself (made read-only) instead of a copy: for a caller
        that hands it over and only reads it from then on."""
        parents = self.size
        if ancestors is None:  # one shared read-only identity per size: memory O(N), not O(N·T)
            identity = self._identity
            if identity is None or identity.size != parents:
                identity = self._identity = np.arange(parents, dtype=np.int64)
                identity.setflags(write=False)
            self._steps.append(identity)
            return
        arr = np.asarray(ancestors)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"ancestors must be a 1-D integer array, got {arr.dtype} shape {arr.shape}")
        arr = arr.astype(np.int64, copy=copy)
        if arr.size and (arr.min() < 0 or arr.max() >= parents):
            raise ValueError(
                f"step {len(self._steps)}: ancestor indices must be in [0, {parents}), "
                f"got range [{arr.min()}, {arr.max()}]"
            )
        arr.setflags(write=False)
        self._steps.append(arr)

    def ancestors_at(self, step: int) -> np.ndarray:
        """The (read-only) ancestor array of ``step``; negative steps count from the end."""
        return self._steps[step]

    def lineage(self, final_index: int) -> list[int]:
        """Indices of the ancestors of particle ``final_index`` of the final population.

        Element t is the index, in the population weighted at step t, of that particle's ancestor;
        element 0 is its root among the initial particles. Length = number of steps.
        """
        if not 0 <= final_index < self.size:
            raise IndexError(f"final_index {final_index} out of range for population of {self.size}")
        out = []
        idx = int(final_index)
        for anc in reversed(self._steps):
            idx = int(anc[idx])
            out.append(idx)
        return out[::-1]

    def unique_ancestors(self, step_from: int = 0, step_to: int = -1) -> int:
        """How many distinct particles of the population weighted at ``step_from`` have descendants
        in the population after ``step_to`` (post-resampling). Genealogy collapse diagnostic:
        it falls towards 1 as resampling coalesces the lineages."""
        n = len(self._steps)
        lo = step_from + n if step_from < 0 else step_from
        hi = step_to + n if step_to < 0 else step_to
        if not 0 <= lo <= hi < n:
            raise IndexError(f"need 0 <= step_from <= step_to < {n}, got {step_from}, {step_to}")
        idx = np.arange(self._steps[hi].size, dtype=np.int64)
        for t in range(hi, lo - 1, -1):
            idx = self._steps[t][idx]
        return count_distinct(idx)

    def rows(self) -> AncestorRows:
        """The steps so far as `Result.diagnostics.genealogy` holds them: the arrays themselves
        (read-only), read as lists only row by row."""
        return AncestorRows(self._steps)

    def to_lists(self, start: int = 0) -> list[list[int]]:
        """Plain lists (JSON-ready): element t is ``ancestors_at(start + t)`` (`start`: only the steps
        from there on, e.g. those a checkpoint has not written yet)."""
        out: list[list[int]] = []
        identity: list[int] | None = None  # the steps without resampling share one identity list
        for a in self._steps[start:]:
            if a is self._identity:
                if identity is None:
                    identity = a.tolist()
                out.append(identity)
            else:
                out.append(a.tolist())
        return out

    @classmethod
    def from_lists(cls, num_particles: int, steps: Iterable[Iterable[int]]) -> "Genealogy":
        """Inverse of `to_lists` (re-validates every step)."""
        g = cls(num_particles)
        for anc in steps:
            g.record(np.asarray(list(anc), dtype=np.int64))
        return g
