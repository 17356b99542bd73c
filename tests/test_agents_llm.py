"""End to end on a real model: the embedded SmolLM2-135M through in-process llama.cpp, and the same
model behind a real OpenAI-compatible server (`llama_cpp.server` on 127.0.0.1)."""

from __future__ import annotations

import math
import re

import pytest

import policies
from agents import Agent, GenerationSettings

pytestmark = pytest.mark.llm

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/setup.sh)")

SHORT = GenerationSettings(max_tokens=12, temperature=1.0)


def writer_critic(backend):
    writer = Agent(name="writer", system="You write one short sentence.", backend=backend, settings=SHORT)
    critic = Agent(name="critic", system="Rate the sentence from 1 to 10. Reply with a number.",
                   backend=backend, settings=GenerationSettings(max_tokens=4, temperature=1.0))

    async def program(topic: str):
        draft = await writer.ask(f"Write a sentence about {topic}.")
        verdict = await critic.ask(draft, sender="writer")
        digits = re.findall(r"\d+", verdict)
        score = min(max(int(digits[0]), 1), 10) if digits else 1
        from swarm import factor

        factor("critic_score", math.log(score / 10))
        return draft

    return program


def _check_generations(result):
    for particle in result.particles:
        gens = [e for e in particle.trace.events if e.type == "sample" and e.info.get("agent")]
        assert gens, "every particle made generations"
        for g in gens:
            assert g.info["token_logprobs"] and all(lp <= 0 for lp in g.info["token_logprobs"])
            assert any(lp < 0 for lp in g.info["token_logprobs"]), "non-zero token log-probabilities"
            assert g.log_prob < 0 and math.isfinite(g.log_prob)
            assert g.info["usage"]["output_tokens"] > 0


@pytest.fixture(scope="module")
def embedded():
    from agents.backends.llama_cpp import LlamaCpp

    return LlamaCpp()


def test_importance_and_smc_of_a_two_agent_program_on_the_embedded_model(embedded):
    program = writer_critic(embedded)
    imp = policies.Importance(num_particles=3, seed=0).run(program, "the sea")
    _check_generations(imp)
    assert math.isfinite(imp.log_evidence) and imp.diagnostics.llm_calls == 6
    smc = policies.SMC(num_particles=3, seed=0, ess_threshold=1.0).run(program, "the sea")
    _check_generations(smc)
    assert smc.diagnostics.tokens > 0 and math.isfinite(smc.log_evidence)


def test_same_program_through_a_real_openai_compatible_server(embedded):
    """The writer/critic program runs unchanged against a real OpenAI-compatible server, and the
    generations' recorded log-probabilities mean the same on both backends: each backend's own
    completion of one prompt (sampled at T = 1, seeded) is teacher-forced through the model in
    process and its base log-probs compared per token, within bounds that llama.cpp's kernel
    differences (1-token vs batched decoding, AVX2 vs AVX-512 vs NEON) cannot reach and that a
    one-position shift or tempered log-probs exceed on this very completion (tests/llama_server.py
    explains the bounds). Not equal texts: seeded and greedy choices flip between CPUs."""
    from agents.backends.embedded import embedded_model_path
    from agents.backends.openai_compat import LLAMA_CPP_PLAIN_SAMPLING, OpenAICompatible
    from tests.llama_server import llama_server_available, start_llama_server, teacher_forcing

    if not llama_server_available():
        pytest.skip("llama_cpp.server is not installed (pip install 'llama-cpp-python[server]')")
    with start_llama_server(embedded_model_path()) as (base_url, _process):
        served = OpenAICompatible(base_url, "smollm2", mode="chat", extra_body=LLAMA_CPP_PLAIN_SAMPLING,
                                  logprobs="always")  # the checks below read the recorded logprobs
        result = policies.Importance(num_particles=2, seed=0).run(writer_critic(served), "the sea")
        _check_generations(result)

        sampled = GenerationSettings(max_tokens=16, temperature=1.0)
        prompt = "The capital of France is"
        remote = Agent(name="remote", backend=OpenAICompatible(base_url, "smollm2", mode="completions",
                                                               extra_body=LLAMA_CPP_PLAIN_SAMPLING, logprobs="always"),
                       settings=sampled)
        local = Agent(name="local", backend=embedded, settings=sampled)

        async def both():
            from swarm import sample

            a = await sample("remote", remote.generate(raw_prompt=prompt))
            b = await sample("local", local.generate(raw_prompt=prompt))
            return a, b

        trace = policies.Forward(num_particles=1, seed=0).run(both).particles[0].trace
    teacher = teacher_forcing(str(embedded_model_path()))
    for site in ("remote", "local"):
        event = trace[site]
        ids = teacher.token_ids(event.info["tokens"])
        teacher.assert_teacher_forced(prompt, ids, _base_logprobs(event)[:len(ids)], f"{site} {event.value!r}",
                                      bugs=("shifted", "tempered"))
        assert event.info["token_logprobs"] == event.info["base_token_logprobs"]  # T = 1: q = p
        assert event.log_prob == pytest.approx(sum(event.info["token_logprobs"]))


def _base_logprobs(event):
    """Per-token base-model log-probabilities recorded for a completion."""
    values = event.info["base_token_logprobs"]
    assert values and all(lp <= 0 for lp in values)
    return values
