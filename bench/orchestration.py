"""Orchestration overhead: the same fan-out (N agents × K messages) in plp-swarm, plain asyncio and
LangGraph, with a fake backend of 0 ms and 50 ms latency (a test double: `asyncio.sleep`).

- plp-swarm: one program run (`policies.Forward(num_particles=1)`); N replicas of an agent role in a
  `plate` run concurrently, each sends K messages with `agent.ask` (every message: an `interact`
  request, a `sample` of the generation, an `interact` reply, all recorded in the trace);
- plain asyncio: N coroutines each awaiting the fake backend K times (no trace, no framework);
- LangGraph (`bench/orchestration_langgraph.py`, run with .venv-bench's python): N `Send`s per
  superstep to an agent node, K rounds, messages merged by a reducer.

    per-message overhead = (wall − K × latency) / (N × K)

Each framework is timed interleaved with a plain-asyncio run in its own process; the ratio is
framework overhead / asyncio overhead (how much each message costs beyond a bare `await`), and
plp-swarm / LangGraph compares the two frameworks directly.

    python -m bench.orchestration [--agents 100] [--messages 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json

from bench.common import bench_python, interleaved, median, progress, row, run_peer
from bench.asyncio_fanout import run_asyncio
from bench.fake_backend import FakeLatencyBackend


def run_plp(n_agents: int, n_messages: int, latency: float) -> None:
    import policies
    from agents import Agent
    from swarm import plate

    worker = Agent(name="worker", backend=FakeLatencyBackend(latency))

    async def member() -> list[str]:
        return [await worker.ask(f"message {k}") for k in range(n_messages)]

    async def team() -> int:
        replies = await plate("team", n_agents, member)
        return sum(len(r) for r in replies)

    result = policies.Forward(num_particles=1, seed=0).run(team)
    assert result.particles[0].value == n_agents * n_messages, result.particles[0].value


def _overhead_us(wall: float, n_agents: int, n_messages: int, latency: float) -> float:
    return max(wall - n_messages * latency, 0.0) / (n_agents * n_messages) * 1e6


def _case(latency: float, n: int, k: int, repeats: int) -> list[dict]:
    progress(f"orchestration: {n} agents x {k} messages, {latency * 1e3:g} ms")
    times = interleaved({"plp": lambda: run_plp(n, k, latency), "asyncio": lambda: run_asyncio(n, k, latency)},
                        repeats=repeats)
    plp = _overhead_us(median(times["plp"]), n, k, latency)
    plain = _overhead_us(median(times["asyncio"]), n, k, latency)
    label = f"{n}x{k} msgs, {latency * 1e3:g} ms backend"
    rows = [row("orchestration", f"plp-swarm vs plain asyncio, {label}", plp, plain, "us/msg", better="lower",
                note=f"wall {median(times['plp']):.3f} s vs {median(times['asyncio']):.3f} s")]
    if bench_python() is None:
        rows.append(row("orchestration", f"LangGraph, {label}", float("nan"), float("nan"), "us/msg",
                        note="skipped: .venv-bench missing (scripts/install_bench.sh)"))
        return rows
    out = json.loads(run_peer("orchestration_langgraph.py", ["--agents", str(n), "--messages", str(k),
                                                           "--latency", str(latency), "--repeats", str(repeats)],
                              timeout=900).strip().splitlines()[-1])
    lg = _overhead_us(median(out["langgraph"]), n, k, latency)
    lg_plain = _overhead_us(median(out["asyncio"]), n, k, latency)
    rows.append(row("orchestration", f"LangGraph {out['version']} vs plain asyncio, {label}", lg, lg_plain,
                    "us/msg", better="lower",
                    note=f"wall {median(out['langgraph']):.3f} s vs {median(out['asyncio']):.3f} s (.venv-bench)"))
    rows.append(row("orchestration", f"plp-swarm vs LangGraph, {label}", plp, lg, "us/msg", better="lower",
                    note="each measured against its own plain-asyncio run; processes differ"))
    return rows


def run(n_agents: int = 100, n_messages: int = 10, repeats: int = 5, latencies=(0.0, 0.05)) -> list[dict]:
    rows = []
    for latency in latencies:
        rows += _case(latency, n_agents, n_messages, repeats)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = run(args.agents, args.messages, args.repeats)
    for r in rows:
        print(f"{r['case']:<60} {r['value']:9.1f} vs {r['baseline']:9.1f} us/msg  ratio {r['ratio']:8.2f}  {r['note']}")
    return rows


if __name__ == "__main__":
    main()
