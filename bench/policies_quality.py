"""Quality per token of BestOfN, SelfConsistency, SMC and TwistedSMC on the embedded SmolLM2-135M
model, at equal budgets of *generated* tokens (bench/tasks.py has the tasks).

Every policy gets the same cap B on generated tokens per problem (`policies.Budget(max_tokens=B)`
through `bench.counting.OutputTokenBudget`, so re-sent prompt tokens, which the KV cache reuses,
are not charged) and stops cleanly when it is spent:
- BestOfN / SelfConsistency draw whole completions one at a time until B is spent (`batch_size=1`);
- SMC runs the stepwise program with N particles; when every particle dies it restarts with a new
  seed and the tokens left (as a user would), until it has an answer or the budget is spent;
- TwistedSMC likewise, with fewer particles and `RolloutCritic(num_rollouts=1)`:
  V̂(s) = log w(τ)/w(s) of one rollout τ ~ π(·|s) (exp V̂ unbiased for exp V); the rollouts' tokens
  are charged to the same budget.

(a) constrained sentence: success = the policy's answer passes `tasks.sentence_ok` (re-checked
    here, independently of any weight). BestOfN's answer is its best draw; SMC's the finished
    particle of highest weight; a run whose particles all die has no answer. SelfConsistency
    votes on answers, and a sentence task has no shared answer to vote on: not run.
(b) arithmetic: success = the answer equals the truth. BestOfN: the draw with the best verifier
    potential; SelfConsistency: the weighted vote; SMC/TwistedSMC: the mode of the answer marginal.

Reported per task and policy: success rate with a 95% Wilson interval over problems, generated
tokens per problem (mean, 95% bootstrap interval) and wall time; ratio = rate / BestOfN's rate.

    python -m bench.policies_quality [--problems 6] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from typing import Any, Callable

from bench import tasks
from bench.common import bootstrap_mean, fmt_interval, progress, row, wilson

SENTENCE_BUDGET = 160
ARITHMETIC_BUDGET = 120
SMC_PARTICLES = 6
TWISTED_PARTICLES = 2
RESTART_MIN_TOKENS = 8


def _best_finished(result: Any) -> Any:
    finished = [p for p in result.particles if p.status == "finished" and p.log_weight > -math.inf]
    return max(finished, key=lambda p: p.log_weight).value if finished else None


def _marginal_mode(result: Any) -> Any:
    votes: dict[Any, float] = {}
    finished = [p for p in result.particles if p.status == "finished" and p.log_weight > -math.inf]
    if not finished:
        return None
    top = max(p.log_weight for p in finished)
    for p in finished:
        votes[p.value] = votes.get(p.value, 0.0) + math.exp(p.log_weight - top)
    return max(votes, key=votes.__getitem__)


def policy_table(budget: int, seed: int) -> dict[str, tuple[Any, str, Callable[[Any], Any]]]:
    """name -> (policy, program kind, answer extractor)."""
    import policies
    from policies.best_of_n import BestOfN
    from policies.critics import RolloutCritic
    from policies.self_consistency import SelfConsistency
    from policies.twisted_smc import TwistedSMC

    cap = policies.Budget(max_tokens=budget)
    return {
        "BestOfN": (BestOfN(num_particles=10_000, batch_size=1, seed=seed, budget=cap), "whole",
                    lambda r: r.extra["best"].value if r.extra["best"].log_weight > -math.inf else None),
        "SelfConsistency": (SelfConsistency(num_particles=10_000, batch_size=1, seed=seed, budget=cap), "whole",
                            lambda r: r.extra["answer"]),
        "SMC": (policies.SMC(num_particles=SMC_PARTICLES, seed=seed, budget=cap), "stepwise", None),
        "TwistedSMC": (TwistedSMC(num_particles=TWISTED_PARTICLES, critic=RolloutCritic(num_rollouts=1), seed=seed,
                                  budget=cap), "stepwise", None),
    }


def run_one(policy: Any, program: Any, arg: str, counter: Any, pick: Callable[[Any], Any],
            budget: int | None = None) -> dict[str, Any]:
    """Run one policy on one problem: its answer (None when every particle died), tokens, time.

    With a `budget`, a run that ends without an answer (every particle died) is restarted with a new
    seed and the tokens left, until there is an answer or fewer than RESTART_MIN_TOKENS are left:
    what a user does with SMC when a population dies, and what BestOfN does by drawing until the
    budget is spent."""
    import policies
    from swarm import NoSurvivingParticles

    counter.reset()
    start = time.perf_counter()
    answer, runs = None, 0
    while True:
        current = policy
        if budget is not None:
            current = policy.model_copy(update={"seed": policy.seed + 7919 * runs,
                                                "budget": policies.Budget(max_tokens=budget - counter.output_tokens)})
        try:
            answer = pick(current.run(program, arg))
        except NoSurvivingParticles:
            answer = None
        runs += 1
        if answer is not None or budget is None or budget - counter.output_tokens < RESTART_MIN_TOKENS:
            break
    return {"answer": answer, "tokens": counter.output_tokens, "seconds": time.perf_counter() - start,
            "calls": counter.calls, "runs": runs}


def evaluate(task: str, problems: list[tuple[str, Any]], names: list[str], counter: Any, agent: Any,
             seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Every policy on every problem; outcome dicts with "ok" (success) added."""
    from bench.quality_programs import arithmetic_programs, sentence_programs

    programs = sentence_programs(agent) if task == "sentence" else arithmetic_programs(agent)
    budget = SENTENCE_BUDGET if task == "sentence" else ARITHMETIC_BUDGET
    outcomes: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for i, (arg, truth) in enumerate(problems):
        table = policy_table(budget, seed + i)
        for name in names:
            policy, kind, pick = table[name]
            pick = pick or (_best_finished if task == "sentence" else _marginal_mode)
            out = run_one(policy, programs[kind], arg, counter, pick, budget if kind == "stepwise" else None)
            out["ok"] = tasks.sentence_ok(out["answer"] or "") if task == "sentence" else out["answer"] == truth
            outcomes[name].append(out)
            progress(f"quality {task} #{i} {name}: ok={out['ok']} tokens={out['tokens']} runs={out['runs']} "
                     f"{out['seconds']:.1f}s answer={out['answer']!r}")
    return outcomes


def summarise(task: str, outcomes: dict[str, list[dict[str, Any]]], budget: int, source: str = "plp-swarm",
              baseline: str = "BestOfN") -> list[dict]:
    rows = []
    base = outcomes.get(baseline) or next(iter(outcomes.values()))
    base_rate = sum(o["ok"] for o in base) / max(len(base), 1)
    for name, outs in outcomes.items():
        k, n = sum(o["ok"] for o in outs), len(outs)
        lo, hi = wilson(k, n)
        tokens = [o["tokens"] for o in outs]
        t_lo, t_hi = bootstrap_mean(tokens)
        secs = sum(o["seconds"] for o in outs) / max(n, 1)
        runs = sum(o.get("runs", 1) for o in outs)
        note = (f"{k}/{n} ok, 95% CI {fmt_interval(lo, hi)}; tokens/problem {sum(tokens) / max(n, 1):.0f} "
                f"{fmt_interval(t_lo, t_hi, 0)} (cap {budget}); {secs:.1f} s/problem"
                + (f"; {runs} runs incl. restarts" if runs > n else ""))
        rows.append(row(f"quality: {task}", f"{task}: {source} {name} vs {baseline}", k / max(n, 1), base_rate,
                        "success rate", note=note))
    return rows


def run(n_problems: int = 6, seed: int = 0) -> list[dict]:
    from agents import Agent
    from agents.backends.llama_cpp import LlamaCpp
    from bench.counting import OutputTokenBudget

    counter = OutputTokenBudget(LlamaCpp(n_threads=1))  # see bench/llm_throughput.py on threads
    agent = Agent(name="writer", backend=counter)
    sentence = [(t, None) for t in tasks.TOPICS[:n_problems]]
    arithmetic = tasks.PROBLEMS[:n_problems]
    rows = summarise("sentence", evaluate("sentence", sentence, ["BestOfN", "SMC", "TwistedSMC"], counter, agent, seed),
                     SENTENCE_BUDGET)
    rows += summarise("arithmetic", evaluate("arithmetic", arithmetic, ["BestOfN", "SelfConsistency", "SMC",
                                                                       "TwistedSMC"], counter, agent, seed),
                      ARITHMETIC_BUDGET)
    asyncio.run(counter.aclose())
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = run(args.problems, args.seed)
    for r in rows:
        print(f"{r['benchmark']:<22} {r['case']:<42} {r['value']:.2f} vs {r['baseline']:.2f}  {r['note']}")
    return rows


if __name__ == "__main__":
    main()
