"""Latency hiding: SMC over N particles whose every step waits 50 ms for an LLM, against the ideal.

The program has STEPS steps; each is one agent generation followed by a coin and a `factor`, so
SMC resamples and offspring replay their prefix:

    for k in 1..STEPS:   reply_k ~ agent(prompt_k);  x_k ~ Bernoulli(0.5);  factor(0.5·x_k)

    ideal = STEPS × 50 ms   (every particle's call in flight at once, zero overhead)

Two backends, both test doubles with a fixed 50 ms latency:
- "in-process": `FakeLatencyBackend` (an `asyncio.sleep`): the framework's own scheduling only;
- "HTTP": `bench/fake_endpoint.py`, an asyncio OpenAI-compatible server in its own process on
  127.0.0.1, reached through `OpenAICompatible` (openai client, semaphore, retries, logprob
  parsing) with `max_concurrency=HTTP_CONCURRENCY`.
Baselines measured in the same run, interleaved with SMC: the same requests sent by plain asyncio
through the same openai client and the same concurrency limit (what the HTTP stack alone costs),
and by a minimal raw-socket asyncio client with no limit (what the endpoint and loop allow).

The openai client's connection pool (httpcore) scans every connection for every request, so its
CPU cost grows with the number of open connections: with max_concurrency = N = 2,048 the same SMC
run took 122 s here (818× ideal) against about 21 s at 64. Hence HTTP_CONCURRENCY = 64.

    python -m bench.latency_hiding [--sizes 256 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from bench.common import interleaved, median, progress, row
from bench.fake_endpoint import fetch_stats, start_fake_endpoint

STEPS = 3
LATENCY_S = 0.05
HTTP_CONCURRENCY = 64


def _program_factory(agent: Any):
    from swarm import Bernoulli, factor, sample

    async def program() -> int:
        total = 0
        for k in range(STEPS):
            await sample(f"reply{k}", agent.generate(raw_prompt=f"step {k}:", max_tokens=4))
            x = sample(f"x{k}", Bernoulli(0.5))
            total += int(x)
            factor(f"f{k}", 0.5 * x)
        return total

    return program


def _smc(backend: Any, n: int) -> None:
    import policies
    from agents import Agent

    agent = Agent(name="worker", backend=backend)

    async def smc() -> None:
        try:
            await policies.SMC(num_particles=n, seed=0).run_async(_program_factory(agent))
        finally:
            await backend.aclose()  # an HTTP client is bound to this event loop

    asyncio.run(smc())


def _smc_in_process(n: int, latency: float) -> None:
    from bench.fake_backend import FakeLatencyBackend

    _smc(FakeLatencyBackend(latency), n)


def _smc_http(base_url: str, n: int) -> None:
    from agents.backends.openai_compat import OpenAICompatible

    _smc(OpenAICompatible(base_url, "fake-model", mode="completions", max_concurrency=HTTP_CONCURRENCY,
                          timeout=300), n)


def _openai_waves(base_url: str, n: int) -> None:
    import openai

    async def waves() -> None:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=300)
        gate = asyncio.Semaphore(HTTP_CONCURRENCY)

        async def one(k: int) -> None:
            async with gate:
                await client.completions.create(model="fake-model", prompt=f"step {k}:", max_tokens=4, logprobs=0)

        try:
            for k in range(STEPS):
                await asyncio.gather(*(one(k) for _ in range(n)))
        finally:
            await client.close()

    asyncio.run(waves())


def _raw_waves(base_url: str, n: int) -> None:
    """Minimal HTTP/1.1 over asyncio streams: one connection per request, no pool, no parsing
    beyond Content-Length."""
    port = int(base_url.split(":")[2].split("/")[0])
    body = json.dumps({"model": "fake-model", "prompt": "step", "max_tokens": 4}).encode()
    head = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(body)

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + body)
        await writer.drain()
        headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        length = int(headers.split("content-length:", 1)[1].split("\r\n", 1)[0])
        await reader.readexactly(length)
        writer.close()

    async def waves() -> None:
        for _ in range(STEPS):
            await asyncio.gather(*(one() for _ in range(n)))

    asyncio.run(waves())


def _case_rows(n: int, times: dict[str, list[float]], ideal: float, peak: int) -> list[dict]:
    m = {k: median(v) for k, v in times.items()}
    reps = len(times["smc in-process"])
    rows = [row("latency hiding", f"SMC N={n:,} in-process 50 ms double vs ideal", m["smc in-process"], ideal, "s",
                better="lower", note=f"framework only; {STEPS} steps, median of {reps}")]
    if "smc http" in m:
        rows.append(row("latency hiding", f"SMC N={n:,} HTTP 50 ms endpoint vs ideal", m["smc http"], ideal, "s",
                        better="lower",
                        note=f"OpenAICompatible max_concurrency={HTTP_CONCURRENCY}; raw-socket asyncio client "
                             f"{m['raw sockets']:.2f} s ({m['raw sockets'] / ideal:.1f}x ideal); server peak in "
                             f"flight {peak}"))
        rows.append(row("latency hiding", f"SMC N={n:,} HTTP vs plain asyncio + openai client", m["smc http"],
                        m["openai asyncio"], "s", better="lower",
                        note=f"same client, same limit {HTTP_CONCURRENCY}, same requests, no framework"))
    return rows


def run(sizes: tuple[int, ...] = (256, 2048), repeats: int = 3, latency: float = LATENCY_S,
        http: bool = True) -> list[dict]:
    rows = []
    ideal = STEPS * latency
    with start_fake_endpoint(latency) as base_url:
        for n in sizes:
            reps = repeats if n <= 512 else 1
            progress(f"latency hiding: N={n}, {reps} interleaved repeat(s)")
            fns = {"smc in-process": lambda: _smc_in_process(n, latency)}
            if http:
                fns.update({"smc http": lambda: _smc_http(base_url, n),
                            "openai asyncio": lambda: _openai_waves(base_url, n),
                            "raw sockets": lambda: _raw_waves(base_url, n)})
            times = interleaved(fns, repeats=reps, warmup=n <= 512)
            rows += _case_rows(n, times, ideal, fetch_stats(base_url)["max_in_flight"] if http else 0)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-http", action="store_true", help="only the in-process double")
    args = parser.parse_args(argv)
    rows = run(tuple(args.sizes), args.repeats, http=not args.no_http)
    for r in rows:
        print(f"{r['case']:<52} {r['value']:8.3f} s vs {r['baseline']:8.3f} s  ratio {r['ratio']:6.2f}  {r['note']}")
    return rows


if __name__ == "__main__":
    main()
