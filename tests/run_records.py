"""`RunRecords`: a listener that keeps a run's raw records, the reference that span tests check
spans against (genealogy and final weights computed from the records, never from a span)."""

from __future__ import annotations

import math

import numpy as np

from swarm.listeners import RunListener


class RunRecords(RunListener):
    """The StepRecords and the RunFinished of one run."""

    def __init__(self) -> None:
        self.steps, self.end = [], None

    def on_step(self, record) -> None:
        self.steps.append(record)

    def on_run_end(self, record) -> None:
        self.end = record

    def parents(self) -> dict[int, int]:
        """{offspring id: parent id} from every resampling (particle_ids, ancestors, offspring_ids)."""
        return {child: step.particle_ids[a] for step in self.steps if step.resampled
                for child, a in zip(step.offspring_ids, step.ancestors)}

    def lineage(self, pid: int) -> list[int]:
        """The ids from `pid`'s first ancestor down to `pid`."""
        parent, chain = self.parents(), [pid]
        while chain[-1] in parent:
            chain.append(parent[chain[-1]])
        return chain[::-1]

    def final_weights(self) -> dict[int, float]:
        """{final particle id: normalised final weight}."""
        w = np.exp(np.array(self.end.log_weights) - max(self.end.log_weights))
        return dict(zip(self.end.particle_ids, (w / w.sum()).tolist()))

    def surviving_lineages(self) -> set[int]:
        """Ids of the final particles with a non-zero weight and of all their ancestors."""
        return {a for pid, lw in zip(self.end.particle_ids, self.end.log_weights) if lw > -math.inf
                for a in self.lineage(pid)}
