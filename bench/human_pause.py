"""What a pause for a person costs: an SMC run whose particles ask a question at step 5 of 10,
paused (written to a checkpoint directory) and resumed with the answer, against the uninterrupted
run given the same answer up front; both measured in this process with interleaved repetitions.

The program is a toy (a categorical draw and a factor per step, no LLM), so the ratio shows the
whole cost of pausing against the framework's own work, the worst case: the checkpoint written at
the pause, reading it back, rebuilding the waiting particles by replay, and the executions the
resumed run rebuilds because no live one survives a pause. With real LLM latency it shrinks
towards 1 (replay calls no LLM).

    python bench/human_pause.py [--sizes 256 2048] [--share 1.0 0.5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import policies  # noqa: E402
from bench.common import interleaved, median, row  # noqa: E402
from swarm import Categorical, ask_human, factor, sample  # noqa: E402

STEPS = 10


def make_program(share: float):
    """A share `share` of the particles (by their first draw) asks one question at step 5."""
    async def program():
        total = 0
        asks = sample("asks", Categorical([True, False], probs=[share, 1.0 - share])) if share < 1 else True
        for t in range(STEPS):
            total += sample(f"x{t}", Categorical([0, 1, 2], probs=[0.3, 0.4, 0.3]))
            if t == 5 and asks:
                bonus = await ask_human("bonus", "How much is this step worth?", schema={"type": "number"})
                total += bonus
            factor(f"f{t}", -abs(total - t) / 4)
        return total
    return program


def measure(n: int, share: float, repeats: int) -> dict[str, Any]:
    program = make_program(share)
    policy = policies.SMC(num_particles=n, seed=0, ess_threshold=0.5)

    def uninterrupted() -> Any:
        return policy.model_copy(update={"answers": {"bonus": 1.0}}).run(program)

    def paused_and_resumed() -> Any:
        with tempfile.TemporaryDirectory() as directory:
            waiting = policy.model_copy(update={"checkpoint": Path(directory)}).run(program)
            assert waiting.status == "waiting"
            return policy.resume(directory, program, answers={"bonus": 1.0})

    same = uninterrupted().log_evidence == paused_and_resumed().log_evidence
    times = interleaved({"uninterrupted": uninterrupted, "paused": paused_and_resumed}, repeats)
    value, baseline = median(times["paused"]), median(times["uninterrupted"])
    return row("human_pause", f"N={n}, {share:.0%} of the particles ask at step 5 of {STEPS}", value, baseline, "s",
               better="lower", note=f"pause + resume vs the uninterrupted run; same log Z: {same}; "
                                    f"median of {repeats} interleaved")


def run(sizes: tuple[int, ...] = (256, 2048), shares: tuple[float, ...] = (1.0, 0.5), repeats: int = 3) -> list[dict[str, Any]]:
    return [measure(n, share, repeats) for n in sizes for share in shares]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--share", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = run(tuple(args.sizes), tuple(args.share), args.repeats)
    for r in rows:
        print(f"{r['case']}: {r['value']:.3f} s vs {r['baseline']:.3f} s, ratio {r['ratio']:.2f} ({r['note']})")
    return rows


if __name__ == "__main__":
    main()
