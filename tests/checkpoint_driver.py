"""A driver process for the kill-and-resume test: a checkpointed SMC over an agent whose backend is
the `CallCountingBackend` TEST DOUBLE (every completed call is a line of a counter file).

    python -m tests.checkpoint_driver CHECKPOINT_DIR COUNTER_FILE
"""

from __future__ import annotations

import sys

import policies
from agents import Agent
from swarm import factor
from tests.fake_backends import CallCountingBackend

ROUNDS = 6


def make_program(counter_path: str):
    writer = Agent(name="writer", system="Write.", hosting="local",
                   backend=CallCountingBackend(counter_path, latency_s=0.05, spread_s=0.02))

    async def program(rounds: int):
        text = ""
        for t in range(rounds):
            text = await writer.ask(f"step {t} after {text!r}", name=f"write{t}")
            factor(f"score{t}", -int(text.split()[-1]) / 4.0)
        return text

    return program


def make_policy(checkpoint: str | None = None) -> policies.SMC:
    return policies.SMC(num_particles=24, seed=17, ess_threshold=0.9, checkpoint=checkpoint)


if __name__ == "__main__":
    directory, counter = sys.argv[1:3]
    make_policy(directory).run(make_program(counter), ROUNDS)
    print("finished")
