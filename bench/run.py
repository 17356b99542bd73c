"""Run every benchmark and write bench/RESULTS.md.

    python -m bench                    # everything, full sizes (about 20-30 minutes on 2 cores)
    python -m bench --quick            # a fast subset of every benchmark (small sizes)
    python -m bench --only latency_hiding --only orchestration
    python -m bench --list

Each benchmark runs in its own subprocess (`python -m bench.run --child NAME`), so Ray instances,
loaded models, servers and event loops never leak from one into the next, and one failure is
recorded as a note instead of ending the run. A benchmark whose module is absent (another
helper's, not landed yet) is skipped with a note. Before anything runs, the libraries the chosen
benchmarks import (found in their source, `missing_libraries`) are checked: a missing one stops
the run at once, naming it and the command that installs it (`bash scripts/setup.sh --bench`),
instead of a benchmark failing half an hour in. Rows are kept in bench/results.json (one entry
per benchmark, with its date and mode), from which bench/RESULTS.md is rendered: `--only` updates
its benchmarks and keeps the others' last figures, each labelled with the run it came from.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_JSON = BENCH_DIR / "results.json"
RESULTS_MD = BENCH_DIR / "RESULTS.md"


@dataclass
class Benchmark:
    name: str
    """Module name in bench/."""
    what: str
    quick: dict[str, Any] = field(default_factory=dict)
    full: dict[str, Any] = field(default_factory=dict)
    entry: str = "run"
    """"run": run(**kwargs) -> rows; "main_argv": main(argv list) -> rows; "main": main(**kwargs)."""
    timeout_s: float = 3600.0


BENCHMARKS: list[Benchmark] = [
    Benchmark("core_overhead", "particle-steps/s of SMC and VectorizedSMC on a 10-step toy program vs plain-Python and numpy SMC loops",
              quick={"sizes": (1_000,), "repeats": 3}, full={"sizes": (1_000, 100_000), "repeats": 3}),
    Benchmark("engine_scaling", "SMC wall time at T=400 vs T=200 steps, resampling every step: sync and async programs, "
              "and VectorizedSMC restarted vs with explicit steps",
              quick={"n": 50, "steps": (50, 100), "repeats": 1}, full={"n": 100, "steps": (200, 400), "repeats": 3}),
    Benchmark("engine_memory", "bytes a chat agent's trace keeps per particle at 10/20/40 turns; VectorizedSMC's peak "
              "memory vs its data", quick={"particles": 10, "turns": (5, 10), "vector_n": 10_000, "vector_steps": 50},
              full={"particles": 50, "turns": (10, 20, 40), "vector_n": 100_000, "vector_steps": 200}),
    Benchmark("ray_traffic", "bytes shipped per step under runtime='ray', last step vs step 1 (debate-shaped program)",
              quick={"particles": 10, "rounds": 3}, full={"particles": 40, "rounds": 6}),
    Benchmark("resampling_kernels", "resampling N particles vs numpy Generator.choice(p=w)",
              quick={"n": 100_000, "repeats": 3}, full={"n": 1_000_000, "repeats": 7}),
    Benchmark("llm_throughput", "tokens/s: raw llama.cpp one sequence, llama.cpp's batched decode of 16 (the anchor), "
              "Agent in SMC N=16 over words, at 1 and 2 threads",
              quick={"repeats": 1, "particles": 16, "threads": (1,)}, full={"repeats": 3, "particles": 16, "threads": (1, 2)}),
    Benchmark("llm_throughput_main_job", "the main job (examples/constrained_smc.py defaults): SMC time vs the "
              "one-request-at-a-time LlamaCpp, and prefilled tokens per generated token",
              quick={"repeats": 1}, full={"repeats": 3}),
    Benchmark("llm_throughput_threads", "raw llama.cpp with 2 threads vs 1, one sequence and batched x16, with and "
              "without another process on a core", quick={"repeats": 1, "tokens": 16}, full={"repeats": 3, "tokens": 32}),
    Benchmark("latency_hiding", "SMC wall time with a 50 ms LLM (in-process double and HTTP fake endpoint) vs ideal",
              quick={"sizes": (256,), "repeats": 1}, full={"sizes": (256, 1024, 2048), "repeats": 3}),
    Benchmark("orchestration", "per-message overhead of an N agents x K messages fan-out: plp-swarm, asyncio, LangGraph",
              quick={"n_agents": 20, "n_messages": 5, "repeats": 3}, full={"n_agents": 100, "n_messages": 10, "repeats": 5}),
    Benchmark("policies_quality", "success per generated-token budget: BestOfN, SelfConsistency, SMC, TwistedSMC",
              quick={"n_problems": 1}, full={"n_problems": 6}),
    Benchmark("constraints_quality", "lipograms: constrained-proposal SMC vs guarantee-only SMC vs best-of-8 at equal tokens",
              quick={"n_topics": 1}, full={"n_topics": 12}, timeout_s=7200.0),
    Benchmark("constraint_masks", "token-mask cost on the 49k vocabulary: llguidance vs outlines-core; guide vs decode",
              quick={"repeats": 1}, full={"repeats": 5}),
    Benchmark("peer_its_hub", "the quality tasks through its-hub vs plp-swarm on one llama.cpp server",
              quick={"problems": 1, "n": 4}, full={"problems": 8, "n": 6}),
    Benchmark("ray_scaling", "SMC over Ray with a 50 ms fake agent vs ideal", entry="main_argv",
              quick={"argv": ["--sizes", "16", "256", "--calls", "50"]}, full={"argv": []}),
    Benchmark("checkpoint_cost", "SMC with checkpoints every step vs without", entry="main_argv",
              quick={"argv": ["--sizes", "256", "--repeats", "1"]},
              full={"argv": ["--sizes", "256", "2048", "--latency", "0", "0.05"]}),
    Benchmark("otel_overhead", "OpenTelemetry exporters on vs off", entry="main",
              quick={"particles": 50, "repeats": 1}, full={}),
    Benchmark("soak", "long SMC runs with injected faults: accounting and memory", entry="main",
              quick={"sizes": (1000,), "steps": 10}, full={}),
    Benchmark("serve_overhead", "swarm serve vs policy.run_async at 1/8/64 clients, 50 ms fake backend; Starlette/FastAPI, sse-starlette, httptools/h11",
              quick={"quick": True}, full={}),
    Benchmark("mcp_overhead", "MCP tool calls vs the SDK; MCP vs Python tool", quick={"calls": 20, "particles": 16, "repeats": 3}, full={}),
    Benchmark("human_pause", "SMC paused for a person and resumed vs the uninterrupted run given the answer",
              quick={"sizes": (256,), "shares": (1.0,), "repeats": 2}, full={}),
]
BY_NAME = {b.name: b for b in BENCHMARKS}


# ------------------------------------------------------------------------------- child side
def _call(bench: Benchmark, mode: str) -> list[dict[str, Any]]:
    module = importlib.import_module(f"bench.{bench.name}")
    kwargs = dict(bench.quick if mode == "quick" else bench.full)
    if bench.entry == "run":
        return module.run(**kwargs)
    if bench.entry == "main_argv":
        return module.main(list(kwargs.get("argv", [])))
    return module.main(**kwargs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def child(name: str, mode: str, out: Path) -> None:
    rows = _call(BY_NAME[name], mode)
    out.write_text(json.dumps(_jsonable(rows)))


# ------------------------------------------------------------------------------ parent side
PROJECT_PACKAGES = frozenset({"swarm", "agents", "policies", "observability", "bench", "examples", "tests"})
SETUP_HINT = "bash scripts/setup.sh --bench"


def _local_modules() -> frozenset[str]:
    """Modules that are files of this repository, imported by path (bench/toy_programs.py by a
    child script, examples/arithmetic_work.py by bench/tasks.py)."""
    root = BENCH_DIR.parent
    return frozenset(p.stem for folder in ("bench", "examples") for p in (root / folder).glob("*.py"))


def imported_libraries(name: str) -> set[str]:
    """The top-level third-party modules bench/<name>.py imports, anywhere in it (imports inside
    functions included), and those of the bench modules it imports, transitively. Standard library
    and this repository's own modules are left out. Scripts that run in .venv-bench
    (its_hub_side.py, orchestration_langgraph.py) are started by path, not imported, so their
    libraries (its_hub, langgraph) are not counted."""
    local, seen, todo, found = _local_modules(), set(), [name], set()
    while todo:
        module = todo.pop()
        if module in seen or not (BENCH_DIR / f"{module}.py").exists():
            continue
        seen.add(module)
        for node in ast.walk(ast.parse((BENCH_DIR / f"{module}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # from .x import y / from . import x
                    todo += [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                    continue
                names = [node.module or ""]
                if node.module == "bench":
                    todo += [alias.name for alias in node.names]
            else:
                continue
            for full in names:
                top, _, rest = full.partition(".")
                if top == "bench" and rest:
                    todo.append(rest.split(".")[0])
                elif top and top not in sys.stdlib_module_names and top not in PROJECT_PACKAGES and top not in local:
                    found.add(top)
    return found


def missing_libraries(benches: list[Benchmark]) -> dict[str, list[str]]:
    """{benchmark: the libraries it imports that this interpreter cannot find}, only those with any."""
    missing = {}
    for bench in benches:
        absent = sorted(m for m in imported_libraries(bench.name) if importlib.util.find_spec(m) is None)
        if absent:
            missing[bench.name] = absent
    return missing


def _available(bench: Benchmark) -> bool:
    return importlib.util.find_spec(f"bench.{bench.name}") is not None


def run_benchmark(bench: Benchmark, mode: str, log: Callable[[str], None]) -> dict[str, Any]:
    """One benchmark in a subprocess: {"rows", "status", "seconds", "mode", "date"}."""
    entry = {"mode": mode, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": []}
    if not _available(bench):
        return {**entry, "status": f"skipped: bench/{bench.name}.py is not in this checkout", "seconds": 0.0}
    out = BENCH_DIR / f".{bench.name}.rows.json"
    out.unlink(missing_ok=True)
    log(f"{bench.name} ({mode}) ...")
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.run", "--child", bench.name, "--mode", mode,
                               "--out", str(out)], cwd=BENCH_DIR.parent, timeout=bench.timeout_s,
                              stdout=subprocess.PIPE, stderr=None, text=True)
        status = "ok" if proc.returncode == 0 and out.exists() else f"failed: exit code {proc.returncode}"
    except subprocess.TimeoutExpired:
        status = f"failed: timed out after {bench.timeout_s:.0f} s"
    seconds = time.perf_counter() - start
    if out.exists():
        entry["rows"] = json.loads(out.read_text())
        out.unlink()
    log(f"{bench.name}: {status} in {seconds:.0f} s, {len(entry['rows'])} rows")
    return {**entry, "status": status, "seconds": seconds}


def load_results() -> dict[str, Any]:
    if RESULTS_JSON.exists():
        return json.loads(RESULTS_JSON.read_text())
    return {"benchmarks": {}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run the benchmarks; write bench/RESULTS.md.")
    parser.add_argument("--quick", action="store_true", help="small sizes: a fast subset of every benchmark")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.mode, Path(args.out))
        return 0
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name:<20} {'' if _available(b) else '(absent) '}{b.what}")
        return 0
    unknown = [n for n in args.only or [] if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(BY_NAME)}")
    from bench.report import machine_info, render

    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    missing = missing_libraries([b for b in chosen if _available(b)])
    if missing:
        listed = "; ".join(f"{name} imports {', '.join(libs)}" for name, libs in missing.items())
        print(f"python -m bench: missing libraries ({listed}); install them with `{SETUP_HINT}` "
              f"(or leave those benchmarks out with --only); nothing was run", file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    results = load_results() if args.only else {"benchmarks": {}}
    machine_before = machine_info()
    log = lambda message: print(f"[bench] {message}", file=sys.stderr, flush=True)  # noqa: E731
    for bench in chosen:
        results["benchmarks"][bench.name] = run_benchmark(bench, mode, log)
        results["benchmarks"][bench.name]["what"] = bench.what
        RESULTS_JSON.write_text(json.dumps(results, indent=1))
    results["machine"] = {**machine_info(), "load_before": machine_before["load_now"]}
    results["order"] = [b.name for b in BENCHMARKS]
    RESULTS_JSON.write_text(json.dumps(results, indent=1))
    RESULTS_MD.write_text(render(results))
    log(f"wrote {RESULTS_MD.relative_to(BENCH_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
