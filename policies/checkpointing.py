"""Checkpointing an SMC run: what a step adds goes into the run's log, and a killed run resumes
from it (the log format and its guarantees are in `swarm.checkpoint`). A run that waits for a
person (`swarm.human`) is written there too, its paused step included (`swarm.pause`)."""

from __future__ import annotations

import inspect
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swarm.checkpoint import (
    CHECKPOINT_DIR_KEY, RUN_ID_KEY, Checkpointer, CheckpointError, PopulationCheckpoint, RunHeader, StepFrame,
    hold_directory,
)
from swarm.coordinator import Coordinator
from swarm.effects import run_scope
from swarm.execution import SegmentRunner
from swarm.pause import PausedStep
from swarm.population import Genealogy, Population

_NOT_RESULT_SETTINGS = {"runtime", "listeners", "budget", "seed", "checkpoint", "checkpoint_every", "max_lost_fraction",
                        "answers"}
"""Policy fields that do not change a seeded result (everything else must match to resume)."""
_ARRAYS = ("ids", "parents", "leaf", "log_w", "eff", "status", "sync", "resume", "source")


def result_settings(policy: Any) -> dict[str, Any]:
    return {k: v for k, v in policy.describe().items() if k not in _NOT_RESULT_SETTINGS}


def run_header(policy: Any, ctx: Any) -> RunHeader:
    """The log's first frame: the policy, its result settings, the program (and where it lives, and
    its arguments when they pickle, so that a paused run resumes without naming them), the seed."""
    program = ctx.program
    module = getattr(program, "__module__", None)
    try:
        file = inspect.getsourcefile(program)
    except TypeError:
        file = None
    try:
        pickle.dumps((ctx.args, ctx.kwargs))
        arguments = (tuple(ctx.args), dict(ctx.kwargs))
    except Exception:  # noqa: BLE001 - e.g. a lock among them: resuming then needs them given again
        arguments = None
    return RunHeader(policy=type(policy).__name__, config=result_settings(policy), program=SegmentRunner(program).name,
                     seed=ctx.seed, run_id=ctx.run_id, program_module=module, program_file=file, arguments=arguments)


class RunCheckpoints:
    """The checkpoints of one run (a no-op when the policy has no `checkpoint` directory, until the
    run pauses for a person: then it writes into a new temporary directory)."""

    def __init__(self, checkpointer: Checkpointer | None, state: PopulationCheckpoint | None) -> None:
        self.checkpointer = checkpointer
        self.state = state
        self.tree_mark = 0
        self.genealogy_mark = 0
        self.steps_mark = 0
        """How many of the run's step records (`Diagnostics.steps`) earlier frames hold."""
        self.answers: dict[str, Any] = {}
        """The answers the run has (`swarm.human`), written into every frame."""

    @classmethod
    def open(cls, policy: Any, ctx: Any, state: PopulationCheckpoint | None, *, eager: bool = True) -> "RunCheckpoints":
        """Open the run's checkpoint directory (fresh, or the one being resumed) and name it in the
        run scope, so every execution of the run (in any process) journals its LLM responses there.
        `eager=False`: write nothing until the run pauses (Forward)."""
        directory = policy.checkpoint
        if state is not None:
            ctx.run_id = state.header.run_id
        if directory is None or (not eager and state is None):
            return cls(None, state)
        checkpoints = cls(None, state)
        checkpoints._use(Checkpointer(directory, every=getattr(policy, "checkpoint_every", 1)), policy, ctx)
        return checkpoints

    def _use(self, checkpointer: Checkpointer, policy: Any, ctx: Any) -> None:
        ctx.cleanups.append(hold_directory(checkpointer.directory))  # this run's alone until it ends
        if self.state is None:
            checkpointer.start_fresh(run_header(policy, ctx))
        self.checkpointer = checkpointer
        scope = run_scope()
        scope[CHECKPOINT_DIR_KEY] = str(checkpointer.directory)
        scope[RUN_ID_KEY] = ctx.run_id

    def directory_for_pause(self, policy: Any, ctx: Any) -> Path:
        """The directory a paused run is written to: the policy's `checkpoint`, else a new
        temporary one (named in the waiting `Result`)."""
        if self.checkpointer is None:
            directory = policy.checkpoint or Path(tempfile.mkdtemp(prefix="plp-swarm-paused-"))
            self._use(Checkpointer(directory), policy, ctx)
        assert self.checkpointer is not None
        return self.checkpointer.directory

    # -- writing --------------------------------------------------------------------------------
    def save(self, ctx: Any, swarm: Coordinator, final: bool = False) -> None:
        """Append the step's frame when one is due (always for the step the run stops at)."""
        if self.checkpointer is None or not self.checkpointer.due(swarm.step, final=final):
            return
        pop = swarm.population
        population = {name: getattr(pop, name).copy() for name in _ARRAYS}
        population.update(values=list(pop.values), sites=list(pop.sites), next_id=pop.next_id, n=pop.n)
        self._append(ctx, swarm.step, swarm.tree, population, swarm.genealogy.to_lists(self.genealogy_mark),
                     swarm.paused.to_state() if swarm.paused is not None else None)

    def save_paused(self, policy: Any, ctx: Any, paused: PausedStep, swarm: Coordinator | None = None) -> Path:
        """Write the frame of a run that waits for a person (its population before the paused step,
        with `swarm`; Forward has none) and return the directory it is in."""
        directory = self.directory_for_pause(policy, ctx)
        if swarm is not None:
            self.save(ctx, swarm, final=True)
        else:
            self._append(ctx, paused.step, ctx.tree, {}, [], paused.to_state())
        return directory

    def _append(self, ctx: Any, step: int, tree: Any, population: dict[str, Any], new_rows: list[list[int]],
                paused: dict[str, Any] | None) -> None:
        """Write a frame of what the run added since the last one: the tree's new nodes, the
        genealogy rows `new_rows` and the step records (each frame's share only: writing every row
        and record at every frame made a long run's checkpoints quadratic). The diagnostics are a
        shallow copy: `Checkpointer.save` pickles the frame before returning."""
        assert self.checkpointer is not None
        diagnostics = ctx.diagnostics
        frame = StepFrame(step=step, tree=tree.since(self.tree_mark), population=population, genealogy=new_rows,
                          diagnostics=diagnostics.model_copy(update={"steps": diagnostics.steps[self.steps_mark:]}),
                          steps_from=self.steps_mark, elapsed_s=time.perf_counter() - ctx.started,
                          answers=dict(self.answers), paused=paused)
        self.checkpointer.save(frame)
        self.tree_mark = len(tree)
        self.genealogy_mark += len(new_rows)
        self.steps_mark = len(diagnostics.steps)

    # -- resuming -------------------------------------------------------------------------------
    @staticmethod
    def load(policy: Any, directory: str | os.PathLike[str], program: Callable[..., Any] | None) -> PopulationCheckpoint:
        """Read the log in `directory`; refuse it if this policy and program (None: the recorded one)
        would not continue it exactly."""
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
        name = header.program if program is None else SegmentRunner(program).name
        if name != header.program:
            raise CheckpointError(where, f"program: the checkpoint's run ran {header.program!r}, not {name!r}")
        return state

    def restore(self, ctx: Any, swarm: Coordinator) -> None:
        """Rebuild the global trace, the population, the genealogy, the diagnostics and the clock of
        the last checkpointed step, and the step paused for a person if the run stopped at one. No
        execution survives a crash: running particles are replayed."""
        assert self.state is not None
        for frame in self.state.frames:
            swarm.tree.apply(frame.tree)
        last = self.state.last
        rows = [row for frame in self.state.frames for row in frame.genealogy]
        if last is None:
            return
        if last.paused is not None:
            swarm.paused = PausedStep.from_state(last.paused)
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
        self.steps_mark = len(ctx.diagnostics.steps)
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
