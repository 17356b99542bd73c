"""Code with tests: the embedded SmolLM2-135M model writes small Python functions, and their unit
tests, run in the sandbox (`agents.sandbox`: a child process with no network, an unprivileged uid,
rlimits and a wall-clock timeout), are the potential.

The prompt is a few-shot file of tiny functions ending in the new function's signature, docstring
and "    return": the model completes the return expression (one line, a constrained unit small
models manage). The tests are assert-free expressions evaluated one by one in the sandbox, so a
crash, a wrong answer or an infinite loop costs only the tests it breaks. The target is

    p(τ) ∝ π(τ) · Φ(τ),     Φ(τ) = exp(−2 · #(tests the function fails)),

which grades partial progress (a function passing 3 of 4 tests keeps weight e^−2). `Importance`
draws N completions from π and weights them: the answer marginal ranks the distinct function
bodies, log Ẑ estimates log E_π[Φ], and the fraction of draws passing every test estimates
π(correct), the probability that a single sample is right.

    python examples/code_with_tests.py [--samples 8] [--tasks 5]
    swarm run examples/code_with_tests.py --particles 8
"""

from __future__ import annotations

from swarm.agents_package import require_own_agents

require_own_agents()  # a clear error if another `agents` package (openai-agents) shadows plp-swarm's

import argparse
import json
from typing import Any

import policies
from agents import Agent, GenerationSettings
from agents.sandbox import run_untrusted_async
from swarm import factor, interact, sample

FEW_SHOT = '''def add(a, b):
    """Return the sum of a and b."""
    return a + b


def is_even(n):
    """Return True if n is even, else False."""
    return n % 2 == 0


def first(items):
    """Return the first element of the list items."""
    return items[0]


'''
# (signature, docstring, tests: expressions that must be True)
TASKS: list[tuple[str, str, list[str]]] = [
    ("square(n)", "Return n multiplied by n.", ["square(3) == 9", "square(0) == 0", "square(-2) == 4", "square(10) == 100"]),
    ("last(items)", "Return the last element of the list items.",
     ["last([1, 2, 3]) == 3", "last(['a']) == 'a'", "last([5, 4]) == 4", "last([[1], [2]]) == [2]"]),
    ("maximum(a, b)", "Return the larger of a and b.",
     ["maximum(1, 2) == 2", "maximum(7, 3) == 7", "maximum(-1, -5) == -1", "maximum(4, 4) == 4"]),
    ("reverse(s)", "Return the string s reversed.",
     ["reverse('abc') == 'cba'", "reverse('') == ''", "reverse('a') == 'a'", "reverse('ab cd') == 'dc ba'"]),
    ("count_positive(numbers)", "Return how many numbers in the list are greater than 0.",
     ["count_positive([1, -2, 3]) == 2", "count_positive([]) == 0", "count_positive([-1, 0]) == 0",
      "count_positive([5, 5, 5]) == 3"]),
]
HARNESS = """
import json
passed = 0
for test in json.loads({tests!r}):
    try:
        passed += eval(test) is True
    except Exception:
        pass
print(passed)
"""
PENALTY = 2.0
"""log Φ per failed test."""

CODER = Agent(name="coder", settings=GenerationSettings(temperature=1.0, max_tokens=24, stop=("\n",)))
POLICY = policies.Importance(num_particles=8, seed=0)
DEFAULTS = {"args": {"signature": TASKS[0][0], "doc": TASKS[0][1], "tests": TASKS[0][2]}}


def function_source(signature: str, doc: str, body: str) -> str:
    return f'def {signature}:\n    """{doc}"""\n    return{body}\n'


async def tests_passed(code: str, tests: list[str]) -> int:
    """How many tests the code passes, run in the sandbox (0 when it does not even load)."""
    result = await run_untrusted_async(code + HARNESS.format(tests=json.dumps(tests)), timeout_s=5.0, cpu_s=2,
                                       memory_mb=256)
    lines = result.stdout.strip().splitlines()
    return int(lines[-1]) if result.ok and lines and lines[-1].isdigit() else 0


async def program(signature: str, doc: str, tests: list[str]) -> str:
    """Sample a return expression, run the tests in the sandbox, weight by the tests failed."""
    prompt = FEW_SHOT + function_source(signature, doc, "")
    body = await sample("body", CODER.generate(raw_prompt=prompt.rstrip("\n")))
    code = function_source(signature, doc, body.rstrip())
    passed = await tests_passed(code, tests)
    interact("sandbox", "coder", f"{passed}/{len(tests)} tests passed", kind="tool_result", name="tests")
    factor("unit_tests", -PENALTY * (len(tests) - passed))
    return "return" + body.rstrip()


def solve(task: tuple[str, str, list[str]], samples: int, seed: int) -> dict[str, Any]:
    signature, doc, tests = task
    r = POLICY.model_copy(update={"num_particles": samples, "seed": seed}).run(program, signature, doc, tests)
    failed = {p.value: round(-p.log_weight / PENALTY) for p in r.particles}
    all_pass = sum(p.log_weight == 0.0 for p in r.particles) / len(r.particles)
    marginal = r.marginal()
    print(f"\ndef {signature}: {doc}  ({len(tests)} tests)")
    for body, p in list(marginal.items())[:3]:
        print(f"  {p:5.2f}  {len(tests) - failed[body]}/{len(tests)} pass   {body}")
    print(f"  π(all tests pass) ≈ {all_pass:.2f} ({round(all_pass * len(r.particles))} of {len(r.particles)} samples)"
          f"   log Z = {r.log_evidence:.3f}   ESS = {r.ess:.1f}   tokens = {r.diagnostics.tokens}")
    best = next(iter(marginal))
    return {"signature": signature, "marginal": marginal, "best": best, "best_passes": failed[best] == 0,
            "all_pass_rate": all_pass, "log_evidence": r.log_evidence, "ess": r.ess}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=POLICY.num_particles)
    parser.add_argument("--tasks", type=int, default=len(TASKS), help=f"how many of the {len(TASKS)}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    results = [solve(task, args.samples, args.seed) for task in TASKS[:args.tasks]]
    k = len(results)
    print(f"\nthe most probable body passes every test in {sum(r['best_passes'] for r in results)} of {k} tasks; "
          f"a single sample does in {sum(r['all_pass_rate'] for r in results) / k:.2f} of draws on average")
    return {"tasks": results}


if __name__ == "__main__":
    main()
