"""A driver process for the pause-and-resume tests: a program that asks people questions, run or
resumed under SMC, Forward, Importance or BestOfN in a process of its own that exits afterwards.

    python -m tests.human_driver run POLICY DIR                # prints the waiting Result as JSON, exits
    python -m tests.human_driver resume POLICY DIR ANSWERS OUT # resumes (program found from the
                                                               # checkpoint), pickles the result summary

The program's particles ask at different steps, with question texts that depend on what they drew
(so several distinct pending questions, each shared by many particles), and some never ask.
"""

from __future__ import annotations

import json
import pickle
import sys

import policies
from swarm import Categorical, ask_human, factor, guarantee, sample

PREFERENCE = {"a": 0.0, "b": 0.5, "c": -0.5}


async def program(rounds: int = 3):
    x = sample("x", Categorical(["a", "b", "c"], probs=[0.5, 0.3, 0.2]))
    factor("prior_pref", PREFERENCE[x])
    if x != "a":  # these particles wait at step 2; the others reach their next factor
        keep = await ask_human("keep", f"Keep {x}?", schema={"enum": ["yes", "no"]})
        guarantee("kept", keep == "yes" or x == "b")
    total = 0
    for t in range(rounds):
        y = sample(f"y{t}", Categorical([0, 1, 2], probs=[0.2, 0.5, 0.3]))
        total += y
        if t == 1 and total >= 3:  # a second question, later, from other particles
            bonus = await ask_human("bonus", "How much is a high total worth?", schema={"type": "number"})
            factor("bonus_weight", float(bonus))
        factor(f"f{t}", -abs(total - t - 1) / 2)
    return x, total


ANSWERS = {"keep": "no", "bonus": 0.75}
ARGS = (3,)


def make_policy(name: str, checkpoint: str | None = None) -> policies.Policy:
    if name == "smc":
        return policies.SMC(num_particles=120, seed=5, ess_threshold=0.8, checkpoint=checkpoint)
    if name == "importance":
        return policies.Importance(num_particles=60, seed=5, checkpoint=checkpoint)
    if name == "best_of_n":
        return policies.BestOfN(num_particles=30, seed=5, objective="joint", checkpoint=checkpoint)
    return policies.Forward(num_particles=60, seed=5, checkpoint=checkpoint)


def summary(result) -> dict:
    """Everything a result is, for an exact comparison across processes (timings left out)."""
    d = result.diagnostics
    return {"status": result.status, "log_evidence": result.log_evidence,
            "particles": [(p.id, p.value, p.log_weight, p.status, p.parent_id) for p in result.particles],
            "traces": [p.trace.events for p in result.particles],
            "steps": [s.model_dump() for s in d.steps], "genealogy": d.genealogy, "deaths": d.deaths,
            "lost": d.lost, "tokens": d.tokens, "llm_calls": d.llm_calls,
            "pending": [q.model_dump() for q in result.pending],
            "extra": {k: (v.id if k == "best" else v) for k, v in result.extra.items()}}


if __name__ == "__main__":
    command, policy_name, directory = sys.argv[1:4]
    policy = make_policy(policy_name, directory)
    if command == "run":
        result = policy.run(program, *ARGS)
        print(json.dumps({"status": result.status, "checkpoint": result.checkpoint,
                          "pending": [q.model_dump() for q in result.pending]}))
    else:
        answers, out = json.loads(sys.argv[4]), sys.argv[5]
        result = policy.resume(directory, answers=answers)
        with open(out, "wb") as f:
            pickle.dump(summary(result), f)
        print(json.dumps({"status": result.status, "pending": [q.model_dump() for q in result.pending]}))
