"""OpenTelemetry overhead: `policies.SMC` run time with tracing off, with the in-memory exporter and
with OTLP/HTTP export to a local collector, as ratios to "off" measured in the same run (issue 19's
goals with OTLP: ≤ 1.10 at 50 ms LLM steps, ≤ 1.5 at 2 ms).

Workloads (N = 200 particles, 10 steps by default):
- "toy": Bernoulli draws and factors, no LLM: a particle step costs ~25 µs of CPU and the
  coordinator never waits, so nothing can hide the tracing cost. The worst case.
- "llm@<L>ms": each step a generation from the `Scripted` TEST DOUBLE backend with latency L
  (2, 50 and 200 ms; a real endpoint is slower): what a run that calls an LLM pays.

Variants: "off" (baseline), "memory" (SDK spans into the in-memory exporter), "otlp" (what
`instrument("otlp")` does), "otlp-sync" (`background=False`: everything in the coordinator) and
"otlp-10%" (opt-in `particle_sampling=0.1`). Each round runs every variant once, in rotated order,
so all see the same machine load; "ratio" is the median over rounds of run time / the same round's
"off"; "+flush" adds the `force_flush` after the run; "cpu" is the process CPU time ratio. The
collector (`bench.otlp_sink.SinkProcess`) is a stdlib HTTP server on 127.0.0.1 in a child process;
`--phoenix URL` exports to a running Phoenix instead.

Before → after in one run: `--compare DIR` runs the same rounds against the code in DIR too (e.g.
/work/main, the code before a change), each tree in its own long-lived child process (PYTHONPATH
set to the tree), one run at a time, interleaved round by round; each tree's ratios are to its own
"off" of the same round.

Measured with `--repeats 9 --variants off memory otlp otlp-10% --compare /work/main` on the shared
2-core machine (load average 4-6; ratio to untraced, run wall time, "+flush" in brackets):

    workload    OTLP before   OTLP after      in-memory before -> after
    toy         7.19          1.40 (2.45)     3.40 -> 3.80
    llm@2ms     2.66          1.12 (1.36)     1.50 -> 1.53
    llm@50ms    1.73          1.08 (1.15)     1.15 -> 1.24
    llm@200ms   1.08          1.01 (1.04)     1.06 -> 1.12

(docs/reliability.md §6 has the CPU ratios and where the time went.)

    python bench/otel_overhead.py [--particles 200] [--steps 10] [--latency-ms 2 50 200] [--repeats 5]
                                  [--no-toy] [--variants off memory otlp ...] [--phoenix URL] [--compare DIR]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from bench.otel_runs import VARIANTS, Local, Tree, llm_program, toy_program
from bench.otlp_sink import OTLPSink, SinkProcess

__all__ = ["OTLPSink", "SinkProcess", "main", "toy_program", "llm_program"]
REPO = Path(__file__).resolve().parents[1]


# ---- measuring ------------------------------------------------------------------------------
def _measure(runners: list[Local], workload: str, steps: int, particles: int, repeats: int, variants: list[str],
             endpoint: str) -> dict[tuple[str, str], list[dict]]:
    """`repeats` rounds; each round runs every (tree, variant) once, in an order rotated round by
    round, so every pair sees the same machine load (medians are taken over rounds)."""
    pairs = [(r, v) for r in runners for v in variants]
    runs: dict[tuple[str, str], list[dict]] = {(r.label, v): [] for r, v in pairs}
    for runner in runners:
        runner.run(workload, steps, particles, 0, "warm-up", endpoint)
    for k in range(repeats):
        order = pairs[k % len(pairs):] + pairs[:k % len(pairs)]
        for runner, variant in order:
            runs[(runner.label, variant)].append(runner.run(workload, steps, particles, k, variant, endpoint))
    return runs


def _rows(runs: dict[tuple[str, str], list[dict]], workload: str, particles: int, steps: int,
          repeats: int) -> list[dict[str, Any]]:
    rows = []
    for (label, variant), rs in runs.items():
        base = runs[(label, "off")]
        ratios = [r["run_s"] / b["run_s"] for r, b in zip(rs, base)]  # per round: same load
        spans = max((r["spans"] for (lab, _), rr in runs.items() if lab == label for r in rr), default=0)
        rows.append({"workload": workload, "tree": label, "exporter": variant, "particles": particles, "steps": steps,
                     "repeats": repeats, "run_s": statistics.median(r["run_s"] for r in rs),
                     "ratio": statistics.median(ratios), "ratios": [round(x, 3) for x in ratios],
                     "flush_s": statistics.median(r["flush_s"] for r in rs),
                     "ratio_with_flush": statistics.median((r["run_s"] + r["flush_s"]) / b["run_s"]
                                                           for r, b in zip(rs, base)),
                     "cpu_ratio": statistics.median(r["cpu_s"] for r in rs) / statistics.median(b["cpu_s"] for b in base),
                     "spans_per_run": spans if variant != "off" else 0})
    return rows


def main(particles: int = 200, steps: int = 10, latency_ms: tuple[float, ...] = (2.0, 50.0, 200.0), repeats: int = 5,
         phoenix: str | None = None, toy: bool = True, variants: tuple[str, ...] = tuple(VARIANTS),
         compare: str | None = None) -> list[dict[str, Any]]:
    """Measure every (workload, variant) pair (and tree, with `compare`); one row each."""
    variants_ = ["off", *[v for v in variants if v != "off"]]
    workloads = (["toy"] if toy else []) + [f"llm@{ms:g}ms" for ms in latency_ms]
    runners: list[Local] = [Tree(compare, "before"), Tree(str(REPO), "after")] if compare else [Local()]
    rows: list[dict[str, Any]] = []
    try:
        with SinkProcess() as sink:
            endpoint = phoenix or sink.endpoint
            for workload in workloads:
                runs = _measure(runners, workload, steps, particles, repeats, variants_, endpoint)
                rows.extend(_rows(runs, workload, particles, steps, repeats))
    finally:
        for runner in runners:
            runner.close()
    rows.append({"workload": "sink", "exporter": "otlp", "requests": sink.requests, "bytes": sink.bytes})
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    print(f"{'workload':10} {'tree':7} {'variant':10} {'run s':>8} {'ratio':>7} {'flush s':>8} {'+flush':>7} "
          f"{'cpu':>6} {'spans':>7}  per-round ratios")
    for r in rows:
        if r["workload"] == "sink":
            print(f"OTLP sink received {r['requests']} requests, {r['bytes'] / 1e6:.1f} MB")
            continue
        print(f"{r['workload']:10} {r['tree']:7} {r['exporter']:10} {r['run_s']:8.3f} {r['ratio']:7.3f} "
              f"{r['flush_s']:8.3f} {r['ratio_with_flush']:7.3f} {r['cpu_ratio']:6.2f} {r['spans_per_run'] or '':>7}"
              f"  {r['ratios']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--particles", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[2.0, 50.0, 200.0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--phoenix", default=None, help="OTLP/HTTP traces URL of a running Phoenix")
    parser.add_argument("--no-toy", action="store_true", help="skip the no-LLM workload")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--compare", metavar="DIR", help="also measure the code in DIR (before), interleaved")
    args = parser.parse_args()
    _print(main(args.particles, args.steps, tuple(args.latency_ms), args.repeats, args.phoenix,
                toy=not args.no_toy, variants=tuple(args.variants), compare=args.compare))
