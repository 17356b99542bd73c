"""MCP tool calls: what `agents.mcp` adds to the SDK's own call, and what an MCP tool costs a program.

Against the real calc server (tests/mcp_servers/calc_server.py, stdio child process):

- `sequential`: K calls of `add` one after another. Baseline: the SDK's `Client.call_tool` on a
  session opened in the caller's own event loop (the floor of an MCP call). Candidate: `MCPTool.call`
  (schema validation, the hop to the process's MCP loop thread and back, rendering the result).
- `concurrent`: K calls in flight at once (asyncio.gather), the same two paths.
- `program`: a Forward run of N particles whose agent (the `Scripted` TEST DOUBLE model) calls
  `add` once. Baseline: the same agent with a typed Python tool doing the same sum in process.
  This ratio is what going through an MCP server costs a program that does nothing else.

Repetitions are interleaved (baseline and candidate alternate, medians reported) so both see the
same load; on a shared machine only the ratios mean anything.

    python bench/mcp_overhead.py [--calls 50] [--particles 32] [--repeats 5]

Measured (commit of this file, shared 2-core machine at load average ~10, so noisy; ratios in one run):
sequential 9.66 vs 9.48 ms/call (1.02x); concurrent 4.12 vs 5.86 ms/call (0.70x: the client's work
runs on the MCP thread, beside the caller's loop); program, Forward N=32: 0.30 vs 0.15 s (1.96x a
Python tool: the server round trip is the cost of a toy program that does nothing else).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import policies  # noqa: E402
from agents import Agent, tool  # noqa: E402
from agents.mcp import close_all, mcp_tools  # noqa: E402
from bench.common import interleaved, median, row  # noqa: E402
from tests.mcp_servers.harness import REPO, adds, tool_caller  # noqa: E402

SERVER = [sys.executable, "-m", "tests.mcp_servers.calc_server"]
ENV = {"PYTHONPATH": str(REPO)}


def _sdk_client() -> Any:
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    return Client(stdio_client(StdioServerParameters(command=SERVER[0], args=SERVER[1:], env=ENV, cwd=str(REPO))))


async def _interleaved_async(fns: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """`bench.common.interleaved` for coroutine functions, on one loop (an SDK session must be
    entered and exited by one task)."""
    names = list(fns)
    for name in names:  # warm-up round
        await fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            started = time.perf_counter()
            await fns[name]()
            times[name].append(time.perf_counter() - started)
    return times


def call_rows(calls: int, repeats: int) -> list[dict[str, Any]]:
    """Per-call latency, SDK in the caller's loop vs `MCPTool.call`, sequential and concurrent."""
    (add,) = mcp_tools(command=SERVER, env=ENV, cwd=str(REPO), include=["add"])

    async def measure() -> dict[str, list[float]]:
        async with _sdk_client() as client:
            async def sdk_seq() -> None:
                for i in range(calls):
                    await client.call_tool("add", {"a": i, "b": 1})

            async def ours_seq() -> None:
                for i in range(calls):
                    await add.call({"a": i, "b": 1})

            async def sdk_par() -> None:
                await asyncio.gather(*(client.call_tool("add", {"a": i, "b": 1}) for i in range(calls)))

            async def ours_par() -> None:
                await asyncio.gather(*(add.call({"a": i, "b": 1}) for i in range(calls)))

            return await _interleaved_async({"sdk_seq": sdk_seq, "ours_seq": ours_seq, "sdk_par": sdk_par,
                                             "ours_par": ours_par}, repeats)

    times = asyncio.run(measure())
    out = []
    for case, sdk, ours in (("sequential", "sdk_seq", "ours_seq"), ("concurrent", "sdk_par", "ours_par")):
        base, cand = median(times[sdk]) / calls * 1e3, median(times[ours]) / calls * 1e3
        out.append(row("mcp_overhead", f"{case}: MCPTool.call vs the SDK's call_tool, {calls} calls",
                       cand, base, "ms/call", better="lower",
                       note=f"medians of {repeats} interleaved repetitions; the SDK's session in the caller's loop"))
    return out


def program_row(particles: int, repeats: int) -> dict[str, Any]:
    """A Forward run whose agent calls `add` once: over MCP vs a Python tool."""
    (remote,) = mcp_tools(command=SERVER, env=ENV, cwd=str(REPO), include=["add"])

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers and return their sum."""
        return a + b

    def program_with(tool_: Any) -> Any:
        agent = Agent(name="solver", backend=tool_caller(adds), tools=[tool_], max_tool_rounds=1, hosting="local")

        async def program() -> str:
            return await agent.ask("Add two numbers.")

        return program

    runs = {name: (lambda p=program_with(t): policies.Forward(num_particles=particles, seed=0).run(p))
            for name, t in (("python", add), ("mcp", remote))}
    times = interleaved(runs, repeats)
    base, cand = median(times["python"]), median(times["mcp"])
    return row("mcp_overhead", f"program: Forward N={particles}, one tool call per particle, MCP vs Python tool",
               cand, base, "s", better="lower", note="Scripted TEST DOUBLE model; interleaved medians")


def run(calls: int = 50, particles: int = 32, repeats: int = 5) -> list[dict[str, Any]]:
    try:
        return [*call_rows(calls, repeats), program_row(particles, repeats)]
    finally:
        close_all()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--particles", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = run(args.calls, args.particles, args.repeats)
    for r in rows:
        print(json.dumps(r))
    return rows


if __name__ == "__main__":
    main()
