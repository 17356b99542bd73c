"""What a pause for a person costs: an SMC run whose particles ask a question at step 5 of 10,
paused (written to a checkpoint directory) and resumed with the answer, against the uninterrupted
run given the same answer up front; both measured in this process with interleaved repetitions.

The program is a toy (a categorical draw and a factor per step, no LLM), so the ratio shows the
whole cost of pausing against the framework's own work, the worst case: the checkpoint written at
the pause (the run asks for none, so it goes to a temporary directory), reading it back, rebuilding
every particle by replay (no live execution survives a pause), and the checkpoint the resumed run
writes after each later step (it keeps checkpointing into that directory, as a resumed crashed run
does). With real LLM latency it shrinks towards 1: replay calls no LLM. The last rows are what an
answered question costs when nothing pauses (against the answer written into the program).

    python bench/human_pause.py [--sizes 256 2048] [--share 1.0 0.5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import policies  # noqa: E402
from bench.common import interleaved, median, row  # noqa: E402
from swarm import Categorical, ask_human, factor, sample  # noqa: E402

STEPS = 10


async def ask_person() -> float:
    return await ask_human("bonus", "How much is this step worth?", schema={"type": "number"})


async def written_in() -> float:
    return 1.0


def make_program(share: float, ask: Any = ask_person):
    """A share `share` of the particles (by their first draw) asks one question at step 5."""
    async def program():
        total = 0
        asks = sample("asks", Categorical([True, False], probs=[share, 1.0 - share])) if share < 1 else True
        for t in range(STEPS):
            total += sample(f"x{t}", Categorical([0, 1, 2], probs=[0.3, 0.4, 0.3]))
            if t == 5 and asks:
                total += await ask()
            factor(f"f{t}", -abs(total - t) / 4)
        return total
    return program


def measure(n: int, share: float, repeats: int) -> dict[str, Any]:
    program = make_program(share)
    policy = policies.SMC(num_particles=n, seed=0, ess_threshold=0.5)

    def uninterrupted() -> Any:
        return policy.model_copy(update={"answers": {"bonus": 1.0}}).run(program)

    def paused_and_resumed() -> Any:
        waiting = policy.run(program)  # no checkpoint asked for: the pause writes a temporary directory
        assert waiting.status == "waiting"
        try:
            return policy.resume(waiting.checkpoint, program, answers={"bonus": 1.0})
        finally:
            shutil.rmtree(waiting.checkpoint, ignore_errors=True)

    same = uninterrupted().log_evidence == paused_and_resumed().log_evidence
    times = interleaved({"uninterrupted": uninterrupted, "paused": paused_and_resumed}, repeats)
    value, baseline = median(times["paused"]), median(times["uninterrupted"])
    return row("human_pause", f"N={n}, {share:.0%} of the particles ask at step 5 of {STEPS}", value, baseline, "s",
               better="lower", note=f"pause + resume vs the uninterrupted run; same log Z: {same}; "
                                    f"median of {repeats} interleaved")


def measure_answered(n: int, repeats: int) -> dict[str, Any]:
    """An answered question (three events: question, answer site, answer) against the same program
    with the answer written in: what asking costs when nothing pauses."""
    asked, constant = make_program(1.0), make_program(1.0, written_in)
    policy = policies.SMC(num_particles=n, seed=0, ess_threshold=0.5, answers={"bonus": 1.0})
    times = interleaved({"asked": lambda: policy.run(asked), "constant": lambda: policy.run(constant)}, repeats)
    value, baseline = median(times["asked"]), median(times["constant"])
    return row("human_pause", f"N={n}, every particle asks one answered question", value, baseline, "s",
               better="lower", note=f"vs the answer written into the program; median of {repeats} interleaved")


def run(sizes: tuple[int, ...] = (256, 2048), shares: tuple[float, ...] = (1.0, 0.5), repeats: int = 3) -> list[dict[str, Any]]:
    return [measure(n, share, repeats) for n in sizes for share in shares] + \
        [measure_answered(n, repeats) for n in sizes]


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
