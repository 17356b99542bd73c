"""Where particle segments execute: `LocalRuntime` (one process) or `RayRuntime` (a pool of Ray
actors, `swarm.ray_runtime`).

A runtime has one job: given a `SegmentRunner` (a program with its arguments, seed and temperature)
and one step's `SegmentTask`s, return their `Segment`s in the same order, keeping the particles'
executions alive for the next step (`swarm.live`). Segments carry only the events they added.
All randomness is addressed by (seed, particle stream, site address), so where and in which order
segments run does not change any result: the same seed gives the same population on every runtime.
"""

from __future__ import annotations

import abc
import weakref
from typing import Any

from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.live import LiveExecutions


class Runtime(abc.ABC):
    name: str = "runtime"

    @abc.abstractmethod
    async def run_segments(self, runner: SegmentRunner, tasks: list[SegmentTask]) -> list[Segment]:
        """Run one step's tasks; results in task order. Each call is one step: executions kept alive
        from the previous call can be continued (`SegmentTask.continue_from`), the others are closed."""

    async def release(self, runner: SegmentRunner) -> None:
        """Close the executions kept alive for `runner` (its run is over)."""

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
        self._hosts: weakref.WeakKeyDictionary[SegmentRunner, LiveExecutions] = weakref.WeakKeyDictionary()
        self._epoch = 0

    def host(self, runner: SegmentRunner) -> LiveExecutions:
        host = self._hosts.get(runner)
        if host is None:
            host = self._hosts[runner] = LiveExecutions(runner, self.max_concurrency)
        return host

    async def run_segments(self, runner: SegmentRunner, tasks: list[SegmentTask]) -> list[Segment]:
        self._epoch += 1
        return await self.host(runner).advance(self._epoch, tasks)

    async def release(self, runner: SegmentRunner) -> None:
        host = self._hosts.pop(runner, None)
        if host is not None:
            host.close()


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
