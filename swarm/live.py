"""The executions a runtime worker keeps alive between steps (live continuation, docs/theory.md §3.1).

`LiveExecutions.advance(epoch, tasks)` runs one step's tasks for one `SegmentRunner`: a task whose
`continue_from` names an execution kept from the previous step, standing at the sync point before
`stop_at`, continues it (a step costs only its new statements); any other task gets a fresh execution
that replays its prefix. Executions suspended at this step are kept under the task's stream; those of
the previous step that no task claimed (particles that left no offspring) are closed when the next
step begins. A step may arrive in several chunks (Ray): everything with the same `epoch` is one step.
"""

from __future__ import annotations

import asyncio
from typing import Any

from swarm.execution import Execution, Segment, SegmentRunner, SegmentTask


class LiveExecutions:
    def __init__(self, runner: SegmentRunner, max_concurrency: int | None = None) -> None:
        self.runner = runner
        self.max_concurrency = max_concurrency
        self.epoch: Any = None
        self.previous: dict[Any, Execution] = {}
        self.current: dict[Any, Execution] = {}
        self.tasks = 0
        self.continued = 0
        """Tasks that continued a kept execution (the rest replayed or started fresh)."""

    def __len__(self) -> int:
        return len(self.previous) + len(self.current)

    def _begin(self, epoch: Any) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            stale, self.previous, self.current = self.previous, self.current, {}
            for execution in stale.values():
                execution.close()

    def _claim(self, task: SegmentTask) -> tuple[Execution, bool]:
        kept = self.previous.pop(task.continue_from, None) if task.continue_from is not None else None
        if kept is not None:
            if task.stop_at is not None and kept.stands_at(task.stop_at - 1):
                return kept, True
            kept.close()
        return self.runner.execution(task), False

    def _keep(self, task: SegmentTask, execution: Execution, seg: Segment, continued: bool) -> Segment:
        seg.continued = continued
        if task.prefix is not None and not task.lazy_prefix:
            seg.prefix = task.prefix  # the caller holds the particle's past: `seg.trace` is its whole trace
        if seg.status == "running" and execution.stands_at(seg.sync_count):
            self.current[task.stream] = execution
        elif seg.status == "running":
            execution.close()
        return seg

    async def advance(self, epoch: Any, tasks: list[SegmentTask]) -> list[Segment]:
        """Run one step's tasks; segments in task order."""
        self._begin(epoch)
        self.tasks += len(tasks)
        if not self.runner.is_async:
            return self.advance_sync(epoch, tasks)
        claimed = [self._claim(task) for task in tasks]
        self.continued += sum(1 for _, c in claimed if c)
        gate = asyncio.Semaphore(self.max_concurrency) if self.max_concurrency else None

        async def one(task: SegmentTask, execution: Execution, continued: bool) -> Segment:
            if gate is None:
                seg = await execution.advance(task.stream, task.stop_at)
            else:
                async with gate:
                    seg = await execution.advance(task.stream, task.stop_at)
            return self._keep(task, execution, seg, continued)

        return list(await asyncio.gather(*(one(t, e, c) for t, (e, c) in zip(tasks, claimed))))

    def advance_sync(self, epoch: Any, tasks: list[SegmentTask]) -> list[Segment]:
        """`advance` for a plain program: one execution after another, no event loop needed."""
        self._begin(epoch)
        out = []
        keep = self._keep
        for task in tasks:
            execution, continued = self._claim(task)
            self.continued += continued
            out.append(keep(task, execution, execution.advance_sync(task.stream, task.stop_at), continued))
        return out

    def close(self) -> None:
        """Close every kept execution."""
        for execution in [*self.previous.values(), *self.current.values()]:
            execution.close()
        self.previous, self.current = {}, {}
