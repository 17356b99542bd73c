"""What every benchmark shares: result rows, back-to-back timing, confidence intervals, a
token-counting backend wrapper, and the peer virtualenv.

A *row* is one figure against its baseline measured in the same run:

    {"benchmark": str, "case": str, "value": float, "baseline": float, "ratio": float,
     "unit": str, "better": "higher" | "lower", "note": str}

`ratio = value / baseline`; `better` says which direction is good for `value` (so for a time,
ratio < 1 is good; for a rate, ratio > 1). Other helpers' benchmarks may omit `better` and `note`.

Timing on a shared machine: other processes use the same two cores, so a baseline measured a
minute before its candidate can see a different machine. `interleaved` alternates baseline and
candidate repetitions (b, c, b, c, …) and reports medians, so both see the same load.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = REPO_ROOT / ".venv-bench"


def row(benchmark: str, case: str, value: float, baseline: float, unit: str, *, better: str = "higher",
        note: str = "", ratio: float | None = None) -> dict[str, Any]:
    """One figure and its same-run baseline (ratio = value / baseline unless given)."""
    if ratio is None:
        ratio = value / baseline if baseline else math.nan
    return {"benchmark": benchmark, "case": case, "value": float(value), "baseline": float(baseline),
            "ratio": float(ratio), "unit": unit, "better": better, "note": note}


# ------------------------------------------------------------------------------------ timing
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, return value) of one call."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: bool = True) -> dict[str, list[float]]:
    """Wall times of each function, repetitions interleaved (a, b, c, a, b, c, …) so that every
    function sees the same background load; the order rotates every round so none always runs
    first. One untimed warm-up round first when `warmup`."""
    names = list(fns)
    if warmup:
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(timed(fns[name])[0])
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# ----------------------------------------------------------------------- confidence intervals
def wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (0 trials: the whole [0, 1])."""
    if trials <= 0:
        return 0.0, 1.0
    z = statistics.NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2.0 * trials)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / trials + z * z / (4.0 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_mean(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of `values` (a point when there is one value)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def fmt_interval(lo: float, hi: float, digits: int = 2) -> str:
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


# --------------------------------------------------------------------------- peer virtualenv
def bench_python() -> Path | None:
    """The python of .venv-bench (its-hub, langgraph), or None when scripts/install_bench.sh has
    not been run."""
    exe = BENCH_VENV / "bin" / "python"
    return exe if exe.is_file() else None


def run_peer(module_file: str, args: Sequence[str], timeout: float) -> str:
    """Run a bench script with .venv-bench's python (a subprocess, so the peers' dependencies
    never load into the project's interpreter); return its stdout. Raises RuntimeError with the
    stderr tail on failure."""
    exe = bench_python()
    if exe is None:
        raise RuntimeError("peer venv missing: run scripts/install_bench.sh")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([str(exe), str(Path(__file__).with_name(module_file)), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO_ROOT)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{module_file} exited with {proc.returncode}:\n{tail}")
    return proc.stdout


def stop_process(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop a server this process started: SIGTERM, then SIGKILL if it is still running after
    `grace_s` seconds (used by the benchmarks' and the tests' local servers)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def progress(message: str) -> None:
    """A progress line on stderr (stdout may carry machine-readable output)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)
