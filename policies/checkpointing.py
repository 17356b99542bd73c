"""Checkpointing an SMC run: what a step adds goes into the run's log, and a killed run resumes
from it (the log format and its guarantees are in `swarm.checkpoint`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swarm.checkpoint import (
    CHECKPOINT_DIR_KEY, RUN_ID_KEY, Checkpointer, CheckpointError, PopulationCheckpoint, RunHeader, StepFrame,
)
from swarm.coordinator import Coordinator
from swarm.effects import run_scope
from swarm.execution import SegmentRunner
from swarm.population import Genealogy, Population

_NOT_RESULT_SETTINGS = {"runtime", "listeners", "budget", "seed", "checkpoint", "checkpoint_every", "max_lost_fraction"}
"""Policy fields that do not change a seeded result (everything else must match to resume)."""
_ARRAYS = ("ids", "parents", "leaf", "log_w", "eff", "status", "sync", "resume", "source")


def result_settings(policy: Any) -> dict[str, Any]:
    return {k: v for k, v in policy.describe().items() if k not in _NOT_RESULT_SETTINGS}


class RunCheckpoints:
    """The checkpoints of one SMC run (a no-op when the policy has no `checkpoint` directory)."""

    def __init__(self, checkpointer: Checkpointer | None, state: PopulationCheckpoint | None) -> None:
        self.checkpointer = checkpointer
        self.state = state
        self.tree_mark = 0
        self.genealogy_mark = 0

    @classmethod
    def open(cls, policy: Any, ctx: Any, state: PopulationCheckpoint | None) -> "RunCheckpoints":
        """Open the run's checkpoint directory (fresh, or the one being resumed) and name it in the
        run scope, so every execution of the run (in any process) journals its LLM responses there."""
        if policy.checkpoint is None:
            return cls(None, state)
        checkpointer = Checkpointer(policy.checkpoint, every=policy.checkpoint_every)
        if state is None:
            checkpointer.start_fresh(RunHeader(policy=type(policy).__name__, config=result_settings(policy),
                                               program=SegmentRunner(ctx.program).name, seed=ctx.seed,
                                               run_id=ctx.run_id))
        else:
            ctx.run_id = state.header.run_id
        scope = run_scope()
        scope[CHECKPOINT_DIR_KEY] = str(checkpointer.directory)
        scope[RUN_ID_KEY] = ctx.run_id
        return cls(checkpointer, state)

    # -- writing --------------------------------------------------------------------------------
    def save(self, ctx: Any, swarm: Coordinator, final: bool = False) -> None:
        """Append the step's frame when one is due (always for the step the run stops at)."""
        if self.checkpointer is None or not self.checkpointer.due(swarm.step, final=final):
            return
        pop = swarm.population
        population = {name: getattr(pop, name).copy() for name in _ARRAYS}
        population.update(values=list(pop.values), sites=list(pop.sites), next_id=pop.next_id, n=pop.n)
        rows = swarm.genealogy.to_lists()
        frame = StepFrame(step=swarm.step, tree=swarm.tree.since(self.tree_mark), population=population,
                          genealogy=rows[self.genealogy_mark:], diagnostics=ctx.diagnostics.model_copy(deep=True),
                          elapsed_s=time.perf_counter() - ctx.started)
        self.checkpointer.save(frame)
        self.tree_mark, self.genealogy_mark = len(swarm.tree), len(rows)

    # -- resuming -------------------------------------------------------------------------------
    @staticmethod
    def load(policy: Any, directory: str | os.PathLike[str], program: Callable[..., Any]) -> PopulationCheckpoint:
        """Read the log in `directory`; refuse it if this policy and program would not continue it exactly."""
        checkpointer = Checkpointer(directory)
        state = checkpointer.load()
        where = checkpointer.population_path
        header = state.header
        if header.policy != type(policy).__name__:
            raise CheckpointError(where, f"written by {header.policy}, cannot be resumed by {type(policy).__name__}")
        if policy.seed is not None and policy.seed != header.seed:
            raise CheckpointError(where, f"seed: the checkpoint's run used seed {header.seed}, this policy has {policy.seed}")
        mine = result_settings(policy)
        for key in sorted(set(mine) | set(header.config)):
            if mine.get(key) != header.config.get(key):
                raise CheckpointError(where, f"{key}: the checkpoint's run used {header.config.get(key)!r}, this "
                                             f"policy has {mine.get(key)!r}; resume with the same settings")
        name = SegmentRunner(program).name
        if name != header.program:
            raise CheckpointError(where, f"program: the checkpoint's run ran {header.program!r}, not {name!r}")
        return state

    def restore(self, ctx: Any, swarm: Coordinator) -> None:
        """Rebuild the global trace, the population, the genealogy, the diagnostics and the clock of
        the last checkpointed step. No execution survives a crash: running particles are replayed."""
        assert self.state is not None
        for frame in self.state.frames:
            swarm.tree.apply(frame.tree)
        last = self.state.last
        rows = [row for frame in self.state.frames for row in frame.genealogy]
        if last is None:
            return
        saved = last.population
        pop = Population(saved["n"])
        for name in _ARRAYS:
            setattr(pop, name, np.array(saved[name]))
        pop.values, pop.sites, pop.next_id = list(saved["values"]), list(saved["sites"]), saved["next_id"]
        swarm.population = pop
        swarm.genealogy = Genealogy.from_lists(len(rows[0]) if rows else pop.n, rows)
        swarm.step = last.step
        self.tree_mark, self.genealogy_mark = len(swarm.tree), len(rows)
        ctx.diagnostics = swarm.diagnostics = last.diagnostics.model_copy(deep=True)
        ctx.started -= last.elapsed_s

    @staticmethod
    def still_out_of_budget(ctx: Any) -> bool:
        """True when the resumed run had stopped on its budget and this policy's budget is still
        exceeded (the resumed result is then the stopped one)."""
        if ctx.diagnostics.stopped_by is None:
            return False
        ctx.diagnostics.stopped_by = None
        return ctx.out_of_budget() is not None


__all__ = ["RunCheckpoints", "result_settings", "Path"]
