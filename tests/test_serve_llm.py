"""`swarm serve --model embedded`: the built-in chat program over the real embedded SmolLM2-135M
(llama.cpp), on 127.0.0.1, called with the official `openai` client. Small population, short replies."""

from __future__ import annotations

import re

import openai
import pytest

from agents.serving.chat_program import MODEL_NAME, complete, well_formed
from tests.serve_fixtures import run_server

pytestmark = [pytest.mark.llm, pytest.mark.server]

ARGS = {"max_words": 14, "min_words": 2}
HELLO = [{"role": "user", "content": "Say hello."}]


def test_embedded_chat_answers_are_well_formed_and_traced():
    with run_server("--model", "embedded", "--particles", "4", "--max-tokens", "30000", timeout_s=120) as (url, _, _):
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
        plain = client.chat.completions.create(model=MODEL_NAME, messages=HELLO, seed=0,
                                               extra_body={"swarm": {"arguments": ARGS}})
        chunks = list(client.chat.completions.create(model=MODEL_NAME, messages=HELLO, seed=0, stream=True,
                                                     extra_body={"swarm": {"arguments": ARGS}}))
    content = plain.choices[0].message.content
    assert well_formed(content) and complete(content, ARGS["min_words"]) and len(content.split()) <= 14
    info = plain.swarm
    assert re.fullmatch(r"[0-9a-f]{32}", info["trace_id"]) and info["num_particles"] == 4
    assert info["log_evidence"] is not None and info["log_evidence"] <= 1e-9  # Ẑ estimates a probability
    assert plain.usage.total_tokens >= plain.usage.completion_tokens >= info["llm_calls"] > 0
    # the same seed gives the same run (llama.cpp sampling is seeded): the stream carries the same answer,
    # committed words first (the program returns exactly the text it generated)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert chunks[-1].swarm["event"] == "end" and chunks[-1].swarm["log_evidence"] == info["log_evidence"]
