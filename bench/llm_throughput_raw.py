"""Generation throughput of the embedded SmolLM2 model: raw llama-cpp-python vs the `LlamaCpp` backend.

    tokens/s = generated tokens / wall time of one call (prompt evaluation included)

Both sides use greedy decoding on the same prompt, the same thread count, after one warm-up call, so
the ratio backend/raw measures what our own sampling loop (float64 softmax over the vocabulary,
honest log-probabilities, Python-side stopping) costs on top of llama.cpp's evaluation.

Run: `python -m bench.llm_throughput_raw [n_tokens]`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

PROMPT = "Write a long story about a lighthouse keeper and the sea. Once upon a time,"


def raw_tokens_per_second(n_tokens: int = 64) -> float:
    """Tokens/s of llama-cpp-python's own `create_completion` (greedy) on the embedded model."""
    from llama_cpp import Llama

    from agents.backends.embedded import embedded_model_path

    threads = os.cpu_count() or 1
    llm = Llama(str(embedded_model_path()), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    try:
        llm.create_completion(PROMPT, max_tokens=4, temperature=0)  # warm-up
        llm.reset()
        start = time.perf_counter()
        out = llm.create_completion(PROMPT, max_tokens=n_tokens, temperature=0)
        elapsed = time.perf_counter() - start
        return out["usage"]["completion_tokens"] / elapsed
    finally:
        llm.close()


def backend_tokens_per_second(n_tokens: int = 64) -> float:
    """Tokens/s through `LlamaCpp.complete` (greedy) on the embedded model."""
    from agents.backends.base import GenerationRequest, GenerationSettings
    from agents.backends.llama_cpp import LlamaCpp

    backend = LlamaCpp()

    async def measure() -> float:
        warm = GenerationRequest(prompt=PROMPT, settings=GenerationSettings(temperature=0, max_tokens=4))
        await backend.complete(warm)
        backend._llm.reset()  # no KV-cache advantage over the raw measurement
        request = GenerationRequest(prompt=PROMPT, settings=GenerationSettings(temperature=0, max_tokens=n_tokens))
        start = time.perf_counter()
        completion = await backend.complete(request)
        elapsed = time.perf_counter() - start
        await backend.aclose()
        return completion.usage.output_tokens / elapsed

    return asyncio.run(measure())


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 64
    raw = raw_tokens_per_second(n)
    ours = backend_tokens_per_second(n)
    print(f"raw llama-cpp-python: {raw:7.1f} tokens/s")
    print(f"LlamaCpp backend:     {ours:7.1f} tokens/s")
    print(f"ratio backend/raw:    {ours / raw:7.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
