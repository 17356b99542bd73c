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


class _Step:
    """One `advance` call's segments, delivered by the executions' host tasks as they finish."""

    __slots__ = ("segments", "left", "done", "gate")

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int, max_concurrency: int | None) -> None:
        self.segments: list[Any] = [None] * n
        self.left = n
        self.done = loop.create_future()
        self.gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    def deliver(self, index: int, segment: Segment) -> None:
        self.segments[index] = segment
        self.left -= 1
        if not self.left and not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class LiveExecutions:
    """The live executions of one runner (see the module docstring).

    An `async def` program's execution runs in one asyncio task of its own for its whole life (its
    *host*): each step hands the host the execution's next segment, so a step costs one wake-up of a
    waiting task per particle rather than a new task, and the program always sees the same task as
    `asyncio.current_task()` (timeouts and task groups inside it work as in any task)."""

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
                _retire(execution)

    def _claim(self, task: SegmentTask) -> tuple[Execution, bool]:
        kept = self.previous.pop(task.continue_from, None) if task.continue_from is not None else None
        if kept is not None:
            if task.stop_at is not None and kept.stands_at(task.stop_at - 1):
                return kept, True
            _retire(kept)
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
        if not tasks:
            return []
        claim = self._claim
        claimed = [claim(task) for task in tasks]
        self.continued += sum(c for _, c in claimed)
        loop = asyncio.get_running_loop()
        step = _Step(loop, len(tasks), self.max_concurrency)
        host = self._host
        for index, (task, (execution, continued)) in enumerate(zip(tasks, claimed)):
            command = (step, index, task, continued)
            if execution.go is None:  # a new execution: its host starts with this command
                execution.go = loop.create_future()
                execution.go.set_result(command)
                execution.host = loop.create_task(host(execution))
            else:
                execution.go.set_result(command)
        try:
            await step.done
        except BaseException:
            hosts = [execution.host for execution, _ in claimed if execution.host is not None and not execution.host.done()]
            for host_task in hosts:  # unwind the segments still running, and wait for them to end
                host_task.cancel()  # (as gather's children were): no task outlives the step that failed
            if hosts:
                await asyncio.wait(hosts)
            raise
        return step.segments

    async def _host(self, execution: Execution) -> None:
        """The task an async execution runs in: one segment per command, until the execution ends
        or is retired (a None command)."""
        while True:
            try:
                command = await execution.go
            except asyncio.CancelledError:
                return
            if command is None:
                return
            step, index, task, continued = command
            try:
                if step.gate is None:
                    seg = await execution.advance(task.stream, task.stop_at)
                else:
                    async with step.gate:
                        seg = await execution.advance(task.stream, task.stop_at)
                seg = self._keep(task, execution, seg, continued)
            except BaseException as exc:  # noqa: BLE001 - the step fails with it (e.g. a SwarmError)
                execution.go = None
                step.fail(exc)
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                return
            running = seg.status == "running" and self.current.get(task.stream) is execution
            execution.go = asyncio.get_running_loop().create_future() if running else None
            step.deliver(index, seg)
            if not running:
                return

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
            _retire(execution)
        self.previous, self.current = {}, {}


def _retire(execution: Execution) -> None:
    """Close an execution and end its host task (if it has one, waiting for a command)."""
    execution.close()
    go = execution.go
    if go is not None:
        execution.go = None
        if not go.done():
            go.set_result(None)
