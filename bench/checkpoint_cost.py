"""Checkpoint cost: an SMC run over a FAKE agent with `checkpoint=<dir>` (population written and
fsynced after every step, every LLM response journaled) against the same run without checkpoints,
measured back to back in the same process; plus the size of the last checkpoint and of the journal.

The agent's backend is `FakeFixedLatency` from bench/ray_scaling.py, a TEST DOUBLE (sleep, fixed
reply). With latency 0 the ratio shows the whole cost of checkpointing against the framework's own
work (the worst case); with a real LLM's latency it shrinks towards 1.

    python bench/checkpoint_cost.py [--sizes 256 2048] [--steps 8] [--latency 0 [0.05 ...]]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import policies  # noqa: E402
from agents import Agent  # noqa: E402
from bench.ray_scaling import FakeFixedLatency, make_program, markdown, peak_rss_mb  # noqa: E402


def row(case: str, value: float, baseline: float, unit: str, note: str = "") -> dict[str, Any]:
    return {"benchmark": "checkpoint_cost", "case": case, "value": float(value), "baseline": float(baseline),
            "ratio": float(value / baseline) if baseline else float("nan"), "unit": unit, "better": "lower",
            "note": note}


def measure(n: int, steps: int, latency: float, repeats: int) -> dict[str, Any]:
    agent = Agent(name="fake_ckpt", backend=FakeFixedLatency(latency, 10**6), hosting="local")
    program = make_program(agent, steps)
    plain, checkpointed, sizes = [], [], (0, 0)
    for _ in range(repeats):  # interleaved, so both see the same machine load
        started = time.perf_counter()
        policies.SMC(num_particles=n, seed=0).run(program)
        plain.append(time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as directory:
            started = time.perf_counter()
            policies.SMC(num_particles=n, seed=0, checkpoint=directory).run(program)
            checkpointed.append(time.perf_counter() - started)
            sizes = ((Path(directory) / "population.ckpt").stat().st_size,
                     (Path(directory) / "responses.jsonl").stat().st_size)
    with_ckpt, without = statistics.median(checkpointed), statistics.median(plain)
    per_step = (with_ckpt - without) / (steps + 1) * 1e3
    agent_latency = f", {latency * 1e3:g} ms agent" if latency else ""
    return row(f"N={n} × {steps} steps{agent_latency}, checkpoint every step", with_ckpt, without, "s",
               f"≈{per_step:.0f} ms a checkpoint; last checkpoint {sizes[0] / 1e6:.2f} MB, journal "
               f"{sizes[1] / 1e6:.2f} MB; median of {repeats}; driver peak RSS {peak_rss_mb():.0f} MB")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0],
                        help="the agent's latency in seconds; several values: one run each")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = [measure(n, args.steps, latency, args.repeats) for latency in args.latency for n in args.sizes]
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
