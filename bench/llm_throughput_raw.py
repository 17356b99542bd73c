"""llama.cpp on its own, through its low-level API: the baselines of the LLM throughput benchmarks.

- `single`: one sequence; the prompt evaluated in one batch, then one `llama_decode` per token, each
  token drawn by llama.cpp's own sampler chain (temperature 1, `llama_sampler_init_dist`).
- `batched` (the anchor, as in llama.cpp's `examples/batched`): the prompt evaluated once into
  sequence 0 and copied to the others with `llama_memory_seq_cp` (one shared KV buffer, so the copy
  is bookkeeping), then one `llama_decode` per step for all sequences, each with its own sampler.
- `replay`: the anchor's path on the step shapes (sequences, tokens) a run of the batched backend
  recorded (`LlamaCpp.decode_shapes`): what those batch widths cost llama.cpp alone.

tokens/s = drawn tokens / wall time, prompt evaluation included. Both use llama.cpp's defaults
otherwise (flash attention "auto", which is on for the CPU).

    python -m bench.llm_throughput_raw [--threads 1] [--tokens 64] [--sequences 16]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any, Iterator

PROMPT = ("<|im_start|>system\nYou write one short, simple sentence.<|im_end|>\n<|im_start|>user\n"
          "Write a short story about a lighthouse keeper and the sea.<|im_end|>\n<|im_start|>assistant\n")


def load_model() -> Any:
    """The embedded model as llama-cpp-python's `LlamaModel` (quiet)."""
    import llama_cpp
    from llama_cpp import _internals
    from llama_cpp._logger import set_verbose

    from agents.backends.embedded import embedded_model_path

    set_verbose(False)
    return _internals.LlamaModel(path_model=str(embedded_model_path()),
                                 params=llama_cpp.llama_model_default_params(), verbose=False)


@contextlib.contextmanager
def _context(model: Any, n_ctx: int, n_seq: int, threads: int) -> Iterator[tuple[Any, Any]]:
    import llama_cpp as lib
    from llama_cpp._utils import suppress_stdout_stderr

    p = lib.llama_context_default_params()
    p.n_ctx, p.n_seq_max, p.kv_unified = n_ctx, n_seq, n_seq > 1
    p.n_batch = p.n_ubatch = 512
    p.n_threads = p.n_threads_batch = threads
    p.no_perf = True
    with suppress_stdout_stderr(disable=False):
        ctx = lib.llama_init_from_model(model.model, p)
    if not ctx:
        raise RuntimeError("llama.cpp could not create the context")
    batch = lib.llama_batch_init(512, 0, n_seq)
    try:
        yield ctx, batch
    finally:
        lib.llama_batch_free(batch)
        lib.llama_free(ctx)


def _fill(batch: Any, entries: list[tuple[int, int, int, bool]]) -> None:
    for i, (token, pos, seq, out) in enumerate(entries):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0], batch.logits[i] = token, pos, 1, seq, out
    batch.n_tokens = len(entries)


def _sampler(seed: int) -> Any:
    import llama_cpp as lib

    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
    return chain


def _decode(ctx: Any, batch: Any) -> None:
    import llama_cpp as lib

    rc = lib.llama_decode(ctx, batch)
    if rc != 0:
        raise RuntimeError(f"llama_decode returned {rc}")


def single(model: Any, threads: int, n_tokens: int, seed: int = 0) -> tuple[int, float]:
    """(tokens drawn, seconds) for one sequence."""
    import llama_cpp as lib

    prompt = model.tokenize(PROMPT.encode(), False, True)
    sampler = _sampler(seed)
    with _context(model, 1024, 1, threads) as (ctx, batch):
        start = time.perf_counter()
        _fill(batch, [(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        _decode(ctx, batch)
        for k in range(n_tokens):
            token = lib.llama_sampler_sample(sampler, ctx, -1)
            _fill(batch, [(token, len(prompt) + k, 0, True)])
            _decode(ctx, batch)
        seconds = time.perf_counter() - start
    lib.llama_sampler_free(sampler)
    return n_tokens, seconds


def _prefill_shared(ctx: Any, batch: Any, prompt: list[int], n_seqs: int) -> None:
    """Evaluate the prompt once in sequence 0 and copy its cache to sequences 1..n_seqs-1
    (`llama_memory_seq_cp`): the anchor's shared prefill."""
    import llama_cpp as lib

    _fill(batch, [(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
    _decode(ctx, batch)
    memory = lib.llama_get_memory(ctx)
    for s in range(1, n_seqs):
        lib.llama_memory_seq_cp(memory, 0, s, -1, -1)


def batched(model: Any, threads: int, n_tokens: int, n_seqs: int = 16, seed: int = 0) -> tuple[int, float]:
    """(tokens drawn, seconds) for `n_seqs` sequences sharing the prompt, `n_tokens` each."""
    import llama_cpp as lib

    prompt = model.tokenize(PROMPT.encode(), False, True)
    samplers = [_sampler(seed + s) for s in range(n_seqs)]
    with _context(model, 1024 * 2, n_seqs, threads) as (ctx, batch):
        start = time.perf_counter()
        _prefill_shared(ctx, batch, prompt, n_seqs)
        rows = [len(prompt) - 1] * n_seqs
        for k in range(n_tokens):
            tokens = [lib.llama_sampler_sample(samplers[s], ctx, rows[s]) for s in range(n_seqs)]
            _fill(batch, [(tokens[s], len(prompt) + k, s, True) for s in range(n_seqs)])
            rows = list(range(n_seqs))
            _decode(ctx, batch)
        seconds = time.perf_counter() - start
    for sampler in samplers:
        lib.llama_sampler_free(sampler)
    return n_tokens * n_seqs, seconds


def replay(model: Any, threads: int, shapes: list[tuple[int, int]], seed: int = 0) -> float:
    """Seconds for llama.cpp's own batched decode (the anchor's path: shared prompt copied, one
    `llama_decode` per step, llama.cpp's sampler for every row with logits) run on the given step
    shapes (sequences, tokens): per step, one new token in each of the first `sequences` sequences,
    the step's surplus tokens as a prompt chunk on the last of them. So the same number of steps of
    the same widths as a recorded run, with no Python around llama.cpp."""
    import llama_cpp as lib

    prompt = model.tokenize(PROMPT.encode(), False, True)
    n_seqs = max((n for n, _ in shapes), default=1)
    longest = len(prompt) + sum(t - n + 1 for n, t in shapes)
    samplers = [_sampler(seed + s) for s in range(n_seqs)]
    with _context(model, n_seqs * longest + 64, n_seqs, threads) as (ctx, batch):
        start = time.perf_counter()
        _prefill_shared(ctx, batch, prompt, n_seqs)
        pos, rows = [len(prompt)] * n_seqs, {0: len(prompt) - 1}  # rows: logits index in the last batch
        for width, n_tokens in shapes:
            entries, fallback, last = [], next(iter(rows.values())), rows
            rows = {}
            for s in range(width):  # a sequence absent from the last batch samples another row (same cost)
                token = lib.llama_sampler_sample(samplers[s], ctx, last.get(s, fallback))
                extra = n_tokens - width if s == width - 1 else 0
                for k in range(1 + extra):
                    entries.append((token, pos[s] + k, s, k == extra))
                pos[s] += 1 + extra
                rows[s] = len(entries) - 1
            _fill(batch, entries)
            _decode(ctx, batch)
        seconds = time.perf_counter() - start
    for sampler in samplers:
        lib.llama_sampler_free(sampler)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--sequences", type=int, default=16)
    args = parser.parse_args(argv)
    model = load_model()
    n, s = single(model, args.threads, args.tokens)
    print(f"single sequence:         {n / s:7.1f} tokens/s")
    n, s = batched(model, args.threads, args.tokens, args.sequences)
    print(f"batched x{args.sequences:<3}            {n / s:7.1f} tokens/s")
    model.close()


if __name__ == "__main__":
    main()
