"""Latency hiding: SMC over N particles whose every step waits 50 ms for an LLM, against the floor.

The program has STEPS steps; each is one agent generation followed by a coin and a `factor`, so
SMC resamples and offspring replay their prefix:

    for k in 1..STEPS:   reply_k ~ agent(prompt_k);  x_k ~ Bernoulli(0.5);  factor(0.5·x_k)

    ideal = STEPS × 50 ms   (every particle's call in flight at once, zero overhead)
    floor = the same requests (STEPS waves of N) sent by a minimal asyncio keep-alive client at the
            same concurrency, no framework: what this machine, this loop and the endpoint allow

Backends, all test doubles with a fixed 50 ms latency:
- "in-process": `FakeLatencyBackend` (an `asyncio.sleep`): the framework's own scheduling only;
- "HTTP": `bench/fake_endpoint.py`, an asyncio OpenAI-compatible server in its own process on
  127.0.0.1, reached through `OpenAICompatible` (its keep-alive pool, retries, dict parsing) with
  `max_concurrency = N`.
Baselines measured in the same run, interleaved with SMC: the floor client; the same requests
through `OpenAICompatible.complete` with plain asyncio ("backend alone": the transport without the
engine) and through its connection pool alone ("pool alone": `HttpPool.post` of the same bytes, no
request building or reply parsing); and (N <= 256 only: it takes minutes beyond) the openai client
with plain asyncio at the same concurrency, the transport this backend used before. Besides wall
times, the client's CPU time per request (this process; the endpoint has its own) is reported for
each against the floor: on a shared machine it is the figure other jobs disturb least.

The split, layer by layer: pool alone / floor is the connection handling; backend alone / pool
alone is building the request and parsing the reply into a `Completion`; SMC HTTP / backend alone
is the engine over HTTP (SMC in-process / ideal is the engine alone). `--profile N` prints where
the CPU time of one SMC-over-HTTP run goes, by module group (engine: swarm/ policies/ agents/
outside the backends; transport: agents/backends/http_* and openai_compat; asyncio; pydantic;
json).

    python -m bench.latency_hiding [--sizes 256 1024 2048] [--repeats 3] [--profile 2048]
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
OPENAI_MAX_N = 256


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
            await backend.aclose()  # an HTTP pool is bound to this event loop

    asyncio.run(smc())


def _smc_in_process(n: int, latency: float) -> None:
    from bench.fake_backend import FakeLatencyBackend

    _smc(FakeLatencyBackend(latency), n)


def _http_backend(base_url: str, n: int) -> Any:
    from agents.backends.openai_compat import OpenAICompatible

    return OpenAICompatible(base_url, "fake-model", mode="completions", max_concurrency=n, timeout=300)


def _request_body(k: int, seed: int) -> dict:
    """What `OpenAICompatible` sends for one particle's step k (seeds differ per particle)."""
    return {"model": "fake-model", "temperature": 1.0, "top_p": 1.0, "max_tokens": 4, "seed": seed,
            "prompt": f"step {k}:"}


def _floor_waves(base_url: str, n: int) -> None:
    """The floor: STEPS waves of n requests over at most n keep-alive connections, each request
    serialised with json.dumps and its reply parsed with json.loads; nothing else."""
    port = int(base_url.split(":")[2].split("/")[0])

    async def waves() -> None:
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        gate = asyncio.Semaphore(n)

        async def one(k: int, seed: int) -> None:
            body = json.dumps(_request_body(k, seed)).encode()
            head = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body))
            async with gate:
                reader, writer = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
                writer.write(head + body)
                headers = await reader.readuntil(b"\r\n\r\n")
                at = headers.lower().index(b"content-length:")
                json.loads(await reader.readexactly(int(headers[at + 15:headers.index(b"\r\n", at)])))
                idle.append((reader, writer))

        for k in range(STEPS):
            await asyncio.gather(*(one(k, i) for i in range(n)))
        for _, writer in idle:
            writer.close()

    asyncio.run(waves())


def _waves_through_backend(base_url: str, n: int, send: Any) -> None:
    """STEPS waves of n requests with plain asyncio, request (k, i) being `send(backend, k, i)` on
    one `OpenAICompatible` (closed at the end: its pool is bound to this event loop)."""
    backend = _http_backend(base_url, n)

    async def waves() -> None:
        try:
            for k in range(STEPS):
                await asyncio.gather(*(send(backend, k, i) for i in range(n)))
        finally:
            await backend.aclose()

    asyncio.run(waves())


def _backend_waves(base_url: str, n: int) -> None:
    """The same requests through `OpenAICompatible.complete`: the transport without the engine."""
    from agents.backends.base import GenerationRequest, GenerationSettings

    settings = GenerationSettings(max_tokens=4)
    _waves_through_backend(base_url, n, lambda backend, k, i: backend.complete(
        GenerationRequest(prompt=f"step {k}:", seed=i, settings=settings)))


def _pool_waves(base_url: str, n: int) -> None:
    """The same request bytes through `OpenAICompatible`'s connection pool alone (`HttpPool.post`:
    keep-alive connections, framing, deadlines), no request building or reply parsing: the pool's
    share of the transport."""
    from agents.json_codec import dumps_exact

    _waves_through_backend(base_url, n, lambda backend, k, i: backend._resources()[0].post(
        "/completions", dumps_exact(_request_body(k, i))))


def _openai_waves(base_url: str, n: int) -> None:
    import openai

    async def waves() -> None:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=300)
        gate = asyncio.Semaphore(n)

        async def one(k: int, seed: int) -> None:
            async with gate:
                await client.completions.create(**_request_body(k, seed))

        try:
            for k in range(STEPS):
                await asyncio.gather(*(one(k, i) for i in range(n)))
        finally:
            await client.close()

    asyncio.run(waves())


def _cpu_timed(fn: Any, into: list[float]) -> Any:
    """`fn`, appending the CPU seconds of this process each call takes to `into` (the client's side:
    the endpoint runs in its own process)."""
    import time

    def timed() -> None:
        started = time.process_time()
        fn()
        into.append(time.process_time() - started)

    return timed


def _case_rows(n: int, times: dict[str, list[float]], ideal: float, peak: int,
               cpu: dict[str, list[float]] | None = None) -> list[dict]:
    m = {k: median(v) for k, v in times.items()}
    reps = len(times["smc in-process"])
    rows = [row("latency hiding", f"SMC N={n:,} in-process 50 ms double vs ideal", m["smc in-process"], ideal, "s",
                better="lower", note=f"the engine alone; {STEPS} steps, median of {reps}")]
    if "smc http" in m:
        rows.append(row("latency hiding", f"SMC N={n:,} HTTP 50 ms endpoint vs floor", m["smc http"], m["floor"], "s",
                        better="lower", note=f"goal <= 1.3; floor = minimal asyncio keep-alive client, same requests, "
                                             f"concurrency {n} ({m['floor'] / ideal:.1f}x ideal); server peak in flight {peak}"))
        rows.append(row("latency hiding", f"SMC N={n:,} HTTP 50 ms endpoint vs ideal", m["smc http"], ideal, "s",
                        better="lower", note=f"OpenAICompatible max_concurrency={n}; median of {reps}"))
    if "backend alone" in m:
        rows.append(row("latency hiding", f"N={n:,} OpenAICompatible alone (plain asyncio) vs floor", m["backend alone"],
                        m["floor"], "s", better="lower", note="the transport's share: same requests, no engine"))
        rows.append(row("latency hiding", f"SMC N={n:,} HTTP vs OpenAICompatible alone", m["smc http"],
                        m["backend alone"], "s", better="lower", note="the engine's share over HTTP"))
    if "pool alone" in m:
        rows.append(row("latency hiding", f"N={n:,} HttpPool alone (plain asyncio) vs floor", m["pool alone"],
                        m["floor"], "s", better="lower",
                        note="the connection pool's share: same request bytes, no request building or parsing"))
    if "openai client" in m:
        rows.append(row("latency hiding", f"N={n:,} openai client (plain asyncio) vs floor", m["openai client"],
                        m["floor"], "s", better="lower",
                        note="the transport OpenAICompatible used before: httpx's pool, pydantic models"))
    requests = STEPS * n
    for name in ("smc http", "backend alone", "pool alone"):
        if cpu and cpu.get(name) and cpu.get("floor"):
            per = {k: median(cpu[k][1:] or cpu[k]) / requests * 1e6 for k in (name, "floor")}  # [0]: the warm-up
            rows.append(row("latency hiding", f"N={n:,} client CPU per request: {name} vs floor", per[name],
                            per["floor"], "us", better="lower",
                            note="this process's CPU time / requests (the endpoint's is its own); least disturbed by "
                                 "other jobs"))
    return rows


def run(sizes: tuple[int, ...] = (256, 1024, 2048), repeats: int = 3, latency: float = LATENCY_S,
        http: bool = True) -> list[dict]:
    rows = []
    ideal = STEPS * latency
    with start_fake_endpoint(latency) as base_url:
        for n in sizes:
            progress(f"latency hiding: N={n}, {repeats} interleaved repeat(s)")
            fns = {"smc in-process": lambda: _smc_in_process(n, latency)}
            if http:
                fns.update({"smc http": lambda: _smc(_http_backend(base_url, n), n),
                            "floor": lambda: _floor_waves(base_url, n),
                            "backend alone": lambda: _backend_waves(base_url, n),
                            "pool alone": lambda: _pool_waves(base_url, n)})
                if n <= OPENAI_MAX_N:
                    fns["openai client"] = lambda: _openai_waves(base_url, n)
            cpu: dict[str, list[float]] = {name: [] for name in fns}
            fns = {name: _cpu_timed(fn, cpu[name]) for name, fn in fns.items()}
            times = interleaved(fns, repeats=repeats, warmup=True)
            rows += _case_rows(n, times, ideal, fetch_stats(base_url)["max_in_flight"] if http else 0, cpu)
    return rows


def profile(n: int, top: int = 25) -> dict[str, float]:
    """CPU seconds of one SMC-over-HTTP run by module group, and the top functions (printed)."""
    import cProfile
    import pstats
    import time

    with start_fake_endpoint(LATENCY_S) as base_url:
        _smc(_http_backend(base_url, n), n)  # warm-up
        prof = cProfile.Profile(time.process_time)  # CPU time: a loaded machine's preemptions are not charged
        prof.enable()
        _smc(_http_backend(base_url, n), n)
        prof.disable()
    stats = pstats.Stats(prof)
    groups: dict[str, float] = {}
    for (path, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        groups[_group(path)] = groups.get(_group(path), 0.0) + tottime
    stats.sort_stats("tottime").print_stats(top)
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


def _group(path: str) -> str:
    if "/agents/backends/" in path:
        return "transport (agents/backends)"
    for name in ("swarm", "policies", "agents", "observability"):
        if f"/{name}/" in path:
            return "engine (swarm, policies, agents, observability)"
    for name in ("asyncio", "pydantic", "json", "selectors", "socket", "hashlib", "numpy"):
        if f"/{name}" in path or name in path:
            return name
    return "other" if path not in ("~", "") else "builtins"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-http", action="store_true", help="only the in-process double")
    parser.add_argument("--profile", type=int, default=0, help="profile one SMC-over-HTTP run at this N")
    args = parser.parse_args(argv)
    if args.profile:
        for group, seconds in profile(args.profile).items():
            print(f"{group:<50} {seconds:8.3f} s")
        return []
    rows = run(tuple(args.sizes), args.repeats, http=not args.no_http)
    for r in rows:
        print(f"{r['case']:<52} {r['value']:8.3f} {r['unit']} vs {r['baseline']:8.3f} {r['unit']}  ratio {r['ratio']:6.2f}  "
              f"{r['note']}")
    return rows


if __name__ == "__main__":
    main()
