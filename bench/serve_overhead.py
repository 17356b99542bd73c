"""`swarm serve` overhead: requests/s and p50/p95 latency of the server against calling
`policy.run_async` directly, at 1, 8 and 64 concurrent clients, with a 50 ms fake backend.

    python -m bench.serve_overhead [--quick] [--only overhead|frameworks]

The served program is this file's `program` (SMC, 8 particles, 4 LLM steps and a final one, each
call 50 ms through the in-process `FakeLatencyBackend` test double), so a run takes ~0.2 s of
waiting plus the framework's CPU. Baseline: the same program under the same policy, called with
`await policy.run_async(...)` by `c` concurrent loops in this process. Candidate: `c` concurrent
HTTP clients (aiohttp, one connection each) against `swarm serve bench/serve_overhead.py:program`
in a subprocess, plain and `stream=true` responses. Each figure is the median over rounds in which
baseline and candidate alternate (`bench.common` explains why). The overhead target is ≤ 10%:
candidate p50 latency / baseline p50 ≤ 1.10 and requests/s ratio ≥ 0.91.

`--only frameworks` measures the two library choices of agents/serving/app.py with a trivial
handler (no run): FastAPI with a typed body and response model vs Starlette with the pydantic
parsing done by hand (requests/s), and sse-starlette's EventSourceResponse vs a bare Starlette
StreamingResponse sending the same 20 events (streamed responses/s).

On a shared machine the server, the clients and other jobs compete for the same cores; the
clients' own CPU (HTTP, JSON) is charged to the candidate. Figures are noisy: compare ratios.
"CPU per request" (the server process's user+system time, or the direct loop's process time,
divided by the requests) is the figure least disturbed by other jobs.

Figures: docs/serving.md ("Performance") and bench/RESULTS.md. History: the first version
(f9bde3b, load average 14-19) measured p50 +6.6% at 1 client, +44% at 8 and +38% at 64, about 1 ms
of it the engine's step records (a pydantic record per particle per step) that the server needed to
count completion tokens; a plain response now builds none (`RunListener.wants_steps`, output
tokens from `Diagnostics.output_tokens`, the run id from `Result.run_id`), and watches for its
client's disconnect only after `WATCH_AFTER_S`; `--workers 2` is measured at 64 clients.

Library choices, one run of `--only frameworks` (trivial handler, 8 clients, requests/s): Starlette 2358 vs FastAPI 1029
(2.3x); httptools 2358 vs h11 843 (2.8x); sse-starlette 637 vs a bare StreamingResponse 1070
streams of 20 events (0.6x: ~0.6 ms a stream, for keep-alive pings, disconnect handling and clean
shutdown, which long SMC runs need).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agents import Agent, ChatMessage
from bench.common import REPO_ROOT, progress, row, stop_process
from bench.fake_backend import FakeLatencyBackend
from swarm import factor, sample

LATENCY_S = 0.05
PARTICLES = 8
STEPS = 4
AGENT = Agent(name="bench", backend=FakeLatencyBackend(LATENCY_S))
MESSAGES = [{"role": "user", "content": "Say ok."}]
MODEL = "serve_overhead:program"


async def program(messages, steps: int = STEPS) -> str:
    """`steps` LLM calls of 50 ms, each followed by a factor (one SMC step each)."""
    text = ""
    for i in range(steps):
        text += await sample(f"s{i}", AGENT.generate(messages=messages, prefix=text, max_tokens=4))
        factor(f"f{i}", 0.0)
    return text


# -- the two sides ------------------------------------------------------------------------------------
async def _loops(concurrency: int, requests: int, one: Any) -> tuple[list[float], float]:
    """`concurrency` loops sharing `requests` calls of `one()`; (latencies, wall seconds)."""
    latencies: list[float] = []
    left = [requests]

    async def loop() -> None:
        while left[0] > 0:
            left[0] -= 1
            started = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def direct(concurrency: int, requests: int) -> tuple[list[float], float, float]:
    """(latencies, wall seconds, CPU seconds of this process): the baseline."""
    import policies

    policy = policies.SMC(num_particles=PARTICLES)
    messages = [ChatMessage(**m) for m in MESSAGES]
    cpu = time.process_time()
    latencies, wall = await _loops(concurrency, requests, lambda: policy.run_async(program, messages))
    return latencies, wall, time.process_time() - cpu


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds so far of process `pid` and its child processes (the workers of
    `--workers`), from Linux /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(process_cpu_s(int(child)) for child in children)


async def served(url: str, concurrency: int, requests: int, stream: bool, pid: int) -> tuple[list[float], float, float]:
    """(latencies, wall seconds, CPU seconds of the server process) of `requests` HTTP requests."""
    import aiohttp

    body = {"model": MODEL, "messages": MESSAGES, "stream": stream}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one() -> None:
            async with session.post(f"{url}/chat/completions", json=body) as response:
                data = await response.read()
                if response.status != 200 or (stream and b"[DONE]" not in data):
                    raise RuntimeError(f"swarm serve answered {response.status}: {data[:300]!r}")

        await one()  # warm the connection pool's first connection and the server
        cpu = process_cpu_s(pid)
        latencies, wall = await _loops(concurrency, requests, one)
        return latencies, wall, process_cpu_s(pid) - cpu


def start_server(workers: int = 1) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "observability.cli", "serve", f"{Path(__file__)}:program", "--particles",
           str(PARTICLES), "--port", "0", "--no-access-log", "--log-level", "warning", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    line = proc.stdout.readline() if proc.stdout else ""
    if " on http://" not in line:
        proc.kill()
        raise RuntimeError(f"swarm serve did not start: {line!r}")
    return proc, line.rsplit(" on ", 1)[1].strip()


def _stats(latencies: list[float], wall: float, cpu: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"rps": len(ordered) / wall, "p50": statistics.median(ordered) * 1e3,
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1e3, "cpu": cpu / len(ordered) * 1e3}


def overhead(concurrency: tuple[int, ...] = (1, 8, 64), rounds: int = 3, per_client: int = 8,
             stream_at: tuple[int, ...] = (8,), workers_at: tuple[int, ...] = (64,)) -> list[dict[str, Any]]:
    """Baseline and candidates alternate within each round; medians over rounds. Where the number
    of clients is in `workers_at`, `swarm serve --workers 2` is a third side."""
    proc, url = start_server()
    pair = start_server(workers=2) if set(workers_at) & set(concurrency) else None
    rows: list[dict[str, Any]] = []
    try:
        for c in concurrency:
            requests = max(c * per_client, 16)
            sides = {"direct": lambda: direct(c, requests), "served": lambda: served(url, c, requests, False, proc.pid)}
            if c in stream_at:
                sides["served stream"] = lambda: served(url, c, requests, True, proc.pid)
            if pair is not None and c in workers_at:
                sides["served 2 workers"] = lambda: served(pair[1], c, requests, False, pair[0].pid)
            results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
            for r in range(rounds):
                names = list(sides)[r % len(sides):] + list(sides)[:r % len(sides)]
                for name in names:
                    results[name].append(_stats(*asyncio.run(sides[name]())))
            med = {name: {k: statistics.median(s[k] for s in stats) for k in ("rps", "p50", "p95", "cpu")}
                   for name, stats in results.items()}
            progress(f"c={c}: " + "; ".join(f"{n} {m['rps']:.1f} req/s p50 {m['p50']:.0f} ms p95 {m['p95']:.0f} ms "
                                            f"CPU {m['cpu']:.2f} ms/req" for n, m in med.items()))
            base = med["direct"]
            for name in [n for n in med if n != "direct"]:
                note = f"{requests} requests, {rounds} rounds, SMC N={PARTICLES}, {STEPS} calls of 50 ms"
                rows += [row("serve_overhead", f"{name} c={c} requests/s", med[name]["rps"], base["rps"], "req/s",
                             note=note),
                         row("serve_overhead", f"{name} c={c} p50 latency", med[name]["p50"], base["p50"], "ms",
                             better="lower", note=note),
                         row("serve_overhead", f"{name} c={c} p95 latency", med[name]["p95"], base["p95"], "ms",
                             better="lower", note=note),
                         row("serve_overhead", f"{name} c={c} CPU per request", med[name]["cpu"], base["cpu"], "ms",
                             better="lower", note=note + "; server process vs the direct loop's process")]
    finally:
        stop_process(proc, grace_s=15)
        if pair is not None:
            stop_process(pair[0], grace_s=15)
    return rows


# -- the framework choice ---------------------------------------------------------------------------
def framework_app(kind: str) -> Any:
    """A trivial chat endpoint: FastAPI (typed body, response model) or Starlette (by hand); with
    stream=true, 20 events through sse-starlette or a bare StreamingResponse."""
    from agents.serving.protocol import ChatCompletion, ChatCompletionRequest

    def answer(req: ChatCompletionRequest) -> dict[str, Any]:
        return {"id": "x", "created": 0, "model": req.model, "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                "total_tokens": 2}, "choices": [{"index": 0, "message": {"content": "ok " * 20}}],
                "swarm": {"run_id": "r", "trace_id": "t", "policy": "SMC", "num_particles": 8, "log_evidence": 0.0,
                          "ess": 8.0, "min_ess": 8.0, "steps": 5, "llm_calls": 32, "answer": "mode",
                          "probabilities": [1.0], "distinct_answers": 1, "wall_time_s": 0.0}}

    events = [json.dumps({"choices": [{"index": 0, "delta": {"content": "ok "}}]})] * 20
    if kind == "fastapi":
        from fastapi import FastAPI

        app = FastAPI()

        @app.post("/v1/chat/completions", response_model=ChatCompletion)
        async def chat(req: ChatCompletionRequest) -> Any:
            return answer(req)
        return app
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    async def chat_by_hand(request: Request) -> Response:
        req = ChatCompletionRequest.model_validate_json(await request.body())
        if not req.stream:
            return Response(ChatCompletion.model_validate(answer(req)).model_dump_json(), media_type="application/json")
        if kind == "sse-starlette":
            from sse_starlette import EventSourceResponse

            async def sse() -> Any:
                for data in events:
                    yield data
                yield "[DONE]"
            return EventSourceResponse(sse(), ping=15, sep="\n")

        async def bare() -> Any:
            for data in events:
                yield f"data: {data}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(bare(), media_type="text/event-stream")
    return Starlette(routes=[Route("/v1/chat/completions", chat_by_hand, methods=["POST"])])


def _serve_app(kind: str) -> None:
    """Serve `framework_app(kind)`; a "-h11" suffix parses HTTP with h11 instead of httptools."""
    import uvicorn

    from agents.serving.server import bind

    parser = "h11" if kind.endswith("-h11") else "httptools"
    sock = bind("127.0.0.1", 0)
    print(f"READY http://127.0.0.1:{sock.getsockname()[1]}/v1", flush=True)
    config = uvicorn.Config(framework_app(kind.removesuffix("-h11")), loop="asyncio", http=parser,
                            log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def frameworks(rounds: int = 5, requests: int = 600, concurrency: int = 8) -> list[dict[str, Any]]:
    servers = {}
    try:
        for kind in ("fastapi", "starlette", "sse-starlette", "starlette-h11"):
            proc = subprocess.Popen([sys.executable, "-m", "bench.serve_overhead", "--app", kind], stdout=subprocess.PIPE,
                                    text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
            servers[kind] = (proc, proc.stdout.readline().split()[1] if proc.stdout else "")
        cases = {"fastapi json": ("fastapi", False), "starlette json": ("starlette", False),
                 "starlette json h11": ("starlette-h11", False),
                 "bare stream": ("starlette", True), "sse-starlette stream": ("sse-starlette", True)}
        rates: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(rounds + 1):  # round 0 warms up
            for name, (kind, stream) in cases.items():
                latencies, wall = asyncio.run(_plain_load(servers[kind][1], concurrency, requests, stream))
                if r:
                    rates[name].append(len(latencies) / wall)
        med = {name: statistics.median(v) for name, v in rates.items()}
        progress("frameworks: " + "; ".join(f"{n} {v:.0f}/s" for n, v in med.items()))
        note = f"trivial handler, {concurrency} clients, {requests} requests x {rounds} rounds"
        return [row("serve_frameworks", "starlette vs fastapi (JSON)", med["starlette json"], med["fastapi json"],
                    "req/s", note=note),
                row("serve_frameworks", "sse-starlette vs bare StreamingResponse (20 events)",
                    med["sse-starlette stream"], med["bare stream"], "req/s", note=note),
                row("serve_frameworks", "httptools vs h11 (Starlette JSON)", med["starlette json"],
                    med["starlette json h11"], "req/s", note=note)]
    finally:
        for proc, _ in servers.values():
            stop_process(proc, grace_s=15)


async def _plain_load(url: str, concurrency: int, requests: int, stream: bool) -> tuple[list[float], float]:
    import aiohttp

    body = {"model": "m", "messages": MESSAGES, "stream": stream}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one() -> None:
            async with session.post(f"{url}/chat/completions", json=body) as response:
                await response.read()
        return await _loops(concurrency, requests, one)


def run(quick: bool = False, only: str | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if only in (None, "overhead"):
        rows += overhead(rounds=1 if quick else 3, per_client=4 if quick else 8)
    if only in (None, "frameworks"):
        rows += frameworks(rounds=2 if quick else 5, requests=200 if quick else 600)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["overhead", "frameworks"])
    parser.add_argument("--app", help=argparse.SUPPRESS)  # internal: serve one framework app
    args = parser.parse_args(argv)
    if args.app:
        _serve_app(args.app)
        return []
    rows = run(args.quick, args.only)
    for r in rows:
        print(f"{r['benchmark']:16} {r['case']:52} {r['value']:9.2f} vs {r['baseline']:9.2f} {r['unit']:6} "
              f"ratio {r['ratio']:.3f}")
    return rows


if __name__ == "__main__":
    main()
