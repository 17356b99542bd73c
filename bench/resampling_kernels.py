"""Resampling kernels at N = 10^6 particles against ``Generator.choice(N, size=N, p=w)``.

Both sides are timed in the same run on the same weights (log-normal, σ = 2, so the weights are
far from uniform), median of REPEATS repeats after one warm-up call. ratio = scheme / baseline:
below 1 means faster than the numpy baseline. Note the schemes do more than the baseline: they
validate the weights and return ancestors sorted (offspring of one parent adjacent); the baseline
returns them unsorted.

    python bench/resampling_kernels.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swarm.population import normalized_weights  # noqa: E402
from swarm.resampling import SCHEMES  # noqa: E402

N = 1_000_000
REPEATS = 7
SEED = 0


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time in seconds of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(n: int = N, repeats: int = REPEATS) -> list[dict]:
    """One row per scheme: {"benchmark", "case", "value", "baseline", "ratio", "unit"}."""
    rng = np.random.default_rng(SEED)
    w = normalized_weights(rng.normal(0.0, 2.0, n))
    baseline = _median_time(lambda: rng.choice(n, size=n, p=w), repeats)
    rows = []
    for name, scheme in SCHEMES.items():
        value = _median_time(lambda: scheme(w, rng), repeats)
        rows.append(
            {
                "benchmark": "resampling_kernels",
                "case": f"{name} N={n:.0e} vs Generator.choice(p=w)",
                "value": value,
                "baseline": baseline,
                "ratio": value / baseline,
                "unit": "s",
            }
        )
    return rows


def main() -> None:
    rows = run()
    print(f"resampling kernels, N = {N:,}, median of {REPEATS} (baseline Generator.choice "
          f"{rows[0]['baseline'] * 1e3:.1f} ms)")
    for r in rows:
        print(f"  {r['case']:<48} {r['value'] * 1e3:8.1f} ms   ratio {r['ratio']:.2f}")


if __name__ == "__main__":
    main()
