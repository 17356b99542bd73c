"""Chunked chat-mode SMC against a real llama.cpp server (llama-cpp-python's, on 127.0.0.1): it
ignores `continue_final_message`, so the backend either continues the reply by rendering the chat
on the client, or refuses with a clear error; it never restarts the reply silently."""

from __future__ import annotations

import asyncio

import pytest

from agents.backends.base import ChatMessage, GenerationRequest, GenerationSettings
from agents.backends.http_continuation import ContinuationUnsupported, chat_template_from_gguf
from agents.backends.openai_compat import LLAMA_CPP_PLAIN_SAMPLING, OpenAICompatible
from tests.llama_server import llama_server_available, start_llama_server

pytestmark = [pytest.mark.server, pytest.mark.llm]
QUESTION = "Count from one to ten in words."
WORDS = 4


@pytest.fixture(scope="module")
def served():
    if not llama_server_available():
        pytest.skip("llama_cpp.server is not installed (pip install 'llama-cpp-python[server]')")
    from agents.backends.embedded import embedded_model_path

    path = embedded_model_path()
    with start_llama_server(path, extra_args=("--n_threads", "1")) as (base_url, _):
        yield base_url, path


def _agent_program(backend):
    from agents import Agent
    from swarm import factor, sample

    agent = Agent(name="counter", backend=backend, settings=GenerationSettings(temperature=0.0, max_tokens=8))

    async def program():
        reply = ""
        for i in range(WORDS):
            reply += await sample(f"w{i}", agent.generate(QUESTION, prefix=reply, unit="word"))
            factor(f"f{i}", 0.0)
        return reply

    return program


def test_chunked_chat_smc_refuses_a_server_that_would_restart_the_reply(served):
    import policies

    backend = OpenAICompatible(served[0], "smollm2", extra_body=LLAMA_CPP_PLAIN_SAMPLING, timeout=120)
    with pytest.raises(ContinuationUnsupported, match="does not continue a partial assistant reply"):
        policies.SMC(num_particles=2, seed=0).run(_agent_program(backend))
    assert backend.server_continues is False  # the probe found it out


def test_chunked_chat_smc_continues_the_reply_like_in_process_llama_cpp(served):
    import policies
    from agents.backends.llama_cpp import LlamaCpp

    base_url, path = served
    backend = OpenAICompatible(base_url, "smollm2", extra_body=LLAMA_CPP_PLAIN_SAMPLING, timeout=120,
                               chat_template=chat_template_from_gguf(path))
    result = policies.SMC(num_particles=2, seed=0).run(_agent_program(backend))
    served_text = result.particles[0].value
    # the ground truth: in-process llama.cpp renders the chat with the same template and continues
    # the reply token by token, greedily, one word chunk at a time
    local, reply = LlamaCpp(seed=0, n_threads=1), ""
    try:
        for _ in range(WORDS):
            req = GenerationRequest(messages=[ChatMessage(role="user", content=QUESTION)], assistant_prefix=reply,
                                    settings=GenerationSettings(temperature=0.0, max_tokens=8, unit="word"))
            reply += asyncio.run(local.complete(req)).text
    finally:
        local.close()
    assert served_text == reply, (served_text, reply)
    assert len(served_text.split()) == WORDS and served_text.split()[0] not in served_text.split()[1:]
