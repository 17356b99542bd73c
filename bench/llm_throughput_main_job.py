"""The main job end to end: `examples/constrained_smc.py` with its defaults (SMC, N=24, seed 0), on
this tree against a baseline tree (default: the commit before the batched backend), repetitions
interleaved (baseline, this, this, baseline, …), each in a fresh subprocess, medians reported.

- SMC time: the wall time of the example's `run_smc` (progress display and trace file included;
  the model is loaded inside it on both sides); the best-of-N comparison is skipped (--no-baseline).
- Prefilled tokens per generated token (this tree only): prompt tokens the backend evaluated over
  the tokens it generated, against the prompt tokens the calls sent (what a backend without a prefix
  cache would evaluate), both from the same run.

The baseline tree is extracted with `git archive REF` into a temporary directory and run with the
same interpreter (the same llama-cpp-python), so only the repository's code differs.

Measured (shared 2-core AMD EPYC, medians of 3): SMC time 17.5 s vs 52.4 s (ratio 0.335) at load
average 12.6, and 7.8 s vs 26.2 s (ratio 0.298) at 7.4 after the sampling and cache fixes; prefilled
per generated token 0.10-0.11 (29-34 prompt tokens evaluated for 297 generated, where the calls sent
8,221). The same result (log Z -4.3694) in every run of this tree.

    python -m bench.llm_throughput_main_job [--repeats 3] [--baseline-ref f425e4b]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from bench.common import REPO_ROOT, median, progress, row

BASELINE_REF = "f425e4b"
"""main as merged into the batched backend's branch: the one-request-at-a-time LlamaCpp (2-token
decode steps, no batching, no prefix sharing across requests) with constraints in its own loop, and
the same main job (a constrained proposal). `c501006` is main before constraints (an unconstrained
main job: not the same work)."""

CHILD = r"""
import json, sys, tempfile, time
import examples.constrained_smc as ex
timing = {}
run_smc = ex.run_smc
def timed(args, out):
    start = time.perf_counter()
    try:
        return run_smc(args, out)
    finally:
        timing["smc_s"] = time.perf_counter() - start
ex.run_smc = timed
with tempfile.TemporaryDirectory() as out:
    summary = ex.main(["--no-baseline", "--out", out])
try:
    from agents.backends import default_backend
except ImportError:  # trees before agents.hosting was dissolved
    from agents.hosting import default_backend
backend = default_backend()
stats = backend.stats() if hasattr(backend, "stats") else {}
print("BENCH " + json.dumps({**timing, "log_evidence": summary["log_evidence"], "tokens": summary["tokens"],
                              "stats": stats}))
"""


def _tree(ref: str, into: str) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", ref], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return Path(into)


def _run(tree: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"the main job failed in {tree}:\n" + "\n".join(proc.stderr.splitlines()[-15:]))
    line = next(x for x in proc.stdout.splitlines() if x.startswith("BENCH "))
    return json.loads(line[len("BENCH "):])


def run(repeats: int = 3, baseline_ref: str = BASELINE_REF) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"baseline": _tree(baseline_ref, tmp), "this": REPO_ROOT}
        got: dict[str, list[dict]] = {"baseline": [], "this": []}
        for r in range(repeats):
            for name in (("baseline", "this") if r % 2 == 0 else ("this", "baseline")):
                progress(f"main job: {name} tree, repeat {r + 1}/{repeats}")
                got[name].append(_run(trees[name]))
    new, old = (median([g["smc_s"] for g in got[k]]) for k in ("this", "baseline"))
    last = got["this"][-1]["stats"]
    generated = last.get("completion_tokens", 0)
    sent = last.get("reused_tokens", 0) + last.get("prefilled_tokens", 0)
    load = os.getloadavg()[0]
    rows = [row("llm throughput (main job)", f"constrained_smc SMC time: this vs {baseline_ref}", new, old, "s",
                better="lower", note=f"median of {repeats}, interleaved, fresh processes; load average {load:.1f} on "
                                     f"{os.cpu_count()} cores; goal ratio <= 0.33 (3x faster)")]
    if generated:
        rows.append(row("llm throughput (main job)", "prefilled tokens per generated token (vs sent per generated)",
                        last["prefilled_tokens"] / generated, sent / generated, "tokens", better="lower",
                        note=f"{last['prefilled_tokens']} prefilled, {sent} sent, {generated} generated in the last "
                             f"run; {last.get('evictions', 0)} evictions; goal <= 0.2"))
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    args = parser.parse_args(argv)
    rows = run(args.repeats, args.baseline_ref)
    for r in rows:
        print(f"{r['case']:<62} {r['value']:8.2f} vs {r['baseline']:8.2f} {r['unit']}  ratio {r['ratio']:.3f}  {r['note']}")
    return rows


if __name__ == "__main__":
    main()
