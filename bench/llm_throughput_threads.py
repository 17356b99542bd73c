"""How many llama.cpp threads: 1 against 2 on this machine, single sequence and batched ×16 (llama.cpp's
low-level API, `bench.llm_throughput_raw`), with and without another process keeping one core busy.

llama.cpp's threads meet at a barrier after every operation of the graph and spin while they wait,
so a step runs at the pace of its slowest thread: when another process takes a core, the second
thread is descheduled for whole scheduler slices and every barrier waits for it. The rows give, for
each condition, tokens/s with 2 threads against 1 (ratio > 1: 2 threads are faster). Repetitions are
interleaved over all eight configurations; medians reported. The "quiet" condition is only as quiet
as the shared machine is (its load average is in the notes).

Measured (2-core AMD EPYC shared with other jobs, 24 tokens a sequence, medians of 3), 2 threads /
1 thread: at load average 5-8, single 0.07, batched 0.26, with a busy core 0.09 and 0.14; at load
average 13-20, single 0.10, batched 0.11, with a busy core 0.03 and 0.10. Hence `LlamaCpp`'s default
of 1 thread.

    python -m bench.llm_throughput_threads [--repeats 3] [--tokens 32]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from typing import Any, Iterator

from bench.common import median, progress, row


@contextlib.contextmanager
def busy_core(on: bool) -> Iterator[None]:
    """Another process spinning on one core while the body runs (stopped by its own pid)."""
    if not on:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.2)
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def run(repeats: int = 3, tokens: int = 32) -> list[dict]:
    from bench import llm_throughput_raw as raw

    model = raw.load_model()
    kinds = {"single": lambda t: raw.single(model, t, tokens), "batched x16": lambda t: raw.batched(model, t, tokens)}
    rates: dict[tuple[str, str, int], list[float]] = {}
    loads: list[float] = []
    try:
        for r in range(repeats):
            for loaded in ((False, True) if r % 2 == 0 else (True, False)):
                condition = "another process on a core" if loaded else "no extra load"
                with busy_core(loaded):
                    loads.append(os.getloadavg()[0])
                    for kind, fn in kinds.items():
                        for threads in ((1, 2) if r % 2 == 0 else (2, 1)):
                            n, seconds = fn(threads)
                            rates.setdefault((condition, kind, threads), []).append(n / seconds)
                progress(f"threads: repeat {r + 1}/{repeats} done")
    finally:
        model.close()
    rows = []
    for condition in ("no extra load", "another process on a core"):
        for kind in kinds:
            two, one = (median(rates[(condition, kind, t)]) for t in (2, 1))
            rows.append(row("llm throughput (threads)", f"raw llama.cpp {kind}, 2 threads vs 1 ({condition})", two, one,
                            "tokens/s", note=f"median of {repeats}; load average {min(loads):.1f}-{max(loads):.1f} "
                                             f"on {os.cpu_count()} cores"))
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args(argv)
    rows = run(args.repeats, args.tokens)
    for r in rows:
        print(f"{r['case']:<72} {r['value']:7.1f} vs {r['baseline']:7.1f} tokens/s  ratio {r['ratio']:.3f}  {r['note']}")
    return rows


if __name__ == "__main__":
    main()
