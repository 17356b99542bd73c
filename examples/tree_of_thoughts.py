"""Tree of thoughts for the Game of 24: the embedded SmolLM2-135M model proposes arithmetic steps,
a Python verifier values the partial states, and `TreeSearch` (MCTS with a MellowMax backup) decides
which states to expand. Compared with best-of-N over whole games at the same number of LLM calls.

A trace is one game: at each step the model proposes "a ∘ b" from the numbers left (few-shot
prompt, one line); Python checks that a and b are available and computes the result (the model is
never trusted with arithmetic); an invalid step fails a `guarantee`. The numbers left are recorded
as an `interact` observation, and the finished game is scored by how close it lands:

    Φ(τ) = 1[every step valid] · exp(−|result(τ) − 24|),       score(τ) = log Φ(τ)  (objective="weight").

`TreeSearch` does not sample p ∝ πΦ: it searches for high-scoring traces (ties of score 0 are the
solutions). Each node is a partial game; its value is score + V̂, with the verifier's estimate

    V̂(s) = −min_{r reachable from the numbers left} |r − 24|      (0 iff 24 is still reachable),

backed up with mellowmax mm_ω(Q(children)) = (LSE(ωQ) − log n)/ω (docs/theory.md §7.2): between the mean
and the max of the children, so a state is good when *several* continuations are, without the
path-counting growth of log-sum-exp. Every distinct finished game found is returned; the
`log_evidence` is the lower bound log Σ_found π(τ)Φ(τ) ≤ log Z.

    python examples/tree_of_thoughts.py [--numbers 4 6 2 2] [--simulations 12] [--expand 6]
    swarm run examples/tree_of_thoughts.py
"""

from __future__ import annotations

from swarm.agents_package import require_own_agents

require_own_agents()  # a clear error if another `agents` package (openai-agents) shadows plp-swarm's

import argparse
import itertools
import math
import re
from fractions import Fraction
from typing import Any

import policies
from agents import Agent, GenerationSettings
from swarm import NoSurvivingParticles, factor, guarantee, interact, sample
from swarm.trace import Trace

TARGET = 24
FEW_SHOT = """Use the numbers to reach 24. Each step combines two numbers.

Numbers: 4 6 2 2
Step: 4 * 6 = 24
Numbers: 24 2 2
Step: 2 / 2 = 1
Numbers: 24 1
Step: 24 * 1 = 24

Numbers: 3 8 5 2
Step: 5 - 2 = 3
Numbers: 3 8 3
Step: 3 * 8 = 24
Numbers: 24 3
"""
STEP = re.compile(r"^\s*(\d+)\s*([-+*/x×])\s*(\d+)")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
       "/": lambda a, b: a / b if b else None}

PROPOSER = Agent(name="proposer", settings=GenerationSettings(temperature=1.0, max_tokens=10, stop=("\n",)))


def show(numbers: list[Fraction]) -> str:
    return " ".join(str(n) for n in numbers)


def parse_step(text: str, numbers: list[Fraction]) -> tuple[Fraction, str, Fraction, Fraction] | None:
    """(a, op, b, a∘b) when the text starts with "a ∘ b" over available numbers and ∘ is defined."""
    m = STEP.match(text)
    if not m:
        return None
    a, op, b = Fraction(m.group(1)), {"x": "*", "×": "*"}.get(m.group(2), m.group(2)), Fraction(m.group(3))
    pool = list(numbers)
    for x in (a, b):
        if x not in pool:
            return None
        pool.remove(x)
    result = OPS[op](a, b)
    return None if result is None else (a, op, b, result)


def reachable(numbers: tuple[Fraction, ...]) -> set[Fraction]:
    """Every value the numbers can make when all of them are combined (exhaustive; fine for ≤ 4)."""
    if len(numbers) == 1:
        return {numbers[0]}
    out: set[Fraction] = set()
    for i, j in itertools.permutations(range(len(numbers)), 2):
        rest = tuple(n for k, n in enumerate(numbers) if k not in (i, j))
        for op in OPS.values():
            r = op(numbers[i], numbers[j])
            if r is not None:
                out |= reachable(rest + (r,))
    return out


def verifier_value(prefix: Trace) -> float:
    """V̂(s) = −min_r |r − 24| over the values the numbers left can still make (the last observation)."""
    observed = [e.content for e in prefix.events if e.type == "interact" and e.address.endswith("/numbers")]
    if not observed:
        return 0.0
    left = tuple(Fraction(n) for n in observed[-1].split())
    return -float(min(abs(r - TARGET) for r in reachable(left)))


async def program(numbers: tuple[int, ...] = (4, 6, 2, 2)) -> str:
    """One game: the model proposes steps, Python applies them, the result is scored against 24."""
    left = [Fraction(n) for n in numbers]
    steps: list[str] = []
    while len(left) > 1:
        d = len(steps)
        text = await sample(f"step{d}", PROPOSER.generate(raw_prompt=FEW_SHOT + f"\nNumbers: {show(left)}\nStep:"))
        step = parse_step(text, left)
        if step is not None:
            a, op, b, result = step
            left.remove(a)
            left.remove(b)
            left.append(result)
            steps.append(f"{a} {op} {b} = {result}")
            interact("verifier", "proposer", show(left), kind="observation", name=f"step{d}/numbers")
        guarantee(f"step{d}/valid", step is not None)
    factor("reaches_24", -float(abs(left[0] - TARGET)))
    return "; ".join(steps)


POLICY = policies.TreeSearch(expand=6, value=verifier_value, backup="mellowmax", omega=2.0, num_simulations=12, seed=0)
DEFAULTS = {"args": {"numbers": (4, 6, 2, 2)}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, nargs="+", default=[4, 6, 2, 2])
    parser.add_argument("--simulations", type=int, default=POLICY.num_simulations)
    parser.add_argument("--expand", type=int, default=POLICY.expand, help="children drawn per expanded node")
    parser.add_argument("--omega", type=float, default=POLICY.omega, help="mellowmax ω (→0: mean, →∞: max)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)
    numbers = tuple(args.numbers)

    solvable = Fraction(TARGET) in reachable(tuple(Fraction(n) for n in numbers))
    print(f"numbers {show(list(numbers))}: 24 is {'reachable' if solvable else 'NOT reachable'} (exhaustive check)")
    search = POLICY.model_copy(update={"num_simulations": args.simulations, "expand": args.expand,
                                       "omega": args.omega, "seed": args.seed})
    try:
        r = search.run(program, numbers)
    except NoSurvivingParticles as exc:  # every branch hit an invalid step
        print(f"\nTreeSearch explored the whole tree and every game broke a rule: {exc}")
        return {"solvable": solvable, "solutions": [], "scores": [], "best": None, "log_evidence": -math.inf}
    x = r.extra
    solutions = [p.value for p, s in zip(r.particles, x["scores"]) if s == 0.0]
    print(f"\nTreeSearch (MellowMax ω={args.omega}, {x['simulations']} simulations, {x['num_nodes']} nodes, "
          f"{r.diagnostics.llm_calls} LLM calls): {len(r.particles)} finished games, {len(solutions)} reach 24")
    for game, s in list(zip([p.value for p in r.particles], x["scores"]))[:3]:
        print(f"  score {s:6.1f}  {game}")
    print("  first steps (mellowmax value, visits, π prior):")
    for c in sorted(x["root_children"], key=lambda c: -c["value"]):
        text = next(iter(c["samples"].values()), "").strip()
        step = parse_step(text, [Fraction(n) for n in numbers])
        applied = "invalid" if step is None else "{} {} {} = {}".format(*step)
        print(f"    {c['value']:7.2f}  {c['visits']:3d}  {math.exp(c['log_prior']):.3f}  {text!r:<14} → {applied}")
    print(f"  log Σ_found πΦ = {r.log_evidence:.3f} (a lower bound on log Z)")
    summary: dict[str, Any] = {"solvable": solvable, "solutions": solutions, "scores": x["scores"],
                               "best": x["best"].value if x["best"] else None, "llm_calls": r.diagnostics.llm_calls,
                               "log_evidence": r.log_evidence, "root_children": x["root_children"],
                               "root_value": x["root_value"], "omega": args.omega}

    if not args.no_baseline:
        calls = r.diagnostics.llm_calls
        try:  # whole games, 4 at a time, until the same number of LLM calls is spent
            bon = policies.BestOfN(num_particles=10_000, batch_size=4, seed=args.seed, budget=policies.Budget(max_llm_calls=calls)).run(program, numbers)
        except NoSurvivingParticles as exc:
            print(f"\nBest-of-N with the same {calls} LLM calls: {sum(exc.causes.values())} games, none valid")
            return {**summary, "best_of_n": {"games": sum(exc.causes.values()), "valid": 0, "wins": 0}}
        games = len(bon.particles)
        valid = [(p.value, p.log_weight) for p in bon.particles if p.log_weight > -math.inf]
        wins = sum(lw == 0.0 for _, lw in valid)
        best = max(valid, key=lambda v: v[1]) if valid else None
        print(f"\nBest-of-N over {games} whole games ({bon.diagnostics.llm_calls} LLM calls): {len(valid)} valid, "
              f"{wins} reach 24" + (f"; best: score {best[1]:.1f}  {best[0]}" if best else ""))
        summary["best_of_n"] = {"games": games, "valid": len(valid), "wins": wins}
    return summary


if __name__ == "__main__":
    main()
