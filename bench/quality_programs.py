"""plp-swarm programs for the quality tasks of bench/tasks.py, built around a given agent (so the
same programs run on the in-process model and through the llama.cpp server).

Constrained sentence (target p ∝ π · Π_words 1[word ok] · 1[complete sentence]):
- `whole`: the sentence in one generation, checked at the end (best-of-N's program);
- `stepwise`: one word per step (`unit="word"`), a `guarantee` per word, then the sentence check
  (SMC's program: the same target, factored so that SMC can resample between words).

Arithmetic (target p ∝ π · Φ_work, Φ_work from `tasks.work_log_potential`, and 1[answer stated]):
- `whole`: one few-shot completion, then `guarantee(answer stated)` and `factor(log Φ_work)`;
- `stepwise`: one word per step; each *completed* equation's share of log Φ_work is a `factor` as
  soon as it is written (so SMC prunes wrong arithmetic mid-answer), the remainder at the end. The
  factors sum to log Φ_work, so both programs have the same target.
"""

from __future__ import annotations

import re
from typing import Any

from bench import tasks
from swarm import factor, guarantee, sample

_TRAILING_NUMBER = re.compile(r"-?\d+$")


def sentence_programs(agent: Any, letter: str = tasks.LETTER) -> dict[str, Any]:
    async def whole(topic: str) -> str:
        text = await sample("sentence", agent.generate(raw_prompt=tasks.sentence_prompt(topic), max_tokens=32,
                                                       stop=("\n",)))
        guarantee("sentence_ok", tasks.sentence_ok(text, letter))
        return text.strip()

    async def stepwise(topic: str) -> str:
        text = ""
        for i in range(tasks.MAX_WORDS):
            word = await sample(f"word{i}", agent.generate(raw_prompt=tasks.sentence_prompt(topic), prefix=text,
                                                           unit="word", max_tokens=6))
            text += word
            guarantee(f"no_{letter}/word{i}", all(tasks.word_ok(w, letter) for w in tasks.WORD.findall(word)))
            if not word.strip() or tasks.ends_sentence(word):
                break
        guarantee("sentence_ok", tasks.sentence_ok(text, letter))
        return text.strip()

    return {"whole": whole, "stepwise": stepwise}


def _partial_work(question: str, text: str) -> float:
    """−3·wrong − 1·stray over the equations already complete in `text` (a trailing number may
    still grow, so an equation ending the text is not complete yet)."""
    done = _TRAILING_NUMBER.sub("", text)
    numbers = {int(n) for n in re.findall(r"\d+", question)}
    equations = tasks.EQUATION.findall(done)
    wrong = sum(tasks.OPS[op](int(x), int(y)) != int(z) for x, op, y, z in equations)
    stray = sum(int(v) not in numbers for x, _, y, _ in equations for v in (x, y))
    return -3.0 * wrong - 1.0 * stray


def arithmetic_programs(agent: Any, max_words: int = 20) -> dict[str, Any]:
    async def whole(question: str) -> int | None:
        text = await sample("reasoning", agent.generate(raw_prompt=tasks.arithmetic_prompt(question), max_tokens=24,
                                                        stop=("\n",)))
        answer = tasks.extract_answer(text)
        guarantee("states_answer", answer is not None)
        factor("work", tasks.work_log_potential(question, text))
        return answer

    async def stepwise(question: str) -> int | None:
        text, charged = "", 0.0
        for i in range(max_words):
            word = await sample(f"word{i}", agent.generate(raw_prompt=tasks.arithmetic_prompt(question), prefix=text,
                                                           unit="word", max_tokens=6))
            ended = "\n" in word or not word.strip()
            text += word.split("\n", 1)[0]
            partial = _partial_work(question, text + (" " if ended else ""))
            factor(f"work{i}", partial - charged)
            charged = partial
            if ended or tasks.ANSWER.search(text) and text.rstrip().endswith("."):
                break
        answer = tasks.extract_answer(text)
        guarantee("states_answer", answer is not None)
        factor("work_rest", tasks.work_log_potential(question, text) - charged)
        return answer

    return {"whole": whole, "stepwise": stepwise}
