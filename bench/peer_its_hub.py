"""Peer comparison with its-hub (inference-time scaling: best-of-n, self-consistency, particle
filtering) on the quality tasks of bench/tasks.py, both libraries against the same local
llama.cpp server (`python -m llama_cpp.server`, the embedded SmolLM2-135M model, one thread, plain
sampling), the same prompts, the same number of samples/particles N and the same per-call caps.

    sentence:    plp-swarm BestOfN (whole)  vs its-hub BestOfN + outcome reward sentence_ok
                 plp-swarm SMC (word steps) vs its-hub ParticleFiltering (3-token steps) + prefix reward
    arithmetic:  plp-swarm SelfConsistency  vs its-hub SelfConsistency (vote on the stated answer)
                 plp-swarm BestOfN (Φ_work) vs its-hub BestOfN + outcome reward exp(log Φ_work)

plp-swarm runs here through `OpenAICompatible(mode="completions")`; its-hub runs in .venv-bench
(`bench/its_hub_side.py`, a subprocess: its dependencies never load into this interpreter). Tokens
are the server's completion_tokens on both sides. Success = the same independent check
(`tasks.sentence_ok`, answer == truth). The two sides run one after the other on a shared machine,
so the sides alternate problem by problem (plp-swarm, then its-hub, on problem 1, then 2, …) and
both meet the same load; the ratios are of rates and of seconds per problem. Before every measured
run each side resets the server's prompt cache (`tasks.cold_server`, not timed): llama.cpp keeps the
last prompt's prefix, and the two sides run the arithmetic policies in opposite orders, so without
it the second run of a problem's prompt got it warm (one run measured ours/its-hub 1.60 for
SelfConsistency and 0.62 for BestOfN with the same tokens and requests: the order, not the libraries). plp-swarm requests no
log-probabilities here (no program's weight needs them) and draws words with a 3-token look-ahead.

    python -m bench.peer_its_hub [--problems 8] [--n 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
from typing import Any

from bench import tasks
from bench.common import bench_python, fmt_interval, progress, row, run_peer, wilson

PAIRS = {"sentence": [("BestOfN", "BestOfN"), ("SMC", "ParticleFiltering")],
         "arithmetic": [("SelfConsistency", "SelfConsistency"), ("BestOfN", "BestOfN")]}


def _ours(base_url: str, start: int, problems: int, n: int) -> dict[str, dict[str, list[dict]]]:
    """plp-swarm's side on problems [start, start + problems) of each task."""
    import policies
    from agents import Agent
    from agents.backends.openai_compat import LLAMA_CPP_PLAIN_SAMPLING, OpenAICompatible
    from bench.counting import OutputTokenBudget
    from bench.policies_quality import _best_finished, run_one
    from bench.quality_programs import arithmetic_programs, sentence_programs
    from policies.best_of_n import BestOfN
    from policies.self_consistency import SelfConsistency

    backend = OpenAICompatible(base_url, "smollm2", mode="completions", timeout=600, extra_body=LLAMA_CPP_PLAIN_SAMPLING)
    counter = OutputTokenBudget(backend)
    agent = Agent(name="writer", backend=counter)
    best = lambda r: r.extra["best"].value if r.extra["best"].log_weight > -math.inf else None  # noqa: E731
    out: dict[str, dict[str, list[dict]]] = {"sentence": {"BestOfN": [], "SMC": []},
                                             "arithmetic": {"SelfConsistency": [], "BestOfN": []}}
    sentence, arithmetic = sentence_programs(agent), arithmetic_programs(agent)

    def one(task: str, name: str, policy: Any, program: Any, arg: str, pick: Any) -> dict:
        tasks.cold_server(base_url)  # every measured run starts from the same server cache (not timed)
        before = backend.stats()["requests"]
        o = run_one(policy, program, arg, counter, pick)
        o["requests"] = backend.stats()["requests"] - before
        out[task][name].append(o)
        return o

    for i in range(start, start + problems):
        topic = tasks.TOPICS[i]
        for name, policy, program, pick in (("BestOfN", BestOfN(num_particles=n, seed=i), sentence["whole"], best),
                                            ("SMC", policies.SMC(num_particles=n, seed=i), sentence["stepwise"],
                                             _best_finished)):
            o = one("sentence", name, policy, program, topic, pick)
            o["ok"] = tasks.sentence_ok(o["answer"] or "")
            progress(f"plp-swarm sentence {name}: ok={o['ok']} tokens={o['tokens']} {o['seconds']:.1f}s")
        question, truth = tasks.PROBLEMS[i]
        for name, policy, pick in (("SelfConsistency", SelfConsistency(num_particles=n, seed=i), lambda r: r.extra["answer"]),
                                   ("BestOfN", BestOfN(num_particles=n, seed=i), best)):
            o = one("arithmetic", name, policy, arithmetic["whole"], question, pick)
            o["ok"] = o["answer"] == truth
            progress(f"plp-swarm arithmetic {name}: ok={o['ok']} tokens={o['tokens']} {o['seconds']:.1f}s")
    asyncio.run(counter.aclose())
    return out


def logprob_cost(base_url: str, repeats: int = 3) -> dict:
    """The server's cost of log-probabilities: the same completion request (the arithmetic prompt,
    24 tokens, plain sampling) with `logprobs: 0` and without, interleaved; seconds per call."""
    from bench.common import interleaved, median

    body = {"model": "smollm2", "prompt": tasks.arithmetic_prompt(tasks.PROBLEMS[0][0]), "max_tokens": 24,
            "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "seed": 0}

    def call(extra: dict) -> None:
        tasks.post_completion(base_url, {**body, **extra})

    times = interleaved({"with": lambda: call({"logprobs": 0}), "without": lambda: call({})}, repeats=repeats)
    return row("peer: its-hub", "llama.cpp server: completion with logprobs vs without", median(times["with"]),
               median(times["without"]), "s/call", better="lower",
               note=f"24 tokens, same seed, median of {repeats} interleaved; plp-swarm asks for them only where weights "
                    "need them (none of these programs), its-hub never does")


def _cut_sentence(text: str) -> str:
    """its-hub's particle filter stops on the step containing "."; keep the text up to that end."""
    m = re.search(r"[.!?]", text)
    return text[: m.end()] if m else text


def _stats(outs: list[dict]) -> tuple[float, str, float, float]:
    """Success (first repeat of each problem: plp-swarm's runs are seeded, so repeats would only
    copy them), mean tokens, and seconds per problem: the mean over problems of the median over
    repeats (repeats absorb the shared machine's load swings)."""
    first = [o for o in outs if o.get("repeat", 0) == 0]
    k, n = sum(o["ok"] for o in first), len(first)
    lo, hi = wilson(k, n)
    tokens = sum(o["tokens"] for o in first) / max(n, 1)
    reps = max(1, len(outs) // max(n, 1))
    per_problem = [sorted(o["seconds"] for o in outs[i * reps:(i + 1) * reps]) for i in range(n)]
    seconds = sum(s[len(s) // 2] for s in per_problem) / max(n, 1)
    return k / max(n, 1), f"{k}/{n} {fmt_interval(lo, hi)}", tokens, seconds


def compare(ours: dict, theirs: dict, version: str, n: int) -> list[dict]:
    rows = []
    for task, pairs in PAIRS.items():
        for mine, peer in pairs:
            r1, ci1, tok1, s1 = _stats(ours[task][mine])
            r2, ci2, tok2, s2 = _stats(theirs[task][peer])
            label = f"{task}: plp-swarm {mine} vs its-hub {version} {peer}, N={n}"
            rows.append(row("peer: its-hub", label + " (success)", r1, r2, "success rate",
                            note=f"ours {ci1}, {tok1:.0f} tokens/problem; its-hub {ci2}, {tok2:.0f} tokens/problem"))
            req1 = sum(o.get("requests", 0) for o in ours[task][mine]) / max(len(ours[task][mine]), 1)
            req2 = sum(o.get("calls", 0) for o in theirs[task][peer]) / max(len(theirs[task][peer]), 1)
            rows.append(row("peer: its-hub", label + " (wall)", s1, s2, "s/problem", better="lower",
                            note=f"same llama.cpp server, sides alternated problem by problem; HTTP requests/problem "
                                 f"{req1:.0f} vs {req2:.0f}; generated tokens/problem {tok1:.0f} vs {tok2:.0f}"))
            rows.append(row("peer: its-hub", label + " (wall per generated token)", s1 / max(tok1, 1) * 1e3,
                            s2 / max(tok2, 1) * 1e3, "ms/token", better="lower",
                            note="seconds per problem over generated tokens per problem: the wall time at equal tokens "
                                 "(the same algorithm on both sides draws different random lengths)"))
    return rows


def run(problems: int = 8, n: int = 6, repeats: int = 1) -> list[dict]:
    sys.path.insert(0, str(tasks.__file__).rsplit("/bench/", 1)[0])
    from agents.backends.embedded import embedded_model_path
    from tests.llama_server import start_llama_server

    if bench_python() is None:
        return [row("peer: its-hub", "its-hub comparison", math.nan, math.nan, "success rate",
                    note="skipped: .venv-bench missing (run scripts/install_bench.sh)")]
    ours: dict = {"sentence": {"BestOfN": [], "SMC": []}, "arithmetic": {"SelfConsistency": [], "BestOfN": []}}
    theirs: dict = {"sentence": {"BestOfN": [], "ParticleFiltering": []},
                    "arithmetic": {"SelfConsistency": [], "BestOfN": []}}
    with start_llama_server(embedded_model_path(), extra_args=("--n_threads", "1", "--n_threads_batch", "1",
                                                               "--n_ctx", "2048")) as (base_url, _):
        for i in range(problems):  # alternate the sides problem by problem: both meet the same load
            for r in range(repeats):
                progress(f"peer its-hub: problem {i + 1}/{problems} (repeat {r + 1}/{repeats}), plp-swarm side, N={n}")
                _extend(ours, _ours(base_url, i, 1, n), repeat=r)
                progress(f"peer its-hub: problem {i + 1}/{problems} (repeat {r + 1}/{repeats}), its-hub side")
                raw = run_peer("its_hub_side.py", ["--base-url", base_url, "--problems", "1", "--n", str(n),
                                                   "--start", str(i)], timeout=1800)
                peer = json.loads(raw.strip().splitlines()[-1])
                version = peer.pop("version")
                _extend(theirs, peer, repeat=r)
        cost = logprob_cost(base_url)
    for o in theirs["sentence"]["ParticleFiltering"]:
        o["answer"] = _cut_sentence(o["answer"])
        o["ok"] = tasks.sentence_ok(o["answer"])
    return compare(ours, theirs, version, n) + [cost]


def _extend(into: dict, more: dict, repeat: int = 0) -> None:
    for task, by_policy in more.items():
        for name, outcomes in by_policy.items():
            into[task][name] += [{**o, "repeat": repeat} for o in outcomes]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side per problem, alternated")
    args = parser.parse_args(argv)
    rows = run(args.problems, args.n, args.repeats)
    for r in rows:
        print(f"{r['case']:<80} {r['value']:.2f} vs {r['baseline']:.2f}  {r['note']}")
    return rows


if __name__ == "__main__":
    main()
