"""A step that waits for a person: the segments it has produced, until every one is complete.

When some executions of a step stop at a question nobody has answered (`swarm.human`), the step
cannot be weighed: its sync point is where every moving particle has reached its next weighting
statement (docs/theory.md §3.1). `PausedStep` keeps what the step produced, as it was produced: the
complete segments of the particles that reached the sync point (or finished, died, were lost) and
the partial segments of those waiting, which end with their question. It is all the state a paused
run needs beyond the last checkpoint, so it goes into the checkpoint (`to_state`) and a new process
continues from it (`from_state`): only the waiting executions run again, rebuilt by replaying their
recorded past plus their partial segment with the answer now supplied, and each new segment is
joined to the partial one (`merge`). Once none waits, the step's segments are exactly those an
uninterrupted run would have produced (draws are addressed by seed, stream and site), and the step
is weighed and resampled as usual.

Identical questions from several particles are one pending question (`pending`: by question id).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from swarm.execution import Segment, SegmentTask
from swarm.human import Question, unanswered

__all__ = ["PausedStep", "joined"]


def joined(first: Segment, then: Segment) -> Segment:
    """One segment from a partial one and the segment that continued it after the answer: the events
    of both, the first one's start, the costs of both (the replayed part of `then` cost nothing)."""
    return dataclasses.replace(then, events=[*first.events, *then.events], started_ns=first.started_ns,
                               tokens=first.tokens + then.tokens, llm_calls=first.llm_calls + then.llm_calls,
                               prefix=None, continued=False, _trace=None)


@dataclass
class PausedStep:
    """See the module docstring. `moved[j]` is who produced `segments[j]` (a population index for
    SMC, a stream for Forward)."""

    step: int
    moved: list[int]
    segments: list[Segment]

    def waiting(self) -> list[int]:
        """Positions (into `segments`) of the executions waiting for an answer."""
        return [j for j, seg in enumerate(self.segments) if seg.status == "waiting"]

    def __bool__(self) -> bool:
        return any(seg.status == "waiting" for seg in self.segments)

    def resume_tasks(self, stream: Callable[[int], int], past: Callable[[int], list[Any]],
                     stop_at: int | None) -> list[SegmentTask]:
        """Tasks that rebuild each waiting execution by replay: its recorded past (`past(moved[j])`)
        and its partial segment, then on to `stop_at` with whatever answers the run now has."""
        tasks = []
        for j in self.waiting():
            own = stream(self.moved[j])
            tasks.append(SegmentTask(own, [*past(self.moved[j]), *self.segments[j].events], stop_at, source=own))
        return tasks

    def merge(self, continued: Sequence[Segment]) -> None:
        """Join each waiting segment to the segment that continued it (in `waiting()` order)."""
        positions = self.waiting()
        if len(positions) != len(continued):
            raise ValueError(f"{len(continued)} segments for {len(positions)} waiting executions")
        for j, seg in zip(positions, continued):
            self.segments[j] = joined(self.segments[j], seg)

    def pending(self, particle_id: Callable[[int], int]) -> list[Question]:
        """The questions the waiting executions stopped at, each once, with the ids of the particles
        waiting for it (in the order they were first asked)."""
        found: dict[str, tuple[Question, list[int]]] = {}
        for j in self.waiting():
            questions = unanswered(self.segments[j].events)
            if not questions:  # pragma: no cover - an execution only waits right after asking
                raise RuntimeError(f"execution {self.moved[j]} waits but recorded no question")
            for question in questions:
                ids = found.setdefault(question.id, (question, []))[1]
                pid = int(particle_id(self.moved[j]))
                if not ids or ids[-1] != pid:
                    ids.append(pid)
        return [q.model_copy(update={"particles": ids}) for q, ids in found.values()]

    def tokens(self) -> tuple[int, int]:
        """Tokens and LLM calls the step's segments have spent so far."""
        return sum(s.tokens for s in self.segments), sum(s.llm_calls for s in self.segments)

    # -- into and out of a checkpoint ---------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Plain data for a checkpoint frame (segments without the pasts they were given)."""
        return {"step": self.step, "moved": [int(i) for i in self.moved],
                "segments": [dataclasses.replace(s, prefix=None, _trace=None) for s in self.segments]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "PausedStep":
        return cls(step=state["step"], moved=list(state["moved"]), segments=list(state["segments"]))
