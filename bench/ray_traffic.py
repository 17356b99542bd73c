"""Ray traffic: the bytes a step ships between the coordinator and the segment workers must not grow
with the step number.

A debate-shaped program (two debaters answer in turn, every round's prompt carries the transcript so
far, a judge's score enters as a shaping factor so SMC resamples between rounds) runs under SMC on
`runtime="ray"` with a test-double backend (no model). `RayRuntime(measure_traffic=True)` counts, per
step, the bytes of the tasks sent and of the segments received, pickled as Ray ships them. Workers
keep their particles' executions and recorded paths, so a step ships only what it adds; before the
engine rewrite whole traces travelled both ways every step (O(N·T²) traffic).

Rows: bytes at the last step / bytes at step 1, sent and received (goal ≤ 1.5).

    python -m bench.ray_traffic [--particles 40] [--rounds 6]
"""

from __future__ import annotations

import argparse


def debate_program(rounds: int, backend):
    from agents import Agent, GenerationSettings
    from swarm import factor

    settings = GenerationSettings(max_tokens=8)
    alice = Agent(name="alice", system="You argue for the answer.", backend=backend, settings=settings, hosting="local")
    bob = Agent(name="bob", system="You argue against it.", backend=backend, settings=settings, hosting="local")

    async def program():
        transcript = "Question: is the sky blue?\n"
        for r in range(rounds):
            a = await alice.ask(transcript + "Alice:", name=f"alice{r}")
            transcript += f"Alice: {a}\n"
            b = await bob.ask(transcript + "Bob:", name=f"bob{r}", sender="alice")
            transcript += f"Bob: {b}\n"
            factor(f"judge{r}", 0.3 * ((len(a) + r) % 3), shaping=True)
        return transcript.count("ok")

    return program


def measure(particles: int, rounds: int) -> list[dict[str, int]]:
    import policies
    from bench.fake_backend import FakeLatencyBackend
    from swarm.ray_runtime import RayRuntime

    runtime = RayRuntime(num_workers=2, measure_traffic=True)
    try:
        policies.SMC(num_particles=particles, seed=0, ess_threshold=0.9, runtime=runtime).run(
            debate_program(rounds, FakeLatencyBackend(0.0)))
        return list(runtime.traffic)
    finally:
        import asyncio

        asyncio.run(runtime.aclose())


def run(particles: int = 40, rounds: int = 6) -> list[dict]:
    from bench.common import row

    traffic = measure(particles, rounds)
    first, last = traffic[0], traffic[rounds - 1]
    return [row("ray traffic", f"debate N={particles}: bytes {kind} at step {rounds} / step 1", last[kind], first[kind],
                "B", better="lower", note=f"goal <= 1.5; per step: {[t[kind] for t in traffic]}")
            for kind in ("sent", "received")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    for r in run(args.particles, args.rounds):
        print(f"{r['case']:<55} {r['value']:>10,.0f} vs {r['baseline']:>10,.0f} {r['unit']}  ratio {r['ratio']:.2f}  {r['note']}")


if __name__ == "__main__":
    main()
