"""Token-mask cost on SmolLM2's vocabulary (49,152 tokens): llguidance (what agents.constraints uses)
vs outlines-core, and the guide's whole per-token overhead vs one llama.cpp decode step.

For each engine and constraint (a regex and a JSON schema) we measure the compile time (grammar →
ready to mask) and, along the tokens of a valid text, the time to compute the allowed-token mask at
each position into a numpy row and advance by the token: medians over positions, repetitions of the
engines interleaved (so both see the same machine load). xgrammar is not measured: its Python
package imports torch unconditionally (installing it pulls torch and CUDA wheels, several GB), which
rules it out for a CPU framework whatever its speed. outlines-core is optional (`pip install
outlines-core`); without it its rows are skipped.

The guide rows: `Guide.draw` + `advance` per token (the constraint's whole cost inside the loop,
renormalisation included) for forbid_chars and a JSON schema, against the median time of one
single-token decode of the model (n_threads=1), the cost every generated token pays anyway.

    python -m bench.constraint_masks [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import numpy as np

from bench.common import progress, row

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "tags"], "additionalProperties": False}
CASES = {"regex": (r"(yes|no), because [a-z ,]{1,60}\.", "yes, because the sky is blue, mostly."),
         "json_schema": (SCHEMA, json.dumps({"name": "Bob", "age": 42, "tags": ["a", "bc"]}))}


def _vocabulary() -> Any:
    from agents.backends.llama_cpp import LlamaCpp

    backend = LlamaCpp(n_threads=1)
    return backend, backend.vocabulary()


def _decode_step(backend: Any, prompt: bytes, tokens: list[int]) -> tuple[np.ndarray, float]:
    """The logits after `prompt`, and the median time of one decode step of one more token (each of
    `tokens` in turn; the backend's own context configuration, one sequence, llama.cpp's API)."""
    import llama_cpp

    from agents.backends.llama_context import BatchContext

    kv = BatchContext(llama_cpp, backend._model, n_ctx=256, n_seq_max=1, n_batch=512, n_threads=1, verbose=False,
                      name="bench")
    try:
        kv.ensure(1)
        seq = np.asarray(backend._model.tokenize(prompt, True, True), dtype=np.int32)
        logits = kv.evaluate([(0, 0, seq, True)])[0]
        times = []
        for token in tokens:
            start = time.perf_counter()
            kv.evaluate([(0, seq.size, np.array([token], dtype=np.int32), True)])
            times.append(time.perf_counter() - start)
            kv.cache.memory.truncate(0, seq.size)
    finally:
        kv.close()
    return logits.astype(np.float64), statistics.median(times)


def _llguidance_walk(case: str, vocab: Any, tokens: list[int]) -> Callable[[], float]:
    from agents import constraints

    spec, _ = CASES[case]
    constraint = constraints.regex(spec) if case == "regex" else constraints.json_schema(spec)
    constraint.bind(vocab)

    def walk() -> float:
        state = constraint.bind(vocab).start(b"")
        start = time.perf_counter()
        for tok in tokens:
            state.log_phi_row()
            state.advance(tok)
        return (time.perf_counter() - start) / len(tokens)
    return walk


def _outlines_walk(case: str, vocab: Any, tokens: list[int]) -> tuple[float, Callable[[], float]] | None:
    try:
        import outlines_core as oc
        from outlines_core.json_schema import build_regex_from_schema
    except ImportError:
        return None
    spec, _ = CASES[case]
    mapping: dict[bytes, list[int]] = {}
    for i, p in enumerate(vocab.pieces):
        if p and not vocab.eos_mask[i]:
            mapping.setdefault(p, []).append(i)
    start = time.perf_counter()
    index = oc.Index(spec if case == "regex" else build_regex_from_schema(json.dumps(spec)),
                     oc.Vocabulary(vocab.eos_ids[0], mapping))
    compile_s = time.perf_counter() - start
    words = np.zeros((len(vocab) + 31) // 32, dtype=np.int32)

    def walk() -> float:
        guide = oc.Guide(index)
        start = time.perf_counter()
        for tok in tokens:
            guide.write_mask_into(words.ctypes.data, words.size, 4)
            np.where(np.unpackbits(words.view(np.uint8), bitorder="little")[:len(vocab)].astype(bool), 0.0, -np.inf)
            guide.advance(tok)
        return (time.perf_counter() - start) / len(tokens)
    return compile_s, walk


def _compile_llguidance(case: str, vocab: Any) -> float:
    from agents import constraints

    spec, _ = CASES[case]
    start = time.perf_counter()
    c = constraints.regex(spec) if case == "regex" else constraints.json_schema(spec)
    c.bind(vocab).start(b"").log_phi_row()
    return time.perf_counter() - start


def _interleaved_medians(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for name in list(fns)[r % len(fns):] + list(fns)[:r % len(fns)]:
            times[name].append(fns[name]())
    return {k: statistics.median(v) for k, v in times.items()}


def _guide_overhead(backend: Any, vocab: Any, repeats: int) -> list[dict]:
    """Guide.draw + advance per token vs one decode step of the model."""
    from agents import constraints

    rng = np.random.default_rng(0)
    logits, decode_s = _decode_step(backend, b"Once upon a time", rng.integers(100, 1000, repeats * 4).tolist())
    logq = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    rows = []
    for name, c in [("forbid_chars", constraints.forbid_chars("eE")), ("json_schema", constraints.json_schema(SCHEMA))]:
        times = []
        for _ in range(repeats * 20):
            guide = c.guide(vocab)
            start = time.perf_counter()
            d = guide.draw(logq, rng)
            guide.advance(d.token)
            times.append(time.perf_counter() - start)
        t = statistics.median(times)
        rows.append(row("constraint masks", f"guide draw+advance per token: {name} vs one decode", t * 1e3,
                        decode_s * 1e3, "ms", better="lower",
                        note=f"guide {t * 1e3:.2f} ms vs decode {decode_s * 1e3:.1f} ms (n_threads=1)"))
    return rows


def run(repeats: int = 5) -> list[dict]:
    backend, vocab = _vocabulary()
    from agents.constraints.engine import lltokenizer

    rows = []
    for case, (_, text) in CASES.items():
        tokens = lltokenizer(vocab).tokenize_str(text)
        fns = {"llguidance": _llguidance_walk(case, vocab, tokens)}
        oc = _outlines_walk(case, vocab, tokens)
        if oc is not None:
            fns["outlines-core"] = oc[1]
        med = _interleaved_medians(fns, repeats)
        compile_llg = _compile_llguidance(case, vocab)
        base = med.get("outlines-core", med["llguidance"])
        rows.append(row("constraint masks", f"{case}: llguidance mask+advance per token vs outlines-core",
                        med["llguidance"] * 1e6, base * 1e6, "us", better="lower",
                        note=f"{len(tokens)} tokens; compile llguidance {compile_llg * 1e3:.1f} ms"
                        + (f", outlines-core {oc[0] * 1e3:.0f} ms" if oc else ", outlines-core not installed")))
        progress(f"constraint_masks {case}: {rows[-1]['note']}, per token {med}")
    rows += _guide_overhead(backend, vocab, repeats)
    backend.close()
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = run(args.repeats)
    for r in rows:
        print(f"{r['case']:<62} {r['value']:9.2f} vs {r['baseline']:9.2f} {r['unit']}  ratio {r['ratio']:.2f}  {r['note']}")
    return rows


if __name__ == "__main__":
    main()
