"""Core overhead: particle-steps per second of `policies.SMC` on a 10-step toy program, against
hand-written SMC loops for the same model measured in the same run.

The model: x_t ~ Bernoulli(0.5), factor(0.1·x_t) for t = 1..10, return Σ x_t. Baselines draw the
same kind of samples with numpy directly and resample systematically when ESS < N/2:
- "python loop": one Python iteration per particle per step (what a user writes without a framework);
- "numpy vectorised": one array operation per step across all particles (the floor for this model).
The framework runs the same program (`bench.toy_programs.toy_program`) two ways:
- `policies.SMC`: any Python program, one execution per particle (handlers, traces, live
  continuation, replay), so a particle-step costs Python calls;
- `policies.VectorizedSMC`: the program once for the whole population, `sample` returning N values
  (the toy is written with `+=` and `*`, so it runs unchanged on arrays); a particle-step costs numpy
  elements, plus building the N final `Particle`s of the `Result`.
The ratio against the plain loop is the figure that matters (issue 12's goal: ≥ 0.25).

The four are timed back to back, repetitions interleaved (SMC, VectorizedSMC, loop, numpy, …),
medians reported, so all see the same background load.

    python bench/core_overhead.py [--sizes 1000 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import policies
from bench.toy_programs import toy_program

STEPS = 10


def _systematic(w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(w)
    positions = (rng.random() + np.arange(n)) / n
    cdf = np.cumsum(w)
    cdf[-1] = 1.0
    return np.searchsorted(cdf, positions)


def python_loop_smc(n: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    totals = [0] * n
    log_w = [0.0] * n
    for _ in range(STEPS):
        for i in range(n):
            x = rng.random() < 0.5
            totals[i] += x
            log_w[i] += 0.1 * x
        lw = np.array(log_w)
        w = np.exp(lw - lw.max())
        w /= w.sum()
        if 1.0 / np.sum(w**2) < n / 2:
            idx = _systematic(w, rng)
            mean = float(lw.max() + math.log(np.exp(lw - lw.max()).mean()))
            totals = [totals[j] for j in idx]
            log_w = [mean] * n
    return float(np.mean(totals))


def numpy_smc(n: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    totals = np.zeros(n)
    log_w = np.zeros(n)
    for _ in range(STEPS):
        x = rng.random(n) < 0.5
        totals += x
        log_w += 0.1 * x
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        if 1.0 / np.sum(w**2) < n / 2:
            idx = _systematic(w, rng)
            totals = totals[idx]
            log_w = np.full(n, log_w.max() + math.log(np.exp(log_w - log_w.max()).mean()))
    return float(totals.mean())


def run(sizes=(1_000, 100_000), repeats: int = 3) -> list[dict]:
    from bench.common import interleaved, median

    rows, program = [], toy_program(STEPS)
    for n in sizes:
        reps = repeats if n <= 10_000 else 1
        times = interleaved({"SMC": lambda: policies.SMC(num_particles=n, seed=0).run(program),
                             "VectorizedSMC": lambda: policies.VectorizedSMC(num_particles=n, seed=0).run(program),
                             "python loop": lambda: python_loop_smc(n), "numpy vectorised": lambda: numpy_smc(n)},
                            repeats=reps, warmup=n <= 10_000)
        rate = {name: n * STEPS / median(t) for name, t in times.items()}
        for framework, label in (("SMC", f"SMC N={n:,}"), ("VectorizedSMC", f"N={n:,} VectorizedSMC")):
            for name in ("python loop", "numpy vectorised"):
                rows.append({"benchmark": "core overhead", "case": f"{label} vs {name}",
                             "value": rate[framework], "baseline": rate[name], "ratio": rate[framework] / rate[name],
                             "unit": "particle-steps/s", "better": "higher", "note": f"median of {reps}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for row in run(args.sizes, args.repeats):
        print(f"{row['case']:<40} {row['value']:>12,.0f} vs {row['baseline']:>14,.0f} {row['unit']}"
              f"  ratio {row['ratio']:.4f}")


if __name__ == "__main__":
    main()
