"""The two quality tasks shared by bench/policies_quality.py (plp-swarm, in-process) and
bench/peer_its_hub.py (plp-swarm and its-hub against the same llama.cpp server).

Standard library only: the its-hub side imports this module from .venv-bench.

(a) Constrained generation: one sentence about a topic in which no word contains a given letter
    (a lipogram), at least MIN_WORDS words, ending with ".", "!" or "?". Checked per word.
(b) Arithmetic word problems: a few-shot completion "3 + 2 = 5. The answer is 5."; the answer is
    the number after "the answer is", graded against the truth; `work_log_potential` is a verifier
    of the *work* (it recomputes every equation, never looks at the truth), the potential the
    policies may use. The problems and the verifier are examples/arithmetic_work.py's, the ones
    examples/self_consistency.py uses.

Prompts are raw strings in SmolLM2's ChatML template (`chatml`), so the in-process backend and
the llama.cpp server see the same tokens whichever client sends them.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

# the problems, the prompt and the verifier of the work: examples/arithmetic_work.py (stdlib only), the one the example uses
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from arithmetic_work import (  # noqa: E402,F401  (re-exported: the benches read them from here)
    ANSWER, EQUATION, OPS, PROBLEMS, extract_answer, few_shot_prompt, work_log_potential)

# ---------------------------------------------------------------- (a) constrained generation
LETTER = "e"
MIN_WORDS = 4
MAX_WORDS = 12
SENTENCE_SYSTEM = "You write one short, simple sentence."
TOPICS = ["a cat", "the sea", "a dog", "the sun", "a bird", "rain", "a farm", "a train"]
WORD = re.compile(r"[A-Za-z']+")


def chatml(system: str, user: str) -> str:
    """SmolLM2's chat template rendered for one system and one user message, ready for the
    assistant's reply (what llama.cpp renders from the GGUF's template)."""
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


def sentence_prompt(topic: str) -> str:
    return chatml(SENTENCE_SYSTEM, f"Write one sentence about {topic}.")


def word_ok(word: str, letter: str = LETTER) -> bool:
    return letter not in word.lower()


def ends_sentence(text: str) -> bool:
    return text.rstrip().endswith((".", "!", "?"))


def sentence_ok(text: str, letter: str = LETTER) -> bool:
    """The whole check: every word without `letter`, at least MIN_WORDS words, a final . ! or ?"""
    words = WORD.findall(text)
    return len(words) >= MIN_WORDS and all(word_ok(w, letter) for w in words) and ends_sentence(text)


def prefix_score(text: str, letter: str = LETTER) -> float:
    """1.0 if every *complete* word of a partial sentence avoids `letter`, else 0.0 (the last word
    counts as complete only when followed by whitespace or punctuation)."""
    words = WORD.findall(text)
    if words and text and text[-1].isalpha():
        words = words[:-1]
    return 1.0 if all(word_ok(w, letter) for w in words) else 0.0


# ----------------------------------------------------------------------- (b) arithmetic
def arithmetic_prompt(question: str) -> str:
    """The example's few-shot prompt without blank lines between the shots (the layout
    bench/results.json was measured with)."""
    return few_shot_prompt(question, blank_lines=False)


def work_score(question: str, text: str) -> float:
    """The verifier as a score in (0, 1] for libraries that want one: exp(log Φ), 0 without an answer."""
    return 0.0 if extract_answer(text) is None else math.exp(work_log_potential(question, text))


COLD_PROMPT = "Unrelated text that shares no prefix with any task prompt."


def cold_server(base_url: str) -> None:
    """Put a llama.cpp server's prompt cache in the same state before every measured run: a one-token
    completion of `COLD_PROMPT` replaces the cached prefix, so the run that comes first on a problem
    and the one after it pay the same prefill (without this, whichever side ran a prompt second got it
    warm). Standard library only: both the bench and the peer's venv call it; not timed."""
    post_completion(base_url, {"prompt": COLD_PROMPT, "max_tokens": 1, "temperature": 0.0})


def post_completion(base_url: str, body: dict) -> bytes:
    """POST `body` to the server's /completions and return the reply (standard library only)."""
    import json
    import urllib.request

    request = urllib.request.Request(base_url.rstrip("/") + "/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return response.read()
