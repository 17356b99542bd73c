"""Render bench/results.json as bench/RESULTS.md: the machine, the date, one table per benchmark
(each figure with its same-run baseline and the ratio), and where we are behind."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import subprocess
import time
from typing import Any

from bench.common import REPO_ROOT, bench_python

STANDARD = ("case", "value", "baseline", "ratio")


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return math.nan


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _peer_versions() -> str:
    exe = bench_python()
    if exe is None:
        return ".venv-bench not installed"
    code = ("import importlib.metadata as m; print(', '.join(f'{d} {m.version(d)}' for d in "
            "('its-hub', 'langgraph', 'openai')))")
    try:
        return subprocess.run([str(exe), "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO_ROOT).stdout.strip()
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "ram_gib": round(_ram_gib(), 1),
            "python": platform.python_version(), "numpy": _version("numpy"),
            "llama_cpp_python": _version("llama_cpp_python"), "openai": _version("openai"),
            "ray": _version("ray"), "peers": _peer_versions(), "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_now": " ".join(f"{x:.1f}" for x in os.getloadavg())}


def _num(x: Any) -> str:
    if isinstance(x, str):
        return x
    if x is None:
        return ""
    if isinstance(x, (list, tuple, dict)):
        return str(x)
    if isinstance(x, bool) or isinstance(x, int):
        return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else str(x)
    if not math.isfinite(x):
        return "n/a"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 0.01 or a == 0:
        return f"{x:.3f}"
    return f"{x:.2e}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _standard_table(rows: list[dict]) -> list[str]:
    out = ["| case | value | baseline | ratio | unit | better | note |", "|---|---:|---:|---:|---|---|---|"]
    for r in rows:
        better = r.get("better") or ("lower" if r.get("unit") in ("s", "ms", "us/msg", "s/problem") else "higher")
        out.append(f"| {_cell(r['case'])} | {_num(r['value'])} | {_num(r['baseline'])} | **{_num(r['ratio'])}** | "
                   f"{_cell(r.get('unit', ''))} | {better} | {_cell(r.get('note', ''))} |")
    return out


def _generic_table(rows: list[dict]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        out.append("| " + " | ".join(_cell(_num(r.get(k))) for k in keys) + " |")
    return out


def _find(results: dict, bench: str, needle: str) -> dict | None:
    for r in results["benchmarks"].get(bench, {}).get("rows", []):
        if needle in str(r.get("case", "")):
            return r
    return None


def _fig(r: dict | None, fmt: str = "{:.2f}") -> str:
    return fmt.format(r["ratio"]) if r and isinstance(r.get("ratio"), float) else "(not measured in this run)"


def _latency_item(results: dict) -> str:
    """Latency hiding against issue 12's and 14's goals: SMC over HTTP ≤ 1.3x the floor client,
    the in-process 50 ms double ≤ 2.0x ideal at N=2,048."""
    sizes = ("256", "1,024", "2,048")
    floor = [_find(results, "latency_hiding", f"N={n} HTTP 50 ms endpoint vs floor") for n in sizes]
    inproc = [_find(results, "latency_hiding", f"N={n} in-process 50 ms double vs ideal") for n in sizes]
    transport = _find(results, "latency_hiding", "N=2,048 OpenAICompatible alone")
    pool = _find(results, "latency_hiding", "N=2,048 HttpPool alone")
    cpu = _find(results, "latency_hiding", "N=2,048 client CPU per request: smc http")
    return ("**Latency hiding: the engine's CPU per particle-step at thousands of particles** (SMC over a 50 ms HTTP "
            "endpoint / a minimal asyncio keep-alive client sending the same requests, N=256 / 1,024 / 2,048: "
            f"{' / '.join(_fig(r) for r in floor)}, goal 1.3; at N=2,048 the connection pool alone: {_fig(pool)}, "
            f"the whole transport alone: {_fig(transport)}; "
            f"client CPU per request at N=2,048, SMC / the floor client: {_fig(cpu)}; the "
            f"in-process 50 ms double / ideal: {' / '.join(_fig(r) for r in inproc)}, goal 2.0 at N=2,048). The "
            "transport is a keep-alive pool of asyncio protocols (replies framed in `data_received`) with orjson "
            "bodies and one timer for all deadlines, at the floor client's CPU per request; above it are building "
            "the request and parsing the reply into a `Completion` (15-30 µs a call at N=2,048) and "
            "Python per particle-step (the handler stack, the trace event, the greenlet switch: tens of "
            "microseconds), which at N=2,048 adds up to more than "
            "the 50 ms the particles wait. *Plan:* one request object per step instead of a copy per particle, "
            "events appended to the population's arrays instead of per-particle objects, and the per-call "
            "bookkeeping (cache key, journal line) computed once per sibling group.")


def _ratio(r: dict | None) -> float | None:
    return r["ratio"] if r and isinstance(r.get("ratio"), float) else None


def _throughput_item(results: dict) -> str | None:
    """The in-process LLM path against issue 13's goals, when a measured one is missed: SMC through
    `Agent` ≥ 0.8 × llama.cpp's own batched decode (the anchor), the main job ≥ 3× faster than before
    the batched backend, ≤ 0.2 prefilled tokens per generated token."""
    anchor = _find(results, "llm_throughput", "Agent in SMC vs batched anchor (1 thr)")
    job = _find(results, "llm_throughput_main_job", "SMC time")
    prefill = _find(results, "llm_throughput_main_job", "prefilled tokens per generated")
    missed = [(_ratio(anchor) or 1.0) < 0.8, (_ratio(job) or 0.0) > 1 / 3,
              isinstance((prefill or {}).get("value"), float) and prefill["value"] > 0.2]
    if not any(missed):
        return None
    prefilled = f"{prefill['value']:.2f}" if prefill and isinstance(prefill.get("value"), float) else "(not measured)"
    return (f"**In-process LLM throughput against its goals** (Agent in SMC N=16 / llama.cpp's own batched decode "
            f"of 16 sequences: {_fig(anchor)}, goal 0.8; the main job's SMC time / the one-request-at-a-time backend's: "
            f"{_fig(job)}, goal 0.33; prefilled tokens per generated token: {prefilled}, goal 0.2). Every request in "
            "flight is already decoded in one `llama_decode` per step with shared KV prefixes; what separates SMC "
            "from the anchor is its shape: each word step waits for its longest word, so a step's batch narrows "
            "(widths like 16, 7, 2, 1), prompt text is re-tokenized where the drawn tokens tokenize differently "
            "(the API passes text), and sampling and gathering run in Python on the decode thread. *Plan:* continue "
            "a particle's sequence from its drawn token ids when its text round-trips (nothing re-evaluated), sample "
            "the batch's rows in one vectorised pass, and let requests of other agents and programs fill the narrow "
            "tail of a word step.")


def _threads_note(results: dict) -> str:
    single = _find(results, "llm_throughput_threads", "single, 2 threads vs 1 (no extra load)")
    batched = _find(results, "llm_throughput_threads", "batched x16, 2 threads vs 1 (no extra load)")
    loaded = _find(results, "llm_throughput_threads", "single, 2 threads vs 1 (another process")
    def times(r: dict | None) -> str:
        return f"{_fig(r)}x" if _ratio(r) is not None else _fig(r)
    return (f"Also measured: llama.cpp with 2 threads ran at {times(single)} (one sequence) and {times(batched)} "
            f"(16 batched) the tokens/s of 1 thread with both cores free, and at {times(loaded)} with another "
            "process on a core (bench/llm_throughput_threads.py: llama.cpp's threads meet at a barrier after every "
            "operation, so a step waits for a descheduled thread). `LlamaCpp` defaults to 1 thread, the safe "
            "choice on a shared machine; where cores are reserved for the model, pass `n_threads` (measured "
            "here: faster when the cores are free).")


def _core_item(results: dict) -> str:
    loop = [_find(results, "core_overhead", f"SMC N={n} vs python loop") for n in ("1,000", "100,000")]
    vector = [_find(results, "core_overhead", f"N={n} VectorizedSMC vs python loop") for n in ("1,000", "100,000")]
    return (f"**Core overhead against a hand-written loop** (particle-steps/s / a plain-Python SMC loop on the same "
            f"toy model). `SMC`: N=1,000 {_fig(loop[0], '{:.3f}')}, N=100,000 {_fig(loop[1], '{:.3f}')}: every "
            "particle-step runs a Python program through the handler stack, records trace events and, after "
            "resampling, replays or resumes a greenlet; the loop does one `rng.random()`. It is invisible next to an "
            "LLM call (orchestration: tens of microseconds per message, against LangGraph's hundreds) but bounds "
            "pure-Python models at ~10^4-10^5 particle-steps/s per core. `VectorizedSMC`, the same program run once "
            f"for the whole population (numeric programs written for arrays): N=1,000 {_fig(vector[0], '{:.2f}')}, "
            f"N=100,000 {_fig(vector[1], '{:.2f}')}; what is left there is building the N final `Particle`s.")


def _peer_item(results: dict) -> str:
    rows = results["benchmarks"].get("peer_its_hub", {}).get("rows", [])
    walls = [r for r in rows if "(wall)" in r.get("case", "")]
    per_token = {r["case"].replace(" (wall per generated token)", ""): r for r in rows
                 if "(wall per generated token)" in r.get("case", "")}

    def pair(r: dict) -> str:
        return f"{r['case'].split(':')[0]} {r['case'].split('plp-swarm ')[1].split(' vs')[0]}"

    def per_token_of(r: dict) -> str:
        t = per_token.get(r["case"].replace(" (wall)", ""))
        return f"; {_num(t['ratio'])}x per generated token" if t else ""

    wall_txt = ", ".join(f"{_num(r['ratio'])}x ({pair(r)}{per_token_of(r)})" for r in walls) or "(not measured in this run)"
    cost = _find(results, "peer_its_hub", "with logprobs vs without")
    slower = [r for r in walls if isinstance(r.get("ratio"), float) and r["ratio"] > 1.0]
    verdict = ("slower on " + ", ".join(pair(r) for r in slower)) if slower else "not slower on any task"
    return (f"**Against its-hub on the same llama.cpp server** (our wall time per problem / its-hub's: {wall_txt}; "
            f"{verdict} in this run). Both sides wait on one single-threaded llama.cpp server, one request at a "
            "time, so the ratio follows the tokens each side makes the server process: on the pairs that run the "
            "same algorithm (BestOfN, SelfConsistency) it follows the lengths each side's random samples happen "
            "to have (the per-token figure takes that out), and it can be well below 1 only where the algorithms "
            "differ in what they make the server generate (SMC). plp-swarm asks for log-probabilities only where a "
            f"weight needs them (a call with them costs {_fig(cost)}x on this server) and draws words with a short "
            "look-ahead. *Plan:* for word steps, the next word's first token taken from the look-ahead's surplus "
            "(exact with its q(boundary) correction) instead of redrawn.")


def _scaling_item(results: dict) -> str:
    """Issue 12's "linear in T" (SMC, resampling every step: wall(T=400)/wall(T=200) ≤ 2.3)."""
    sync = _find(results, "engine_scaling", "sync SMC N=100, resample every step")
    asyn = _find(results, "engine_scaling", "async SMC N=100, resample every step")
    steps = _find(results, "engine_scaling", "explicit steps, resample every step")
    return (f"**Linear in T when every step resamples** (toy SMC N=100, wall(T=400) / wall(T=200): plain program "
            f"{_fig(sync)}, async {_fig(asyn)}; goal 2.3, linear 2.0). Surviving particles continue live; the second "
            "and later offspring of a resampled parent are rebuilt by replaying their past (~2.5% of the particles a "
            "step at near-uniform weights, as any unbiased resampler must), so a run of T steps replays O(T²) "
            "statements: at T=400, 200k replayed statements against 40k live ones. A Python execution cannot be "
            "copied, so each duplicate at step t costs t replayed steps whatever the engine does; 2.3 needs a "
            "replayed statement under ~0.5 µs, about what the toy's own Python costs per statement (an f-string, a "
            "`Bernoulli`). Where a step is an LLM call the replay is microseconds against milliseconds and this does "
            "not show. `VectorizedSMC` with explicit steps (resampling gathers the yielded state, nothing is "
            f"replayed): {_fig(steps)}. *Plan:* none that keeps arbitrary Python programs; numeric programs "
            "written for `VectorizedSMC` with explicit steps avoid replay.")


def _overheads_item(results: dict) -> str:
    """Checkpoints (issue 12: ≤ 1.1x the run without) and serving at 64 clients (issue 16: ≤ 10%)."""
    ckpts = [r for r in results["benchmarks"].get("checkpoint_cost", {}).get("rows", [])
             if "checkpoint every step" in str(r.get("case", "")) and "2048" in str(r.get("case", ""))]
    ckpt = next((r for r in ckpts if " ms agent" not in r["case"]), None)
    slow = next((r for r in ckpts if " ms agent" in r["case"]), None)
    slow_txt = f"; with a {slow['case'].split(', ')[1].split(' agent')[0]} agent: {_fig(slow)}" if slow else ""
    one = _find(results, "serve_overhead", "served c=64 p50 latency")
    two = _find(results, "serve_overhead", "served 2 workers c=64 p50 latency")
    return (f"**Per-step and per-request overheads** (SMC N=2,048 with a checkpoint every step / without, agent "
            f"answering at once: {_fig(ckpt)}{slow_txt}; goal 1.1; `swarm serve` p50 latency / calling "
            f"`policy.run_async` at 64 concurrent clients: one worker {_fig(one)}, `--workers 2` {_fig(two)}, goal "
            "1.10). A checkpoint appends the step's new trace nodes and one journal line per LLM call (written "
            "before the call returns, so a killed driver repeats no call; orjson where it writes what json "
            "does); one server process runs every request on one event loop, so at 64 clients on 2 cores its "
            "HTTP and JSON work competes with the runs. *Plan:* an opt-in journal written once per step (a "
            "killed driver may then repeat the calls of the step it died in: a weaker guarantee, so not the "
            "default), and a cheaper request path (response models built without validation).")


def behind(results: dict) -> list[str]:
    """Where we are behind a goal, a peer or the ideal, with a plan (figures from this run)."""
    items = [_latency_item(results), _throughput_item(results) or _core_item(results), _scaling_item(results),
             _overheads_item(results), _peer_item(results)]
    lines = ["## Where we are behind, and the plan", ""]
    lines += [f"{i}. {text}" for i, text in enumerate(items, 1)]
    lines += ["", _threads_note(results), ""]
    return lines


def render(results: dict) -> str:
    m = results.get("machine", {})
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m bench` (bench/run.py); rerun it to refresh. Every figure is a ratio "
        "`value / baseline` against a baseline measured **in the same run** (repetitions interleaved with the "
        "candidate and medians reported where the benchmark repeats). `better` says which direction is good for "
        "`value`.",
        "",
        f"**Machine.** 2 cores (load average {m.get('load_before', '?')} at the start, {m.get('load_now', '?')} at "
        "the end; above ~2, other jobs shared them). Within a benchmark the candidate, its baseline and any local "
        "server or clients share those cores, so absolute times are noisy; ratios of interleaved repetitions are "
        "the figures to read.",
        "",
        "| machine | |", "|---|---|",
        f"| CPU | {m.get('cpu', '?')} |", f"| cores | {m.get('cores', '?')} |", f"| RAM | {m.get('ram_gib', '?')} GiB |",
        f"| Python | {m.get('python', '?')} |", f"| numpy | {m.get('numpy', '?')} |",
        f"| llama-cpp-python | {m.get('llama_cpp_python', '?')} |", f"| openai / ray | {m.get('openai', '?')} / {m.get('ray', '?')} |",
        f"| peers (.venv-bench) | {m.get('peers', '?')} |", f"| commit | {m.get('commit', '?')} |",
        f"| date | {m.get('date', '?')} |", "",
    ]
    lines += behind(results)
    order = results.get("order") or list(results["benchmarks"])
    for name in order:
        entry = results["benchmarks"].get(name)
        if entry is None:
            continue
        lines += [f"## {name}", "", f"{entry.get('what', '')}. Mode {entry['mode']}, run {entry['date']}, "
                  f"{entry['seconds']:.0f} s, status: {entry['status']}. Source: `bench/{name}.py`.", ""]
        rows = entry.get("rows") or []
        if rows:
            standard = all(all(k in r for k in STANDARD) for r in rows)
            lines += _standard_table(rows) if standard else _generic_table(rows)
            lines.append("")
    return "\n".join(lines) + "\n"
