"""Memory of the global trace: a chat agent's trace must grow linearly in its turns.

A chat agent answers T turns, each prompt carrying the whole conversation so far (system prompt,
every earlier question and answer): the prompts alone hold O(T²) message copies. The global trace
stores every message once and each prompt as a chain pointing at the previous one
(`swarm.event_tree.PayloadStore`), so the bytes a particle's trace holds grow as O(T).

Measured with tracemalloc: the Python allocations a finished SMC run's `Result` (its global trace)
keeps alive, per particle, at T = 10, 20 and 40 turns, with a test-double backend (no model).
Rows: bytes per particle at each T, and the growth ratios bytes(40)/bytes(20) and bytes(20)/bytes(10)
(2.0 is linear, 4.0 quadratic).

One more row for `policies.VectorizedSMC`, whose memory is O(N·T) by design (every site's N values
are the particles' traces): the toy filter of bench/toy_programs.py with explicit steps, N = 100,000
particles resampled at every one of T = 200 steps, its peak traced allocation against the data the
run must keep (each step's sample values, their log q and the factor's log-potentials, and the
resampling's ancestors: 4·8 bytes a particle a step). Before the genealogy kept its arrays (end of
run: lists of Python ints) and the final gather went in place, the peak was 3.1× that data
(1.97 GB; 0.56 GB after, 0.88×).

    python -m bench.engine_memory [--particles 50] [--turns 10 20 40] [--vector-n 100000 --vector-steps 200]
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc


def chat_program(turns: int, backend):
    from agents import Agent, ChatMessage, GenerationSettings
    from swarm import factor

    agent = Agent(name="assistant", system="You are a helpful assistant who answers in one short sentence. " * 3,
                  backend=backend, settings=GenerationSettings(max_tokens=8))

    async def program():
        history: list[ChatMessage] = []
        for t in range(turns):
            question = f"Question number {t}: what would you say about topic {t}?"
            reply = await agent.ask(question, history=history, name=f"turn{t}")
            history = [*history, ChatMessage(role="user", content=question),
                       ChatMessage(role="assistant", content=reply)]
            factor(f"f{t}", 0.0)
        return len(history)

    return program


def bytes_per_particle(turns: int, particles: int) -> float:
    import policies
    from bench.fake_backend import FakeLatencyBackend

    program = chat_program(turns, FakeLatencyBackend(0.0))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = policies.SMC(num_particles=particles, seed=0, ess_threshold=0.0).run(program)
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert all(p.value == 2 * turns for p in result.particles)
    del result
    return kept / particles


def vectorized_peak(n: int, steps: int) -> float:
    """Peak bytes traced while VectorizedSMC runs the toy filter (N = n, resampling every step) and
    builds its `Result`."""
    import policies
    from bench.toy_programs import toy_steps_program

    program = toy_steps_program(steps)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    result = policies.VectorizedSMC(num_particles=n, ess_threshold=1.0, seed=0).run(program)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert len(result.diagnostics.genealogy) == steps + 1 and len(result.particles) == n
    del result
    gc.collect()
    return peak


def run(particles: int = 50, turns: tuple[int, ...] = (10, 20, 40), vector_n: int = 100_000,
        vector_steps: int = 200) -> list[dict]:
    from bench.common import row

    bytes_per_particle(2, 4)   # warm-up: the first run imports and caches what every run shares
    sizes = {t: bytes_per_particle(t, particles) for t in sorted(turns)}
    rows = [row("engine memory", f"chat agent, {t} turns: bytes kept per particle", sizes[t], sizes[min(sizes)], "B",
                better="lower", note=f"ratio to {min(sizes)} turns (linear: {t / min(sizes):.1f})") for t in sorted(sizes)]
    ts = sorted(sizes)
    for a, b in zip(ts, ts[1:]):
        rows.append(row("engine memory", f"growth bytes({b} turns) / bytes({a} turns)", sizes[b], sizes[a], "B",
                        better="lower", note=f"linear {b / a:.1f}, quadratic {(b / a) ** 2:.1f}"))
    if vector_n:
        data = 4 * 8 * vector_n * vector_steps
        rows.append(row("engine memory", f"VectorizedSMC N={vector_n:,}, {vector_steps} steps, resample every step: "
                        "peak bytes / the run's data", vectorized_peak(vector_n, vector_steps), data, "B",
                        better="lower", note="data = N·T·(value, log q, log-potential, ancestor), 8 bytes each; "
                        "tracemalloc peak, run and Result"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=50)
    parser.add_argument("--turns", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--vector-n", type=int, default=100_000, help="0: no VectorizedSMC row")
    parser.add_argument("--vector-steps", type=int, default=200)
    args = parser.parse_args()
    for r in run(args.particles, tuple(args.turns), args.vector_n, args.vector_steps):
        print(f"{r['case']:<55} {r['value']:>12,.0f} vs {r['baseline']:>12,.0f} {r['unit']}  ratio {r['ratio']:.2f}  {r['note']}")


if __name__ == "__main__":
    main()
