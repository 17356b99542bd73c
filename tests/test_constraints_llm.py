"""Constraints on the embedded SmolLM2-135M through LlamaCpp: a JSON-schema-constrained agent always
returns valid JSON with the log-mass correction in its sample events; the recorded log-masses
equal log Σ_allowed p recomputed from an independent llama.cpp evaluation; the regex masks on the
real 49,152-token vocabulary agree with the constraint's definition on text."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

pytest.importorskip("llama_cpp")
import llama_cpp  # noqa: E402

import policies  # noqa: E402
from agents import Agent, constraints  # noqa: E402
from agents.backends.base import ChatMessage, GenerationRequest, GenerationSettings  # noqa: E402
from agents.backends.embedded import embedded_model_path  # noqa: E402
from agents.backends.llama_cpp import LlamaCpp  # noqa: E402
from swarm import sample  # noqa: E402

pytestmark = pytest.mark.llm


class Pet(BaseModel):
    """No extra properties: the schema then bounds the reply's length, so max_tokens=48 cannot cut a
    valid reply (with extra properties allowed, SmolLM2 invents more keys and a reply may be cut,
    which the constraint reports as incomplete, docs/constraints.md "Truncation")."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=12)
    legs: int = Field(ge=0, le=8)


@pytest.fixture(scope="module")
def backend():
    b = LlamaCpp(seed=0, n_threads=1)
    b.load()
    yield b
    asyncio.run(b.aclose())


def test_json_schema_agent_always_returns_valid_json(backend):
    agent = Agent(name="vet", backend=backend, system="You answer with JSON only.")

    async def program():
        return await sample("pet", agent.generate("Describe a pet as JSON with its name and number of legs.",
                                                  max_tokens=48, constraint=constraints.json_schema(Pet)))

    r = policies.Importance(num_particles=6, seed=0).run(program)
    for p in r.particles:
        pet = Pet.model_validate_json(p.value)  # raises if the text is not valid JSON for the schema
        event = p.trace["pet"]
        info = event.info["constraint"]
        assert info["weights"] == "exact" and info["complete"] and not info["dead"], info
        assert info["description"].startswith("json_schema(")
        assert len(info["log_masses"]) == len(event.info["tokens"])
        assert all(m <= 1e-12 for m in info["log_masses"]) and info["log_weight"] < 0
        assert event.log_weight_increment == pytest.approx(info["log_weight"], abs=1e-9)
        assert isinstance(pet.legs, int)
    assert math.isfinite(r.log_evidence) and r.log_evidence < 0


def test_recorded_log_masses_match_an_independent_evaluation(backend):
    """Each log-mass is log Σ_{v: piece(v) has no e/E} p(v), with p recomputed by an independent
    `Llama(logits_all=True)` in one batch, with flash attention like the backend (tolerance 1e-3:
    the two evaluations may differ by float rounding in llama.cpp's kernels, as in
    test_backend_llama_cpp; without flash attention a position evaluated in a 1-token chunk can
    move a logit by up to 0.65, see agents.backends.llama_cpp)."""
    reference = llama_cpp.Llama(str(embedded_model_path()), n_ctx=512, logits_all=True, flash_attn=True, n_threads=1,
                                verbose=False)
    try:
        req = GenerationRequest(messages=[ChatMessage(role="user", content="Write about a cat.")], seed=3,
                                settings=GenerationSettings(max_tokens=10), constraint=constraints.forbid_chars("eE"))
        c = asyncio.run(backend.complete(req))
        assert "e" not in c.text.lower() and c.constraint.weights == "exact"
        prompt = backend.prompt_tokens(req)
        reference.reset()
        reference.eval(prompt + c.token_ids[:-1])
        rows = np.array(reference.scores[len(prompt) - 1: len(prompt) + len(c.token_ids) - 1], dtype=np.float64)
        allowed = np.array([b"e" not in p and b"E" not in p for p in backend.vocabulary().pieces])
        expected = []
        for logits in rows:
            logp = logits - logits.max() - math.log(np.exp(logits - logits.max()).sum())
            expected.append(math.log(np.exp(logp[allowed]).sum()))
        np.testing.assert_allclose(c.constraint.log_masses, expected, atol=1e-3)
        assert min(expected) < -0.01  # the constraint removed mass somewhere
    finally:
        reference.close()


def test_regex_masks_on_the_model_vocabulary_agree_with_the_definition(backend):
    """At each position of a constrained generation, 400 random tokens plus every end token: the
    guide's row says allowed iff the constraint's text definition accepts prefix + piece."""
    from agents.constraints import Vocabulary

    vocab = Vocabulary(backend._vocab.pieces, np.nonzero(backend._vocab.eog)[0].tolist())
    constraint = constraints.regex(r"(yes|no), because [a-z ]{1,30}\.")
    c = backend.complete_sync(GenerationRequest(prompt="Is the sky blue? Answer:", seed=1, constraint=constraint,
                                                settings=GenerationSettings(max_tokens=24)))
    guide = constraint.guide(vocab)
    text, rng = b"", np.random.default_rng(0)
    for tok in c.token_ids:
        row = guide.log_phi_row()
        for v in [*rng.integers(0, len(vocab), 400).tolist(), *vocab.eos_ids]:
            piece = b"" if vocab.eos_mask[v] else vocab.pieces[v]
            if vocab.special_mask[v]:
                continue
            ok = (constraint.complete(text.decode()) if vocab.eos_mask[v]
                  else constraint.prefix((text + piece).decode("utf-8", "ignore"))) > 0
            if (text + piece).decode("utf-8", "ignore").encode() != text + piece:
                continue  # a token ending inside a UTF-8 character: the text definition cannot see it
            assert (row[v] == 0.0) == ok, (text, piece)
        if vocab.eos_mask[tok]:
            break
        guide.advance(tok)
        text += vocab.pieces[tok]
    assert c.constraint.complete and c.finish_reason == "eos", c
