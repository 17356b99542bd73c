"""The runtime interface: where particle segments execute (`swarm.local_runtime.LocalRuntime`, one
process; `swarm.ray_runtime.RayRuntime`, a pool of Ray actors; `swarm.runtimes.make_runtime` picks).

A runtime has one job: given a `SegmentRunner` (a program with its arguments, seed and temperature)
and one step's `SegmentTask`s, return their `Segment`s in the same order, keeping the particles'
executions alive for the next step (`swarm.live`). Segments carry only the events they added.
All randomness is addressed by (seed, particle stream, site address), so where and in which order
segments run does not change any result: the same seed gives the same population on every runtime.
"""

from __future__ import annotations

import abc

from swarm.execution import Segment, SegmentRunner, SegmentTask


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
