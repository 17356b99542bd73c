"""The arithmetic word problems of examples/self_consistency.py, their few-shot prompt, and a
verifier of their *work*.

Standard library only, so bench/tasks.py (which also runs under the its-hub virtualenv, without
plp-swarm) grades with the very same verifier the example uses as its potential:

    log Φ(τ) = −3·#wrong equations − 3·1[a(τ) ≠ last equation's result, or no equation]
               − #operands not in the question,

where every equation "x ∘ y = z" in the completion τ is recomputed and a(τ) is the number after
"the answer is". The verifier never sees the true answer.
"""

from __future__ import annotations

import math
import re

PROBLEMS: list[tuple[str, int]] = [
    ("Mia has 6 cookies. She eats 2. How many cookies are left?", 4),
    ("There are 5 birds on a tree. 4 more birds come. How many birds are there?", 9),
    ("Ben has 3 boxes with 3 toys in each box. How many toys does he have?", 9),
    ("A shelf has 7 books. Lily puts 5 more books on it. How many books are on the shelf?", 12),
    ("Joe had 9 marbles. He lost 4 marbles. How many marbles does he have now?", 5),
    ("There are 2 cars with 4 wheels each. How many wheels are there?", 8),
    ("Kim has 10 stickers. She gives 3 to Tom. How many stickers does she have left?", 7),
    ("A farm has 6 cows and 7 pigs. How many animals are there?", 13),
]

SHOTS: list[tuple[str, str]] = [
    ("Tom has 3 apples. He buys 2 more. How many apples does he have?", "3 + 2 = 5. The answer is 5."),
    ("A box holds 8 pens. Sam takes 3 pens out. How many pens are left?", "8 - 3 = 5. The answer is 5."),
    ("Ann has 4 bags with 2 balls in each bag. How many balls does she have?", "4 * 2 = 8. The answer is 8."),
]


def few_shot_prompt(question: str, blank_lines: bool = True) -> str:
    """The worked examples as "Q: …\nA: …" blocks, then "Q: {question}\nA:", the blocks separated by
    a blank line (the example's layout) or not (bench/tasks.py's: bench/results.json was measured
    with it; the two are different token sequences)."""
    blocks = [f"Q: {q}\nA: {a}" for q, a in SHOTS] + [f"Q: {question}\nA:"]
    return ("\n\n" if blank_lines else "\n").join(blocks)


EQUATION = re.compile(r"(-?\d+)\s*([-+*x×/])\s*(-?\d+)\s*=\s*(-?\d+)")
ANSWER = re.compile(r"answer is\s*(-?\d+)", re.IGNORECASE)
OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y, "x": lambda x, y: x * y,
       "×": lambda x, y: x * y, "/": lambda x, y: x / y if y else math.nan}


def extract_answer(text: str) -> int | None:
    """The number after "the answer is" (None when the completion states no answer)."""
    m = ANSWER.search(text)
    return int(m.group(1)) if m else None


def work_log_potential(question: str, text: str) -> float:
    """log Φ of the work (0 for flawless work): −3 per wrong equation, −3 when the stated answer is
    not the last equation's result (or there is no equation), −1 per operand not in the question."""
    numbers = {int(n) for n in re.findall(r"\d+", question)}
    equations = EQUATION.findall(text)
    wrong = sum(OPS[op](int(x), int(y)) != int(z) for x, op, y, z in equations)
    stray = sum(int(v) not in numbers for x, _, y, _ in equations for v in (x, y))
    unsupported = not equations or extract_answer(text) != int(equations[-1][3])
    return -3.0 * wrong - 3.0 * unsupported - 1.0 * stray
