"""`LocalRuntime`: particle segments in this process (docs/theory.md §3)."""

from __future__ import annotations

import asyncio
import weakref

from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.live import LiveExecutions
from swarm.runtime_api import Runtime


class LocalRuntime(Runtime):
    """One process. Plain programs run one after another; async programs run concurrently on the
    event loop (at most `max_concurrency` segments in flight when set), so particles waiting on
    LLM calls overlap."""

    name = "local"

    def __init__(self, max_concurrency: int | None = None) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"LocalRuntime: max_concurrency must be ≥ 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self._hosts: weakref.WeakKeyDictionary[SegmentRunner, LiveExecutions] = weakref.WeakKeyDictionary()
        self._epoch = 0

    def host(self, runner: SegmentRunner) -> LiveExecutions:
        host = self._hosts.get(runner)
        if host is None:
            host = self._hosts[runner] = LiveExecutions(runner, self.max_concurrency)
        return host

    async def run_segments(self, runner: SegmentRunner, tasks: list[SegmentTask]) -> list[Segment]:
        self._epoch += 1
        if not runner.is_async:  # a plain program never awaits: give the loop a turn before each step, so
            await asyncio.sleep(0)  # a stream's reader sees the steps as they end and Ctrl-C acts between them
        return await self.host(runner).advance(self._epoch, tasks)

    async def release(self, runner: SegmentRunner) -> None:
        host = self._hosts.pop(runner, None)
        if host is not None:
            host.close()
