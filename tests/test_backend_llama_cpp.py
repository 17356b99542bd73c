"""The in-process llama.cpp backend on the embedded SmolLM2-135M model: honest log-probabilities,
reproducible sampling, chunking units, chat templates, concurrency.

Independent checks recompute the distributions from llama-cpp-python's own logits (a second `Llama`
with `logits_all=True`), not from the backend's code. The reference runs flash attention like the
backend (like with like: without it llama.cpp's kernels round differently, see
`agents.backends.llama_cpp`), so the 1e-3 tolerances bound only float32-vs-float64 softmax rounding.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install 'plp-swarm[llama]')")

from agents.backends.base import BackendError, ChatMessage, Completion, GenerationRequest, GenerationSettings  # noqa: E402
from agents.backends.embedded import embedded_model_path  # noqa: E402
from agents.backends.llama_cpp import LlamaCpp  # noqa: E402

pytestmark = pytest.mark.llm

QUESTION = [ChatMessage(role="user", content="Name three colours.")]
STORY = "Once upon a time, in a small village by the sea, there lived"


@pytest.fixture(scope="module")
def backend():
    b = LlamaCpp(seed=0)
    b.load()
    yield b
    asyncio.run(b.aclose())


@pytest.fixture(scope="module")
def reference():
    """llama-cpp-python's own model with all logits kept, for independent recomputation."""
    llm = llama_cpp.Llama(str(embedded_model_path()), n_ctx=512, logits_all=True, flash_attn=True, verbose=False)
    yield llm
    llm.close()


def run(backend: LlamaCpp, **kw) -> Completion:
    settings = kw.pop("settings", None) or GenerationSettings(**kw.pop("s", {}))
    return asyncio.run(backend.complete(GenerationRequest(settings=settings, **kw)))


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def reference_logits(llm, prompt_ids: list[int], ids: list[int]) -> np.ndarray:
    """Logits at every generated position (row i predicts ids[i]), evaluated in one batch."""
    llm.reset()
    llm.eval(prompt_ids + ids[:-1])
    return np.array(llm.scores[len(prompt_ids) - 1: len(prompt_ids) + len(ids) - 1], dtype=np.float64)


def test_greedy_is_deterministic_and_a_point_mass(backend):
    a = run(backend, messages=QUESTION, s=dict(temperature=0, max_tokens=8))
    run(backend, prompt="Something else entirely", s=dict(temperature=0, max_tokens=3))  # disturb cache
    b = run(backend, messages=QUESTION, s=dict(temperature=0, max_tokens=8))
    assert a.text and a.text == b.text
    assert a.token_logprobs == [0.0] * len(a.tokens) and a.log_prob == 0.0
    assert a.base_token_logprobs == b.base_token_logprobs
    assert all(math.isfinite(x) and x <= 0 for x in a.base_token_logprobs)
    assert a.backend == "llama_cpp" and a.model == "SmolLM2-135M-Instruct.Q4_1"
    assert a.usage.output_tokens == len(a.tokens) == 8 and a.usage.input_tokens > 10
    assert a.finish_reason == "length" and a.latency_s > 0


def test_seeded_sampling_is_reproducible_and_seeds_differ(backend):
    s = dict(temperature=1.0, max_tokens=10)
    a = run(backend, prompt=STORY, seed=7, s=s)
    run(backend, prompt=STORY + " a", seed=1, s=s)  # a different cache state in between
    b = run(backend, prompt=STORY, seed=7, s=s)
    assert (a.text, a.token_logprobs, a.base_token_logprobs) == (b.text, b.token_logprobs, b.base_token_logprobs)
    others = {run(backend, prompt=STORY, seed=k, s=s).text for k in (8, 9)}
    assert others != {a.text}
    assert all(math.isfinite(x) and x < 0 for x in a.token_logprobs)


def test_base_logprobs_match_llama_cpp_own_logprobs(backend, reference):
    """Greedy tokens are the argmax of llama.cpp's logits and their base log-probabilities equal
    llama-cpp-python's own `Llama.logits_to_logprobs` (what `create_completion(logprobs=...)` uses),
    on logits recomputed by an independent `Llama(logits_all=True)` in one batch."""
    req = GenerationRequest(prompt=STORY, settings=GenerationSettings(temperature=0, max_tokens=8))
    c = asyncio.run(backend.complete(req))
    rows = reference_logits(reference, backend.prompt_tokens(req), c.token_ids)
    own = llama_cpp.Llama.logits_to_logprobs(rows.astype(np.float32))
    assert c.token_ids == [int(np.argmax(r)) for r in rows]
    expected = [float(own[i, t]) for i, t in enumerate(c.token_ids)]
    assert len(expected) == len(c.base_token_logprobs) == 8
    np.testing.assert_allclose(c.base_token_logprobs, expected, atol=1e-3)


def test_temperature_one_proposal_is_the_base_model(backend):
    c = run(backend, prompt=STORY, seed=3, s=dict(temperature=1.0, top_p=1.0, max_tokens=8))
    assert c.token_logprobs == c.base_token_logprobs
    assert c.log_prob == pytest.approx(c.base_log_prob, abs=1e-12)


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_tempered_proposal_matches_independent_recomputation(backend, reference, top_p):
    req = GenerationRequest(prompt=STORY, seed=11, settings=GenerationSettings(
        temperature=0.5, top_p=top_p, max_tokens=8))
    c = asyncio.run(backend.complete(req))
    rows = reference_logits(reference, backend.prompt_tokens(req), c.token_ids)
    exp_q, exp_p = [], []
    for logits, tok in zip(rows, c.token_ids):
        logr = log_softmax(logits / 0.5)
        order = np.argsort(-logr, kind="stable")
        cum = np.cumsum(np.exp(logr[order]))
        nucleus = order[: int(np.searchsorted(cum, top_p)) + 1]
        assert tok in nucleus
        exp_q.append(logr[tok] - np.log(np.exp(logr[nucleus]).sum()))
        exp_p.append(log_softmax(logits)[tok])
    np.testing.assert_allclose(c.token_logprobs, exp_q, atol=1e-3)
    np.testing.assert_allclose(c.base_token_logprobs, exp_p, atol=1e-3)
    # T < 1 sharpens: the tokens it picks are more likely under q than under p
    assert c.log_prob > c.base_log_prob


def test_word_unit_returns_one_word_and_the_boundary_mass(backend, reference):
    req = GenerationRequest(messages=QUESTION, seed=5, assistant_prefix="Sure! The",
                            settings=GenerationSettings(temperature=1.0, unit="word", max_tokens=16))
    c = asyncio.run(backend.complete(req))
    assert c.finish_reason in {"unit", "eos"}
    assert len(c.text.split()) == 1, c.text
    assert math.isfinite(c.stop_log_prob) and c.stop_log_prob < 0
    assert c.log_prob == pytest.approx(math.fsum(c.token_logprobs) + c.stop_log_prob)
    # independently: the stop mass is q(whitespace-initial tokens ∪ end-of-generation) after the word
    reference.reset()
    reference.eval(backend.prompt_tokens(req) + c.token_ids)
    logq = log_softmax(np.array(reference.scores[reference.n_tokens - 1]))
    vocab = reference._model.vocab
    boundary = [t for t in range(reference.n_vocab())
                if llama_cpp.llama_vocab_is_eog(vocab, t)
                or reference.detokenize([t])[:1] in (b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c")]
    assert c.stop_log_prob == pytest.approx(float(np.log(np.exp(logq[boundary]).sum())), abs=1e-3)
    # the next chunk continues the reply from where this one stopped
    nxt = run(backend, messages=QUESTION, seed=6, assistant_prefix="Sure! The" + c.text,
              s=dict(temperature=1.0, unit="word", max_tokens=16))
    assert nxt.text.strip() and len(nxt.text.split()) <= 1


def test_token_and_line_units_and_stop_strings(backend):
    one = run(backend, prompt=STORY, seed=1, s=dict(unit="token", max_tokens=16))
    assert len(one.tokens) == 1 and one.finish_reason in {"unit", "eos"}
    line = run(backend, prompt="1. apples\n2. pears\n3.", s=dict(temperature=0, unit="line", max_tokens=16))
    assert line.finish_reason == "unit" and line.text.endswith("\n") and line.text.count("\n") >= 1
    stop = run(backend, prompt="1. apples\n2. pears\n3.", s=dict(temperature=0, stop=("\n",), max_tokens=16))
    assert stop.finish_reason == "stop" and "\n" not in stop.text and "".join(stop.tokens) == stop.text


def test_chat_template_is_applied(backend):
    req = GenerationRequest(messages=[ChatMessage(role="system", content="Be brief."), *QUESTION],
                            assistant_prefix="Red,", settings=GenerationSettings(temperature=0, max_tokens=6))
    rendered = backend.detokenize(backend.prompt_tokens(req), special=True).decode()
    assert rendered == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName three colours."
                        "<|im_end|>\n<|im_start|>assistant\nRed,")
    c = asyncio.run(backend.complete(req))
    assert c.text and "<|im_" not in c.text


def test_concurrent_calls_are_batched_and_reproducible(backend):
    """Concurrent calls are decoded together (one batch per step) and give what each gives alone
    (tests/test_llama_batching.py checks this bit for bit and statistically)."""
    reqs = [GenerationRequest(prompt=STORY, seed=k, settings=GenerationSettings(max_tokens=6))
            for k in range(4)]

    async def together():
        return await asyncio.gather(*(backend.complete(r) for r in reqs))

    before = backend.stats()["max_batch_sequences"]
    results = asyncio.run(together())
    assert backend.stats()["max_batch_sequences"] >= max(before, 2)
    assert all(r.text and r.finish_reason in {"length", "eos"} for r in results)
    assert [r.text for r in results] == [asyncio.run(backend.complete(r)).text for r in reqs]


def test_bad_input_names_the_problem(backend):
    with pytest.raises(BackendError, match=r"prompt has 3001 tokens but n_ctx is 512"):  # a lost particle
        run(backend, prompt="word " * 3000, s=dict(max_tokens=1))
    with pytest.raises(FileNotFoundError, match="model file not found"):
        LlamaCpp(model_path="/nonexistent/model.gguf")
    with pytest.raises(TypeError, match="GenerationRequest"):
        asyncio.run(backend.complete({"prompt": "hi"}))
