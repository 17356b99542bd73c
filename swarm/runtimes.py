"""Where particle segments execute: `LocalRuntime` (asyncio, one process) or `RayRuntime`.

A runtime has one job: given a `SegmentRunner` (a program with its arguments, seed and temperature)
and a batch of `SegmentTask`s, return their `Segment`s in the same order. All randomness is
addressed by (seed, particle stream, site address), so where and in which order segments run does
not change any result: the same seed gives the same population on every runtime.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any

from swarm.execution import Segment, SegmentRunner, SegmentTask


class Runtime(abc.ABC):
    name: str = "runtime"

    @abc.abstractmethod
    async def run_segments(self, runner: SegmentRunner, tasks: list[SegmentTask]) -> list[Segment]:
        """Run every task; results in task order."""

    async def start(self) -> None:
        """Acquire resources (connect to Ray, start actors)."""

    async def aclose(self) -> None:
        """Release what `start` acquired."""


class LocalRuntime(Runtime):
    """One process. Plain programs run one after another; async programs run concurrently on the
    event loop (at most `max_concurrency` segments in flight when set), so particles waiting on
    LLM calls overlap."""

    name = "local"

    def __init__(self, max_concurrency: int | None = None) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"LocalRuntime: max_concurrency must be ≥ 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency

    async def run_segments(self, runner: SegmentRunner, tasks: list[SegmentTask]) -> list[Segment]:
        if not runner.is_async:
            return runner.run_batch_sync(tasks)
        if self.max_concurrency is None or self.max_concurrency >= len(tasks):
            return list(await asyncio.gather(*(runner.run(task) for task in tasks)))
        gate = asyncio.Semaphore(self.max_concurrency)

        async def bounded(task: SegmentTask) -> Segment:
            async with gate:
                return await runner.run(task)

        return list(await asyncio.gather(*(bounded(task) for task in tasks)))


def make_runtime(spec: Any) -> Runtime:
    """"local", "ray", a Runtime instance, or a dict {"kind": "ray", ...options}."""
    if isinstance(spec, Runtime):
        return spec
    options: dict[str, Any] = {}
    if isinstance(spec, dict):
        options = dict(spec)
        spec = options.pop("kind", "local")
    if spec == "local":
        return LocalRuntime(**options)
    if spec == "ray":
        from swarm.ray_runtime import RayRuntime

        return RayRuntime(**options)
    raise ValueError(f"unknown runtime {spec!r}; expected 'local', 'ray' or a swarm Runtime")
