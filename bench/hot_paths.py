"""The engine's hot paths in CPU time per particle-step, this code against a baseline checkout.

Wall-clock ratios on a shared, loaded machine move with the load; CPU time spent by the process
(`time.process_time`) moves much less, so this benchmark reports CPU µs per particle-step of three
workloads, for this code and for the code in `--baseline DIR` (e.g. the engine branch's worktree),
each run in its own subprocess, the two interleaved (this, baseline, baseline, this, …), medians:

- "llm step": the latency-hiding program (bench/latency_hiding.py: one `Agent` generation on the
  in-process `FakeLatencyBackend` test double at 0 ms, a coin, a factor; 3 steps) under SMC at N;
- "toy": the 10-step toy of bench/core_overhead.py under SMC at N (ess_threshold 0.5);
- "replay": the async toy of bench/engine_scaling.py, N = 100, T steps, resampling at every step
  (every second and later offspring is rebuilt by replay);
- "small runs": 200 runs, one after another, of a chat program of 4 generations (0 ms double) and
  4 factors under SMC at small N (8: the shape of a `swarm serve` request, bench/serve_overhead.py),
  where the per-step and per-run work of the policy (weights, ESS, evidence, records), not the
  particles', is most of the time.

    python -m bench.hot_paths --baseline /work/wt/engine [--repeats 3] [--n-llm 2048] [--n-toy 1000] [--n-small 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = ("llm step", "toy", "replay", "small runs")
SMALL_RUNS, SMALL_CALLS = 200, 4


def _llm_step(n: int) -> int:
    from bench.latency_hiding import STEPS, _smc_in_process

    _smc_in_process(n, 0.0)
    return n * STEPS


def _toy(n: int) -> int:
    import policies
    from bench.core_overhead import STEPS, toy_program

    policies.SMC(num_particles=n, seed=0).run(toy_program(STEPS))
    return n * STEPS


def _replay(steps: int) -> int:
    from bench.engine_scaling import time_once

    time_once("async", 100, steps)
    return 100 * steps


def _small_runs(n: int) -> int:
    import asyncio

    import policies
    from agents import Agent, ChatMessage
    from bench.fake_backend import FakeLatencyBackend
    from swarm import factor, sample

    agent = Agent(name="small", backend=FakeLatencyBackend(0.0))
    messages = [ChatMessage(role="user", content="Say ok.")]

    async def program() -> str:
        text = ""
        for i in range(SMALL_CALLS):
            text += await sample(f"s{i}", agent.generate(messages=messages, prefix=text, max_tokens=4))
            factor(f"f{i}", 0.0)
        return text

    async def runs() -> None:
        policy = policies.SMC(num_particles=n)
        for _ in range(SMALL_RUNS):
            await policy.run_async(program)

    asyncio.run(runs())
    return SMALL_RUNS * n * SMALL_CALLS


def measure(workload: str, size: int) -> dict[str, float]:
    """CPU and wall µs per particle-step of one run (after one untimed warm-up run)."""
    fn = {"llm step": _llm_step, "toy": _toy, "replay": _replay, "small runs": _small_runs}[workload]
    fn(size)
    cpu, wall = time.process_time(), time.perf_counter()
    work = fn(size)
    return {"cpu_us": (time.process_time() - cpu) / work * 1e6, "wall_us": (time.perf_counter() - wall) / work * 1e6}


def _child(directory: Path, workload: str, size: int) -> dict[str, float]:
    """`measure` in a subprocess importing swarm, agents, policies and bench from `directory` (this
    file runs there as a script, so a baseline checkout need not contain it)."""
    env = {**os.environ, "PYTHONPATH": str(directory)}
    out = subprocess.run([sys.executable, __file__, "--child", workload, str(size)], cwd=directory,
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(baseline: str | None = None, repeats: int = 3, n_llm: int = 2048, n_toy: int = 1000,
        replay_steps: int = 200, n_small: int = 8) -> list[dict]:
    from bench.common import progress, row

    sizes = {"llm step": n_llm, "toy": n_toy, "replay": replay_steps, "small runs": n_small}
    dirs = {"this": REPO, **({"baseline": Path(baseline).resolve()} if baseline else {})}
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(repeats):
        for workload in WORKLOADS:
            order = list(dirs) if r % 2 == 0 else list(reversed(dirs))
            for name in order:
                progress(f"hot paths: {workload} ({name}), repeat {r + 1}/{repeats}")
                samples.setdefault((workload, name), []).append(_child(dirs[name], workload, sizes[workload]))
    rows = []
    for workload in WORKLOADS:
        what = {"llm step": f"N={n_llm:,} x 3, agent on a 0 ms double", "toy": f"N={n_toy:,} x 10 toy",
                "replay": f"async toy N=100, T={replay_steps}, resample every step",
                "small runs": f"{SMALL_RUNS} runs at N={n_small} x {SMALL_CALLS} calls"}[workload]
        for key in ("cpu_us", "wall_us"):
            now = statistics.median(s[key] for s in samples[(workload, "this")])
            if baseline:
                before = statistics.median(s[key] for s in samples[(workload, "baseline")])
                rows.append(row("hot paths", f"{workload}: {what}, {key[:-3]} us/particle-step, this vs "
                                f"{Path(baseline).name}", now, before, "us", better="lower",
                                note=f"median of {repeats}, interleaved subprocesses"))
            else:
                rows.append(row("hot paths", f"{workload}: {what}, {key[:-3]} us/particle-step", now, now, "us",
                                better="lower", note=f"median of {repeats}"))
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-llm", type=int, default=2048)
    parser.add_argument("--n-toy", type=int, default=1000)
    parser.add_argument("--replay-steps", type=int, default=200)
    parser.add_argument("--n-small", type=int, default=8)
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return []
    rows = run(args.baseline, args.repeats, args.n_llm, args.n_toy, args.replay_steps, args.n_small)
    for r in rows:
        print(f"{r['case']:<95} {r['value']:9.2f} vs {r['baseline']:9.2f}  ratio {r['ratio']:.3f}")
    return rows


if __name__ == "__main__":
    main()
