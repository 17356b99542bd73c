"""Ray scaling: wall time of an SMC over a FAKE agent of fixed latency, on the local runtime and on
Ray, against the ideal time measured by the same clock; and the per-call overhead of the Ray agent
path against a bare Ray actor call, measured in the same run.

The agent's backend is `FakeFixedLatency`, a TEST DOUBLE: `asyncio.sleep(latency)` then a fixed
reply, with at most `concurrency` calls running at once (as an endpoint's concurrency limit). The
program: 8 steps, each one generation and one factor. With N particles and concurrency C, no runner
can beat

    ideal = steps × latency × ⌈N / C⌉,

so `ratio = wall / ideal` ≥ 1 measures everything the framework adds (replay, resampling, Ray
messages, serialisation). Cases:

- local:            runtime="local", the agent in the driver's process (`LocalClient`);
- local+ray-agent:  runtime="local", the agent on a Ray actor pool (`RayHosting(max_concurrency=C)`);
- ray:              runtime="ray" (segment workers) and the agent on a Ray actor pool.

Per-call overhead: sequential calls (one in flight) with latency 0 through (a) a bare Ray async
actor method returning its argument, (b) the Ray agent path (`RayAgentClient`: run cache, gate,
envelope, actor, backend), (c) the local path (`LocalClient`), on the same Ray instance.

Peak RSS is the driver's `ru_maxrss` after each row (monotone over the run: the peak so far).

    python bench/ray_scaling.py [--sizes 16 256 2048] [--steps 8] [--latency 0.05] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import sys
import time
import weakref
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import policies  # noqa: E402
from agents import Agent  # noqa: E402
from agents.backends.base import Backend, ChatMessage, Completion, GenerationRequest, Usage  # noqa: E402
from agents.clients import LocalClient  # noqa: E402
from agents.ray_hosting import RayHosting, ray_client_for, shutdown_agent_pools  # noqa: E402
from agents.cache import ResponseCache  # noqa: E402
from swarm import factor, sample  # noqa: E402
from swarm.runtime import new_run_scope  # noqa: E402


class FakeFixedLatency(Backend):
    """A TEST DOUBLE backend: sleeps `latency_s`, replies "ok <seed mod 10>"; ≤ `concurrency` at once."""

    name = "fake_fixed_latency"
    model = "fake"

    def __init__(self, latency_s: float, concurrency: int) -> None:
        self.latency_s = latency_s
        self.concurrency = concurrency
        self._gates: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:
        return {"latency_s": self.latency_s, "concurrency": self.concurrency}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["latency_s"], state["concurrency"])

    async def complete(self, request: GenerationRequest) -> Completion:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(self.concurrency)
        async with gate:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
        text = f"ok {(request.seed or 0) % 10}"
        return Completion(text=text, tokens=text.split(), token_logprobs=[-1.0, -1.0],
                          usage=Usage(input_tokens=4, output_tokens=2), model=self.model, backend=self.name)


def make_program(agent: Agent, steps: int):
    async def program():
        text = ""
        for t in range(steps):
            text = await sample(f"gen{t}", agent.generate(f"step {t}"))
            factor(f"f{t}", -0.1 * int(text[-1]))
        return text

    return program


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def row(case: str, value: float, baseline: float, unit: str, note: str = "") -> dict[str, Any]:
    """One figure against its same-run baseline (the shape of bench/common.py's rows)."""
    return {"benchmark": "ray_scaling", "case": case, "value": float(value), "baseline": float(baseline),
            "ratio": float(value / baseline) if baseline else math.nan, "unit": unit, "better": "lower",
            "note": note}


def scaling_rows(sizes: list[int], steps: int, latency: float, concurrency: int) -> list[dict[str, Any]]:
    """Wall time per case and size. Start-up (placing the agent actors, starting the segment
    workers) is paid once per case before timing, by a warm-up run of 2 particles, and reported."""
    from swarm.ray_runtime import RayRuntime

    backend = FakeFixedLatency(latency, concurrency)
    on_ray = RayHosting(max_concurrency=concurrency)
    segment_workers = RayRuntime(num_workers=2)
    cases = {
        "local": (Agent(name="fake_local", backend=backend, hosting="local"), "local"),
        "local+ray-agent": (Agent(name="fake_ray", backend=backend, hosting=on_ray), "local"),
        "ray": (Agent(name="fake_ray", backend=backend, hosting=on_ray), segment_workers),
    }
    rows = []
    try:
        startup = {}
        for case, (agent, runtime) in cases.items():
            started = time.perf_counter()
            policies.SMC(num_particles=2, seed=1, runtime=runtime).run(make_program(agent, steps))
            startup[case] = time.perf_counter() - started - steps * latency
        for n in sizes:
            ideal = steps * latency * math.ceil(n / concurrency)
            for case, (agent, runtime) in cases.items():
                started = time.perf_counter()
                result = policies.SMC(num_particles=n, seed=0, runtime=runtime).run(make_program(agent, steps))
                wall = time.perf_counter() - started
                assert len(result.diagnostics.steps) == steps + 1  # the last step only returns
                rows.append(row(f"{case} N={n}", wall, ideal, "s",
                                f"{n * steps / wall:,.0f} particle-steps/s; start-up {startup[case]:.1f} s "
                                f"(not counted); driver peak RSS {peak_rss_mb():.0f} MB"))
    finally:
        asyncio.run(segment_workers.aclose())
    return rows


async def _per_call(call, count: int, offset: int) -> float:
    """Seconds per call of `count` sequential calls (one in flight), with fresh seeds."""
    started = time.perf_counter()
    for i in range(count):
        await call(offset + i)
    return (time.perf_counter() - started) / count


def overhead_rows(count: int, rounds: int = 5) -> list[dict[str, Any]]:
    """Per-call time of the three paths, interleaved in `rounds` rounds (bare, agent, local, bare,
    ...) so that all see the same machine load; medians of the rounds."""
    import statistics

    import ray

    @ray.remote(num_cpus=0)
    class BareActor:
        async def echo(self, x):
            return x

    bare = BareActor.options(max_concurrency=8).remote()
    backend = FakeFixedLatency(0.0, 8)
    agent = Agent(name="fake_overhead", backend=backend, hosting=RayHosting(max_concurrency=8))
    local = LocalClient(backend, ResponseCache())

    def request(i: int) -> GenerationRequest:
        return GenerationRequest(messages=[ChatMessage(role="user", content="hi")], seed=i)

    async def measure() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"bare": [], "agent": [], "local": []}
        with new_run_scope():
            client = ray_client_for(agent)
            paths = {"bare": lambda i: bare.echo.remote(request(i)), "agent": lambda i: client.complete(request(i)),
                     "local": lambda i: local.complete(request(i))}
            for name, call in paths.items():  # warm up: placement, imports, first-call paths
                await _per_call(call, 5, 10**9)
            for r in range(rounds):
                for name, call in paths.items():
                    times[name].append(await _per_call(call, count // rounds, r * count))
        return times

    times = {k: statistics.median(v) for k, v in asyncio.run(measure()).items()}
    ray.kill(bare)
    note = f"{count} sequential calls each, {rounds} interleaved rounds, medians"
    return [row("per call: Ray agent path vs bare Ray actor call", times["agent"] * 1e3, times["bare"] * 1e3, "ms", note),
            row("per call: local agent path vs bare Ray actor call", times["local"] * 1e3, times["bare"] * 1e3, "ms", note)]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | value | baseline (ideal / bare) | ratio | note |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['value']:.3f} {r['unit']} | {r['baseline']:.3f} {r['unit']} | "
                     f"{r['ratio']:.2f} | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 256, 2048])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--calls", type=int, default=300, help="sequential calls per overhead measurement")
    args = parser.parse_args(argv)

    import ray

    from swarm.ray_runtime import local_init_kwargs, loopback_only

    owns = not ray.is_initialized()
    if owns:
        with loopback_only():
            ray.init(**local_init_kwargs(num_cpus=2))
    try:
        rows = scaling_rows(args.sizes, args.steps, args.latency, args.concurrency)
        rows += overhead_rows(args.calls)
    finally:
        shutdown_agent_pools()
        if owns:
            ray.shutdown()
    print(f"ideal = steps × latency × ⌈N / C⌉ with steps={args.steps}, latency={args.latency * 1e3:g} ms, "
          f"C={args.concurrency}")
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
