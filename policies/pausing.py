"""Runs that pause for a person and resume with the answers (docs/human_in_the_loop.md).

    r = policies.SMC(num_particles=200, seed=0).run(program)            # status "waiting"
    r.pending                                                           # [Question(name="review", ...)]
    r = policies.SMC(num_particles=200).resume(r.checkpoint, answers={"review": "yes"})

A policy that can pause (`SMC`; `Forward`, `Importance` and `BestOfN` through
`policies.pausable_draws`: the `Pausable` mixin and an `answers` field) tells its
executions so and hands them its answers through the run scope (`allow_pausing`). When some wait
for an answer it writes the run to its checkpoint directory (or a new temporary one) and returns a
`Result` with `status="waiting"`, the `pending` questions and that `checkpoint` directory.
`resume(directory, answers=...)` reads it back in any process: the answers are checked against the
pending questions' schemas before anything runs, the answers the run already had are kept, and the
program and its arguments are the recorded ones unless given. The resumed result equals the result of
one uninterrupted run given all the answers up front (`SMC(..., answers={...}).run(program)`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from policies.checkpointing import RunCheckpoints
from swarm.checkpoint import CheckpointError, Checkpointer, PopulationCheckpoint, RunHeader
from swarm.effects import run_scope
from swarm.human import ANSWERS_KEY, PAUSABLE_KEY, InvalidAnswerError, Question, checked_answers, encode_answers
from swarm.pause import PausedStep
from swarm.result import Particle

__all__ = ["Pausable", "allow_pausing", "install_answers", "pending_questions", "recorded_program", "mark_waiting",
           "cannot_wait"]


def install_answers(answers: dict[str, Any]) -> None:
    """Give this run's executions the answers (a JSON string in the run scope: plain values travel
    to Ray workers); a value that is not JSON is refused here, naming its question."""
    if answers and ANSWERS_KEY not in run_scope():
        run_scope()[ANSWERS_KEY] = encode_answers(answers)


def allow_pausing(checkpoints: RunCheckpoints, answers: dict[str, Any]) -> None:
    """`install_answers`, and tell this run's executions that a missing answer pauses the run (the
    policy then returns a waiting `Result`); the answers go into every checkpoint frame."""
    install_answers(answers)
    run_scope()[PAUSABLE_KEY] = True
    checkpoints.answers = dict(answers)


def cannot_wait(result: Any, policy: Any) -> str:
    """Why a run that paused for a person cannot be an answer where nobody can give one (a served
    chat request, an MCP tool call): its questions, and how to answer them up front. The temporary
    directory the pause wrote is removed (a policy's own `checkpoint` directory is kept)."""
    if getattr(policy, "checkpoint", None) is None and result.checkpoint:
        shutil.rmtree(result.checkpoint, ignore_errors=True)
    listing = "; ".join(f"{q.label()}: {q.question!r}" for q in result.pending)
    example = result.pending[0].name if result.pending else "NAME"
    return (f"the run waits for a person: {listing}; a served program cannot pause, give the answers up "
            f"front in the module's POLICY, e.g. POLICY = {type(policy).__name__}(..., answers={{{example!r}: ...}})")


def mark_waiting(particles: list[Particle], pending: list[Question]) -> list[Particle]:
    """The particles of a waiting result, those waiting for an answer marked "waiting"."""
    waiting = {pid for q in pending for pid in q.particles}
    for particle in particles:
        if particle.id in waiting:
            particle.status = "waiting"
    return particles


def _paused_of(state: PopulationCheckpoint) -> tuple[PausedStep | None, Callable[[int], int]]:
    last = state.last
    if last is None or last.paused is None:
        return None, int
    ids = last.population.get("ids")
    return PausedStep.from_state(last.paused), (int if ids is None else (lambda i: int(ids[i])))


def pending_questions(directory: str | os.PathLike[str]) -> list[Question]:
    """The questions the run checkpointed in `directory` waits on (empty: it does not wait)."""
    paused, particle_id = _paused_of(Checkpointer(directory).load())
    return [] if paused is None else paused.pending(particle_id)


# -- finding the program again ------------------------------------------------------------------
def _module_of(header: RunHeader) -> Any:
    """The program's module: imported by name when that is the recorded file, else loaded from it."""
    file = header.program_file
    name = header.program_module

    def same_file(module: Any) -> bool:
        return file is not None and os.path.realpath(getattr(module, "__file__", "") or "") == os.path.realpath(file)

    loaded = sys.modules.get(name or "")
    if loaded is not None and (same_file(loaded) or file is None):  # e.g. the running script (__main__)
        return loaded
    if name and name != "__main__":
        try:
            module = importlib.import_module(name)
        except ImportError:
            module = None
        if module is not None and (same_file(module) or file is None):
            return module
    if file is None or not Path(file).is_file():
        return None
    alias = f"_swarm_resumed_{Path(file).stem}"
    if alias in sys.modules:
        return sys.modules[alias]
    spec = importlib.util.spec_from_file_location(alias, file)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


def recorded_program(state: PopulationCheckpoint, where: Path) -> tuple[Callable[..., Any], tuple, dict]:
    """The program a checkpointed run ran, and its arguments, as recorded in the log's header."""
    header = state.header
    hint = "give them: policy.resume(directory, program, *args, **kwargs) or swarm resume DIR --program FILE.py:NAME"
    if "<locals>" in header.program:
        raise CheckpointError(where, f"the program {header.program!r} is defined inside a function and cannot be "
                                     f"found again; {hint}")
    module = _module_of(header)
    program: Any = module
    for part in header.program.split("."):
        program = getattr(program, part, None)
    if module is None or not callable(program):
        raise CheckpointError(where, f"cannot find the program {header.program!r} (module {header.program_module!r}, "
                                     f"file {header.program_file!r}); {hint}")
    if header.arguments is None:
        raise CheckpointError(where, f"the arguments of {header.program!r} were not recorded (they do not pickle); {hint}")
    args, kwargs = header.arguments
    return program, tuple(args), dict(kwargs)


def _resume_answers(state: PopulationCheckpoint, mine: dict[str, Any], given: dict[str, Any] | None,
                    where: Path) -> dict[str, Any]:
    """The answers of the resumed run: the recorded ones, the policy's, then the given ones; checked
    against the pending questions (a bad one is refused naming its question, before anything runs)."""
    last = state.last
    recorded = last.answers if last is not None else {}
    _unchanged(recorded, {**mine, **(given or {})}, where)
    answers = {**recorded, **mine, **(given or {})}
    paused, particle_id = _paused_of(state)
    if paused is None:
        return checked_answers(answers, [])
    pending = paused.pending(particle_id)
    checked_answers(answers, pending)
    if not any(q.id in answers or q.name in answers for q in pending):
        listing = "; ".join(f"{q.label()}: {q.question!r}" for q in pending)
        raise InvalidAnswerError(f"{where}: the run waits for an answer to {listing}; none of them is answered "
                                 "(answers={name or id: answer})")
    return answers


def _unchanged(recorded: dict[str, Any], given: dict[str, Any], where: Path) -> None:
    """Refuse an answer that differs from the one the run already recorded for the same question:
    the steps after it were run with the recorded one (replay reads it from the trace), so the new
    one could change nothing but would read as if it had (a finished run resumed with another answer
    returned its old result, silently)."""
    for key, value in given.items():
        if key in recorded and recorded[key] != value:
            raise InvalidAnswerError(f"{where}: {key!r} was answered {recorded[key]!r} in this run, which went on "
                                     f"with that answer; it cannot become {value!r} on resume (start a new run "
                                     f"with answers={{{key!r}: {value!r}}})")


class Pausable:
    """`resume` for the policies that can pause for a person (they have `checkpoint` and `answers`
    fields and call `allow_pausing` in their `_run`)."""

    def resume(self, directory: str | os.PathLike[str], program: Callable[..., Any] | None = None, *args: Any,
               answers: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Continue the run checkpointed in `directory` (a crashed run, or one waiting for a person:
        then with `answers`, {question name or id: answer}). The program and its arguments are the
        recorded ones unless given; the settings must match; the seed is the checkpoint's."""
        return self._sync(self.resume_async(directory, program, *args, answers=answers, **kwargs), "resume")  # type: ignore[attr-defined]

    async def resume_async(self, directory: str | os.PathLike[str], program: Callable[..., Any] | None = None,
                           *args: Any, answers: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        where = Path(directory)
        if not self._resumable():
            raise CheckpointError(where, f"{type(self).__name__} overrides _run and does not support resume")
        state = RunCheckpoints.load(self, directory, program)
        if program is None:
            program, args, kwargs = recorded_program(state, where / "population.ckpt")
        merged = _resume_answers(state, dict(getattr(self, "answers", {}) or {}), answers, where)
        policy = self.model_copy(update={"checkpoint": where, "seed": state.seed, "answers": merged})  # type: ignore[attr-defined]
        policy._resume_state = state
        return await policy.run_async(program, *args, **kwargs)

    def _resumable(self) -> bool:
        return True
