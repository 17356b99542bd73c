"""Self-consistency on small arithmetic word problems: many reasoning paths from the embedded
SmolLM2-135M model, each checked by a Python verifier of the work, and a weighted vote over answers.

Each trace τ is one few-shot completion ("8 - 3 = 5. The answer is 5."); `extract_answer` reads the
answer a(τ) from it. A verifier grades the *work*, never the answer against the truth it does not
know: a path must state an answer (a `guarantee`), every equation "x ∘ y = z" is recomputed, the
answer should be the last equation's result and the operands should be numbers from the question
(`work_log_potential` in arithmetic_work.py, next to this file):

    Φ(τ) = 1[a(τ) stated] · exp(−3·#wrong equations − 3·1[a(τ) ≠ last result] − #operands not in the question),

and `SelfConsistency` estimates the answer marginal of the target (docs/theory.md §9.1)

    p(τ) ∝ π(τ) · Φ(τ),     p(a) = Σ_τ p(τ) 1[a(τ) = a]  ≈  Σ_i w̄_i 1[a(τ_i) = a],  w_i = Φ(τ_i),

with a Wilson interval for the winner's share at the vote weights' effective sample size. The
classic majority vote (Wang et al. 2022) is the Φ = 1[a stated] special case; both are printed, with the
accuracy of a single sample (of π) for comparison. The model is small: expect wrong answers, and
read the intervals.

    python examples/self_consistency.py [--samples 12] [--problems 5]
    swarm run examples/self_consistency.py --arg question="Mia has 6 cookies. She eats 2. How many cookies are left?"
"""

from __future__ import annotations

from swarm.agents_package import require_own_agents

require_own_agents()  # a clear error if another `agents` package (openai-agents) shadows plp-swarm's

import argparse
import math
from typing import Any

import policies
from agents import Agent, GenerationSettings
# the problems, the prompt and the verifier of the work, a stdlib-only file next to this one (bench/tasks.py grades with it too)
from arithmetic_work import PROBLEMS as ALL_PROBLEMS, extract_answer, few_shot_prompt, work_log_potential
from swarm import NoSurvivingParticles, factor, guarantee, sample

PROBLEMS = ALL_PROBLEMS[:6]

SOLVER = Agent(name="solver", settings=GenerationSettings(temperature=1.0, max_tokens=24, stop=("\n",)))
POLICY = policies.SelfConsistency(num_particles=12, seed=0)
DEFAULTS = {"args": {"question": PROBLEMS[0][0]}}


async def program(question: str) -> int | None:
    """One reasoning path: sample a completion, grade its work, return its answer."""
    text = await sample("reasoning", SOLVER.generate(raw_prompt=few_shot_prompt(question)))
    answer = extract_answer(text)
    guarantee("states_answer", answer is not None)
    factor("work_checks", work_log_potential(question, text))
    return answer


def solve(question: str, samples: int, seed: int) -> dict[str, Any]:
    """Weighted and majority votes over `samples` paths, plus the single-sample accuracy data."""
    try:
        r = POLICY.model_copy(update={"num_particles": samples, "seed": seed}).run(program, question)
    except NoSurvivingParticles:  # no path stated an answer: nothing to vote on
        return {"shares": {}, "answer": None, "interval": (0.0, 1.0), "n_eff": 0.0, "majority": None,
                "votes": {}, "answers": [None] * samples, "log_evidence": -math.inf, "tokens": 0}
    extra = r.extra
    majority = max(extra["votes"], key=extra["votes"].__getitem__)  # the first-seen among ties
    return {"shares": extra["shares"], "answer": extra["answer"], "interval": extra["interval"],
            "n_eff": extra["n_eff"], "majority": majority, "votes": extra["votes"],
            "answers": [p.value for p in r.particles], "log_evidence": r.log_evidence,
            "tokens": r.diagnostics.tokens}


def show(question: str, truth: int, s: dict[str, Any]) -> None:
    if s["answer"] is None:
        print(f"\n{question}  (truth {truth})\n  no path stated an answer (log Z = -inf)")
        return
    lo, hi = s["interval"]
    shares = ", ".join(f"{a}: {p:.2f}" for a, p in list(s["shares"].items())[:4])
    print(f"\n{question}  (truth {truth})")
    print(f"  weighted vote  {s['answer']!s:>4}  share {s['shares'][s['answer']]:.2f}, 95% CI [{lo:.2f}, {hi:.2f}] "
          f"at n_eff {s['n_eff']:.1f}   {'right' if s['answer'] == truth else 'wrong'}")
    top = s["votes"][s["majority"]]
    tie = " (a tie, first seen wins)" if sum(v == top for v in s["votes"].values()) > 1 else ""
    print(f"  majority vote  {s['majority']!s:>4}  {top} of {sum(s['votes'].values())} votes{tie}   "
          f"{'right' if s['majority'] == truth else 'wrong'}")
    print(f"  answer marginal {{{shares}}}   log Z = {s['log_evidence']:.2f}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=POLICY.num_particles, help="reasoning paths per problem")
    parser.add_argument("--problems", type=int, default=len(PROBLEMS), help=f"how many of the {len(PROBLEMS)}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    results, hits = [], {"single": 0.0, "majority": 0, "weighted": 0}
    for question, truth in PROBLEMS[:args.problems]:
        s = solve(question, args.samples, args.seed)
        show(question, truth, s)
        hits["single"] += sum(a == truth for a in s["answers"]) / len(s["answers"])
        hits["majority"] += s["majority"] == truth
        hits["weighted"] += s["answer"] == truth
        results.append({"question": question, "truth": truth, **s})
    k = len(results)
    print(f"\naccuracy over {k} problems: one sample {hits['single'] / k:.2f} (mean over samples), "
          f"majority vote {hits['majority']}/{k}, weighted vote {hits['weighted']}/{k}   "
          f"tokens = {sum(s['tokens'] for s in results)}")
    return {"problems": results, "accuracy": {key: v / k for key, v in hits.items()}}


if __name__ == "__main__":
    main()
