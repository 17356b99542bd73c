"""Engine scaling: SMC's cost must grow with the work (N·T), not with its square.

A toy program of T steps (x_t ~ Bernoulli(0.5), factor(0.1·x_t) at every step), as a plain `def` and
as an `async def`, under SMC with N particles and resampling at every step (ess_threshold = 1.0, the
hardest case for live continuation: every step's second and later offspring are rebuilt by replay).
Rows, all measured in one run with repetitions interleaved:

- "linear in T": wall(T=2t) / wall(T=t) for each program kind (2.0 is linear; 4.0 quadratic);
- "async vs sync": wall(async) / wall(sync) at the largest T (the async program must continue live
  too: before the engine rewrite it replayed its whole past at every step, 45x the sync program).

What bounds "linear in T" here: at near-uniform weights an unbiased resampler still gives ~2.5%
of the particles a second offspring every step, and each is rebuilt by replaying its whole past, so
the run costs L·T live steps plus R·T² replayed ones. With L and R the live and replay work at T,
wall(2T)/wall(T) = (2L + 4R)/(L + R), which stays ≤ 2.3 only while R ≤ 0.18·L: with a continued
step at 12-17 µs that is ≤ ~1 µs per replayed step, where a replayed event costs 2.3-3.1 µs in situ
(1.05 µs replayed hot: the replay walks events scattered over the run's memory). Without
resampling both program kinds are linear (2.0 and 1.75 in one quiet-host run).

The same toy under `policies.VectorizedSMC` (N = 10,000, resampling every step), written two ways:
"restart" (the plain program: a resampling restarts it and replays the statements so far, so the
run is quadratic in T by design) and "explicit steps" (`total = yield total`: a resampling gathers
the yielded state and the program goes on; linear).

`--baseline DIR` also times the same workloads with the code checked out in DIR (e.g. a worktree
of an older commit: `git worktree add /tmp/old <commit>`), in its own subprocess, for before → after.

    python -m bench.engine_scaling [--n 100] [--steps 200 400] [--repeats 3] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_programs(steps: int):
    """The toy model of bench/toy_programs.py as a plain and as an async program."""
    toys = _sibling("toy_programs")  # by path: the baseline child imports this file by path too
    return {"sync": toys.toy_program(steps), "async": toys.async_toy_program(steps)}


def time_once(kind: str, n: int, steps: int, seed: int = 0) -> float:
    import policies

    program = make_programs(steps)[kind]
    start = time.perf_counter()
    policies.SMC(num_particles=n, ess_threshold=1.0, seed=seed).run(program)
    return time.perf_counter() - start


def measure(n: int, steps: list[int], repeats: int) -> dict[str, float]:
    """Median wall time of every (kind, T), repetitions interleaved."""
    import statistics

    interleaved, median = _sibling("common").interleaved, statistics.median
    fns = {f"{kind}@{t}": (lambda k=kind, t=t: time_once(k, n, t)) for t in steps for kind in ("sync", "async")}
    times = interleaved(fns, repeats=repeats, warmup=False)
    return {name: median(ts) for name, ts in times.items()}


VECTOR_N = 10_000


def time_vectorized(kind: str, n: int, steps: int, seed: int = 0) -> float:
    import policies

    toys = _sibling("toy_programs")
    program = toys.toy_program(steps) if kind == "restart" else toys.toy_steps_program(steps)
    start = time.perf_counter()
    policies.VectorizedSMC(num_particles=n, ess_threshold=1.0, seed=seed).run(program)
    return time.perf_counter() - start


def measure_vectorized(n: int, steps: list[int], repeats: int) -> dict[str, float]:
    import statistics

    fns = {f"{kind}@{t}": (lambda k=kind, t=t: time_vectorized(k, n, t))
           for t in steps for kind in ("restart", "explicit steps")}
    times = _sibling("common").interleaved(fns, repeats=repeats, warmup=False)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _sibling(name: str):
    """bench/<name>.py of this checkout (the baseline child imports this file by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _baseline(directory: str, n: int, steps: list[int], repeats: int) -> dict[str, float]:
    """The same workloads timed with the packages of another checkout (this file's code, that
    checkout's swarm and policies), in a child process."""
    code = (f"import json, sys, importlib.util; sys.path.insert(0, {directory!r}); "
            f"spec = importlib.util.spec_from_file_location('engine_scaling', {__file__!r}); "
            "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); "
            f"print(json.dumps(mod.measure({n}, {steps!r}, {repeats})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=directory, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(n: int = 100, steps: tuple[int, ...] = (200, 400), repeats: int = 3, baseline: str | None = None) -> list[dict]:
    from bench.common import row

    steps = sorted(steps)
    now = measure(n, steps, repeats)
    rows = []
    lo, hi = steps[0], steps[-1]
    for kind in ("sync", "async"):
        rows.append(row("engine scaling", f"{kind} SMC N={n}, resample every step: wall T={hi} / T={lo}",
                        now[f"{kind}@{hi}"], now[f"{kind}@{lo}"], "s", better="lower",
                        note=f"goal <= 2.3 (linear {hi / lo:.1f})"))
    rows.append(row("engine scaling", f"async / sync program, N={n}, T={hi}", now[f"async@{hi}"], now[f"sync@{hi}"],
                    "s", better="lower", note="goal <= 1.5"))
    vector = measure_vectorized(VECTOR_N, steps, repeats)
    for kind, note in (("restart", "quadratic by design (4.0)"), ("explicit steps", f"linear {hi / lo:.1f}")):
        rows.append(row("engine scaling", f"VectorizedSMC N={VECTOR_N:,}, {kind}, resample every step: wall T={hi} / "
                        f"T={lo}", vector[f"{kind}@{hi}"], vector[f"{kind}@{lo}"], "s", better="lower", note=note))
    if baseline:
        before = _baseline(baseline, n, [lo], 1)
        for kind in ("sync", "async"):
            rows.append(row("engine scaling", f"{kind} SMC N={n} T={lo}: this code vs {Path(baseline).name}",
                            now[f"{kind}@{lo}"], before[f"{kind}@{lo}"], "s", better="lower",
                            note="before -> after, same run"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 400])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default=None)
    args = parser.parse_args()
    for r in run(args.n, tuple(args.steps), args.repeats, args.baseline):
        print(f"{r['case']:<70} {r['value']:>9.3f} vs {r['baseline']:>9.3f} {r['unit']}  ratio {r['ratio']:.2f}  {r['note']}")


if __name__ == "__main__":
    main()
