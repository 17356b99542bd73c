"""LLM throughput through the framework: tokens/s of the same generations made by raw llama.cpp,
by the `LlamaCpp` backend alone, and by an `Agent` inside an SMC run (goal: SMC/raw ≥ 0.9).

The workload is an SMC run on the embedded SmolLM2-135M model: PARTICLES particles, each writing
two chunks of CHUNK_TOKENS tokens (temperature 1, no truncation) with a `factor` after each, so
the run resamples and offspring replay their first chunk (replayed chunks cost no tokens):

    chunk_1 ~ π(· | prompt);  factor(len(words));  chunk_2 ~ π(· | prompt, chunk_1);  factor(...)

Every backend call of one SMC run is recorded (its prompt tokens and how many tokens it generated).
The same generations are then made:
- raw: directly with llama-cpp-python (`Llama.generate`, temp=1, top_k=0, top_p=1, min_p=0,
  repeat_penalty=1: plain sampling, the same settings), the same prompt tokens in the same order,
  drawing exactly as many tokens (its own samples, so its own tokens; the KV-cache prefix is reused
  the same way);
- backend: `LlamaCpp.complete_sync` on the recorded requests, one after another (no framework);
- SMC: the whole `policies.SMC` run (agents, traces, replay, resampling, scheduling).

tokens/s = generated tokens / wall time (prompt evaluation included on every side). Repetitions
are interleaved (raw, backend, SMC, …) and medians reported, so all three see the same load.

Threads: every side uses THREADS = 1 llama.cpp thread. On this 2-core machine shared with other
jobs, llama.cpp's 2-thread decode (the backend's default, n_threads = cores) busy-waits at a
barrier for a descheduled thread and collapses to 2-5 tokens/s, against ~45 with one thread; the
last row measures that (raw llama.cpp, 1 thread vs all cores, interleaved).

    python -m bench.llm_throughput [--repeats 3] [--particles 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from bench.common import interleaved, median, progress, row

PARTICLES = 6
CHUNK_TOKENS = 16
THREADS = 1
PROMPT = "Write a short story about a lighthouse keeper and the sea."


class _Recorder:
    """Wraps a LlamaCpp backend and records (request, generated tokens) of every call."""

    def __init__(self, inner: Any) -> None:
        from bench.counting import OutputTokenBudget

        self.counter = OutputTokenBudget(inner)
        self.inner = inner
        self.calls: list[tuple[Any, int]] = []
        original = self.counter.complete

        async def complete(request: Any) -> Any:
            completion = await original(request)
            self.calls.append((request, completion.usage.output_tokens))
            return completion

        self.counter.complete = complete  # type: ignore[method-assign]


def _program(agent: Any):
    from swarm import factor, sample

    async def story() -> str:
        text = ""
        for k in range(2):
            text += await sample(f"chunk{k}", agent.generate(PROMPT, prefix=text, max_tokens=CHUNK_TOKENS))
            factor(f"words{k}", 0.2 * len(text.split()))
        return text

    return story


def _smc(recorder: _Recorder, particles: int) -> int:
    import policies
    from agents import Agent

    recorder.calls.clear()
    agent = Agent(name="writer", backend=recorder.counter)
    policies.SMC(num_particles=particles, seed=0).run(_program(agent))
    return sum(n for _, n in recorder.calls)


def _backend_direct(backend: Any, calls: list[tuple[Any, int]]) -> int:
    return sum(backend.complete_sync(request).usage.output_tokens for request, _ in calls)


def _raw(llm: Any, prompts: list[tuple[list[int], int]]) -> int:
    total = 0
    for tokens, n in prompts:
        if n == 0:
            continue
        for i, _ in enumerate(llm.generate(tokens, top_k=0, top_p=1.0, min_p=0.0, temp=1.0, repeat_penalty=1.0)):
            if i + 1 == n:
                break
        total += n
    return total


def run(repeats: int = 3, particles: int = PARTICLES) -> list[dict]:
    from llama_cpp import Llama

    from agents.backends.llama_cpp import LlamaCpp

    backend = LlamaCpp(n_threads=THREADS)
    recorder = _Recorder(backend)
    progress(f"llm throughput: recording one SMC run ({particles} particles x 2 chunks x {CHUNK_TOKENS} tokens)")
    tokens = _smc(recorder, particles)
    calls = list(recorder.calls)
    prompts = [(backend.prompt_tokens(request), n) for request, n in calls]
    llm = Llama(str(backend.model_path), n_ctx=backend.n_ctx, n_threads=THREADS, n_threads_batch=THREADS,
                n_batch=512, verbose=False)
    counts: dict[str, int] = {}

    def measure(name: str, fn: Any) -> Any:
        def call() -> None:
            counts[name] = fn()
        return call

    progress(f"llm throughput: {len(calls)} calls, {tokens} tokens; {repeats} interleaved repeats")
    times = interleaved({"raw": measure("raw", lambda: _raw(llm, prompts)),
                         "backend": measure("backend", lambda: _backend_direct(backend, calls)),
                         "smc": measure("smc", lambda: _smc(recorder, particles))}, repeats=repeats, warmup=False)
    llm.close()
    asyncio.run(backend.aclose())
    threads_row = _thread_scaling(backend.model_path, prompts[:2], repeats=2)  # 2 threads can be very slow
    rate = {name: counts[name] / median(t) for name, t in times.items()}
    note = f"{len(calls)} generations, {counts['smc']} tokens, {particles} particles; median of {repeats}"
    return [
        row("llm throughput", "Agent in SMC vs raw llama.cpp", rate["smc"], rate["raw"], "tokens/s", note=note + "; goal >= 0.9"),
        row("llm throughput", "LlamaCpp backend vs raw llama.cpp", rate["backend"], rate["raw"], "tokens/s",
            note="same requests, sequential, no framework"),
        row("llm throughput", "Agent in SMC vs LlamaCpp backend", rate["smc"], rate["backend"], "tokens/s",
            note="the framework's own share"),
        threads_row,
    ]


def _thread_scaling(model_path: Any, prompts: list[tuple[list[int], int]], repeats: int) -> dict:
    """Raw llama.cpp on the same generations with all cores vs THREADS thread(s), interleaved."""
    from llama_cpp import Llama

    cores = os.cpu_count() or 1
    llms = {n: Llama(str(model_path), n_ctx=2048, n_threads=n, n_threads_batch=n, n_batch=512, verbose=False)
            for n in (THREADS, cores)}
    tokens = sum(n for _, n in prompts)
    progress(f"llm throughput: raw llama.cpp with {cores} vs {THREADS} thread(s)")
    times = interleaved({n: (lambda llm=llm: _raw(llm, prompts)) for n, llm in llms.items()}, repeats=repeats,
                        warmup=False)
    for llm in llms.values():
        llm.close()
    many, few = tokens / median(times[cores]), tokens / median(times[THREADS])
    return row("llm throughput", f"raw llama.cpp, {cores} threads vs {THREADS} (shared machine)", many, few,
               "tokens/s", note=f"first 2 generations ({tokens} tokens), median of {repeats}; the backend's "
                                "n_threads default = cores; see the module docstring")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--particles", type=int, default=PARTICLES)
    args = parser.parse_args(argv)
    rows = run(args.repeats, args.particles)
    for r in rows:
        print(f"{r['case']:<38} {r['value']:7.1f} vs {r['baseline']:7.1f} tokens/s  ratio {r['ratio']:.3f}  {r['note']}")
    return rows


if __name__ == "__main__":
    main()
