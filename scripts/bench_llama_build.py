"""Tokens/s of two llama-cpp-python builds on the embedded model, interleaved in one run.

    python scripts/bench_llama_build.py fixed= dispatch=/tmp/dispatch-site --repeats 5

Each NAME=SITE argument is a build: SITE is a directory holding a `llama_cpp` package (installed
with `pip install --no-deps --target SITE WHEEL`), or empty for the one this interpreter imports.
Each repetition runs every build once, in turn, each in its own subprocess (so the builds never
share a process and machine-load drifts hit all of them alike); the medians and their ratios to the
first build are printed. A build made with GGML_BACKEND_DL (runtime CPU dispatch) has its CPU
backends as separate libraries that llama-cpp-python 0.3.36 does not load: the child loads them
(`ggml_backend_load_all_from_path` on the package's lib directory) and reports the variant chosen.

What is timed, on one thread (`n_threads=1`: on a shared machine two threads measure contention):
the prompt (PROMPT, evaluated as one batch) in tokens/s, then 32 tokens decoded greedily one at a
time (the 1-token kernels a server or a sampling loop uses) in tokens/s.
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPT = ("Write a long story about a lighthouse keeper and the sea. Once upon a time, on a rocky island far "
          "from the coast, there lived an old man who kept the light burning every night, and")
DECODE = 32
REPO = Path(__file__).resolve().parents[1]


def _load_backends(lib_dir: Path) -> str:
    """Load the dynamically loadable CPU backends of a GGML_BACKEND_DL build; the chosen variant."""
    variants = sorted(p.name for p in lib_dir.glob("libggml-cpu-*.so"))
    if not variants:
        return "built in"
    with open("/proc/self/maps") as maps:  # the libggml llama_cpp loaded (a wheel holds copies, not symlinks)
        loaded = {line.split()[-1] for line in maps if "/libggml.so" in line}
    ggml = ctypes.CDLL(min(loaded) if loaded else str(lib_dir / "libggml.so.0"))
    ggml.ggml_backend_load_all_from_path(str(lib_dir).encode())
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    ggml.ggml_backend_reg_get.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
    ggml.ggml_backend_reg_name.restype = ctypes.c_char_p
    ggml.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    names = [ggml.ggml_backend_reg_name(ggml.ggml_backend_reg_get(i)).decode()
             for i in range(ggml.ggml_backend_reg_count())]
    with open("/proc/self/maps") as maps:
        loaded = sorted({line.split()[-1].rsplit("/", 1)[-1] for line in maps if "libggml-cpu-" in line})
    return f"{','.join(names)} from {','.join(loaded) or '?'} (of {len(variants)} variants)"


def child() -> dict:
    import numpy as np
    import llama_cpp

    sys.path.insert(0, str(REPO))
    from agents.backends.embedded import embedded_model_path

    backend = _load_backends(Path(llama_cpp.__file__).parent / "lib")
    llm = llama_cpp.Llama(model_path=str(embedded_model_path()), n_ctx=512, n_threads=1, n_threads_batch=1,
                          verbose=False)
    try:
        tokens = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)
        llm.eval(tokens[:8])  # warm-up
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        prompt_s = time.perf_counter() - start
        out, start = [], time.perf_counter()
        for _ in range(DECODE):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
            out.append(int(np.argmax(logits)))
            llm.eval([out[-1]])
        decode_s = time.perf_counter() - start
        return {"backend": backend, "prompt_tok_s": len(tokens) / prompt_s, "decode_tok_s": DECODE / decode_s,
                "text": llm.detokenize(out).decode(errors="replace"), "llama_cpp": llama_cpp.__file__}
    finally:
        llm.close()


def run_child(site: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if site:
        env["PYTHONPATH"] = os.pathsep.join([site, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True, env=env,
                          timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"build at {site or '<this interpreter>'} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        print(json.dumps(child()))
        return 0
    repeats = 5
    if "--repeats" in argv:
        i = argv.index("--repeats")
        repeats, argv = int(argv[i + 1]), argv[:i] + argv[i + 2:]
    builds = [a.partition("=")[::2] for a in argv] or [("this", "")]
    rows: dict[str, list[dict]] = {name: [] for name, _ in builds}
    for _ in range(repeats):
        for name, site in builds:
            rows[name].append(run_child(site))
    base = None
    for name, _ in builds:
        prompt = statistics.median(r["prompt_tok_s"] for r in rows[name])
        decode = statistics.median(r["decode_tok_s"] for r in rows[name])
        base = base or (prompt, decode)
        print(f"{name:>10}: prompt {prompt:7.1f} tok/s ({prompt / base[0]:.2f}x)   decode {decode:6.1f} tok/s "
              f"({decode / base[1]:.2f}x)   medians of {repeats}; CPU backend {rows[name][0]['backend']}; "
              f"greedy text {rows[name][0]['text'][:40]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
