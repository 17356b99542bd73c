"""The built-in chat program of `swarm serve --model embedded`: a reply from the embedded
SmolLM2-135M, written one word per SMC step, with guarantees that it is well formed.

    p(reply) ∝ π(reply | messages) · Π_i 1[word_i keeps the reply well formed] · 1[the reply is complete]

π is the model answering the conversation (its own chat template, temperature 1 unless the request
sets `temperature`/`top_p`), factored into words (`unit="word"`), which does not change the
distribution over replies. A word keeps the reply well formed when the reply so far

- does not start a new chat turn (no role marker such as "User:", "<|im_start|>", "###"),
- has printable text only, and no word three times in a row (the small model's loops);

and the reply is complete when it ends a sentence (".", "!", "?", optionally inside quotes or
brackets) with at least `min_words` words, by `max_words`. The reply ends at the model's end of
turn or after `max_sentences` sentences. A particle that breaks a guarantee dies at once and SMC
resamples a well-formed prefix in its place, so compute goes to replies that can still be
completed; log Ẑ estimates log π(well-formed complete reply). The program returns exactly the text
it generated, so a server can stream the text every particle has committed to.

Arguments (request `swarm.arguments`): `max_words` (40), `min_words` (2), `max_sentences` (2);
standard request fields `temperature` and `top_p` reach the generation.
"""

from __future__ import annotations

import re

from agents.agent import Agent
from agents.backends.base import ChatMessage, GenerationSettings
from swarm.primitives import guarantee, sample

SYSTEM = "You are a helpful assistant. Reply briefly, in plain sentences."
ASSISTANT = Agent(name="assistant", system=SYSTEM, settings=GenerationSettings(temperature=1.0, max_tokens=8))
TURN_MARKERS = re.compile(r"<\|im_(start|end)\|>|(^|\n)\s*(user|assistant|system|human)\s*:|###", re.IGNORECASE)
SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
MODEL_NAME = "smollm2-135m-smc"


def well_formed(text: str) -> bool:
    """The reply so far starts no new turn, is printable, and repeats no word three times in a row."""
    if TURN_MARKERS.search(text) or any(not (c.isprintable() or c in "\n\t") for c in text):
        return False
    words = text.lower().split()
    return not any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2))


def ends_sentence(text: str) -> bool:
    return bool(SENTENCE_END.search(text.rstrip()))


def complete(text: str, min_words: int) -> bool:
    return ends_sentence(text) and len(text.split()) >= min_words


def conversation(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The request's messages, with the default system prompt when they bring none."""
    if any(m.role == "system" for m in messages):
        return list(messages)
    return [ChatMessage(role="system", content=SYSTEM), *messages]


async def chat(messages: list[ChatMessage], max_words: int = 40, min_words: int = 2, max_sentences: int = 2,
               temperature: float = 1.0, top_p: float = 1.0) -> str:
    """One reply to `messages`, one word per step (see the module docstring for the target)."""
    convo = conversation(messages)
    text, sentences = "", 0
    for i in range(max_words):
        word = await sample(f"word{i}", ASSISTANT.generate(messages=convo, prefix=text, unit="word",
                                                           temperature=temperature, top_p=top_p))
        text += word
        guarantee(f"well_formed/word{i}", well_formed(text))
        if not word.strip():  # the model ended its turn
            break
        sentences += ends_sentence(word)
        if sentences >= max_sentences:
            break
    guarantee("complete_reply", complete(text, min_words))
    return text
