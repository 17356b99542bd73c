"""The batched, prefix-sharing `LlamaCpp` on the real embedded model: batched and alone draw from the
same distribution, recorded log-probabilities do not depend on the batch, eviction keeps results
right, and the per-sequence draw is a hook.

"Alone" means the same backend serving one request at a time (nothing else in the batch); the
independent reference is llama-cpp-python's own `Llama` (flash attention, one sequence, all logits).

Tolerances. Where llama.cpp's CPU kernels are batch-invariant (the probe `invariant` measures it on
this machine: a greedy completion's log-probabilities alone and in a batch of 16 compared bit for
bit) batched and alone must agree exactly. Elsewhere they may differ by float rounding between
kernel paths: the largest such difference measured so far is 0.19 in a token's log-probability
(an AVX-512 CPU, a 1-token server decode against the in-process 2-token path, issue 11), so
LOGPROB_TOLERANCE = 0.25 holds on any CPU, while the bugs batching can have (another sequence's
logits, a position off by one, stale KV cells) move log-probabilities by whole nats (shown when
these tests were written, against deliberately broken engines).
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install 'plp-swarm[llama]')")

from agents import constraints  # noqa: E402
from agents.backends.base import ChatMessage, GenerationRequest, GenerationSettings  # noqa: E402
from agents.backends.embedded import embedded_model_path  # noqa: E402
from agents.backends.llama_cpp import LlamaCpp  # noqa: E402
from agents.backends.llama_sampling import TokenDraw  # noqa: E402

pytestmark = pytest.mark.llm

LOGPROB_TOLERANCE = 0.25
FLOAT32_TOLERANCE = 1e-4
"""Where the kernels are invariant, the backend's float32 log-softmax against a float64 one of the
same float32 logits: |logit| < 50 and float32's relative precision 6e-8 bound the gap by ~1e-5."""
STORY = "Once upon a time, in a small village by the sea, there lived"
OTHER = "The recipe for a good soup starts with"


def chat(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="You write one short, simple sentence."),
            ChatMessage(role="user", content=text)]


@pytest.fixture(scope="module")
def backend():
    b = LlamaCpp(seed=0, n_threads=1)
    yield b
    b.close()


@pytest.fixture(scope="module")
def reference():
    llm = llama_cpp.Llama(str(embedded_model_path()), n_ctx=512, logits_all=True, flash_attn=True, n_threads=1,
                          verbose=False)
    yield llm
    llm.close()


def together(backend: LlamaCpp, requests: list[GenerationRequest]):
    async def go():
        return await asyncio.gather(*(backend.complete(r) for r in requests))
    return asyncio.run(go())


def alone(backend: LlamaCpp, requests: list[GenerationRequest]):
    return [backend.complete_sync(r) for r in requests]


def mixed_requests() -> list[GenerationRequest]:
    """16 requests: two raw prompts and one chat, several units, temperatures and top-p, three of
    them drawn under a constraint (no "e": a guided proposal with its log-masses)."""
    out = []
    for k in range(16):
        settings = [GenerationSettings(max_tokens=10), GenerationSettings(max_tokens=8, temperature=0.7, top_p=0.9),
                    GenerationSettings(max_tokens=6, unit="word"), GenerationSettings(max_tokens=6, temperature=0)][k % 4]
        constraint = constraints.forbid_chars("eE") if k % 5 == 4 else None
        if k % 3 == 2:
            out.append(GenerationRequest(messages=chat("Write about the sea."), seed=k, settings=settings,
                                         constraint=constraint))
        else:
            out.append(GenerationRequest(prompt=STORY if k % 3 == 0 else OTHER, seed=k, settings=settings,
                                         constraint=constraint))
    return out


def fields(c):
    return (c.text, c.token_ids, c.token_logprobs, c.base_token_logprobs, c.stop_log_prob, c.finish_reason,
            c.constraint)


@pytest.fixture(scope="module")
def invariant(backend) -> bool:
    """Whether llama.cpp's kernels give a sequence the same logits bit for bit alone and in a batch
    on this CPU, measured on the backend's own context configuration (per-sequence KV streams, flash
    attention) through llama.cpp's API directly, so that no bug of the engine can fake or hide it:
    a prompt evaluated alone in one batch, then its next token decoded alone, against the same
    prompt evaluated 1, 3, 2, 1, ... tokens at a time beside another sequence and the next token
    decoded in the middle of a batch of 16. (Without flash attention the probe finds the 1-token
    chunks different on an AVX2 CPU.)"""
    from agents.backends.llama_context import BatchContext

    backend.load()
    lib, vocab = llama_cpp, backend._model.n_vocab()
    prompt = backend.prompt_tokens(GenerationRequest(prompt=STORY))
    other = backend.prompt_tokens(GenerationRequest(prompt=OTHER))

    def decode(kv, entries):  # (token, pos, seq, wants logits) -> the logits rows asked for
        b = kv.batch
        for i, (t, pos, seq, out) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0], b.logits[i] = t, pos, 1, seq, out
        b.n_tokens = len(entries)
        assert lib.llama_decode(kv.ctx, b) == 0
        return [np.ctypeslib.as_array(lib.llama_get_logits_ith(kv.ctx, i), shape=(vocab,)).copy()
                for i, e in enumerate(entries) if e[3]]

    kv = BatchContext(lib, backend._model, n_ctx=256, n_seq_max=16, n_batch=512, n_threads=1, verbose=False,
                      name="probe")
    try:
        kv.ensure(16)
        solo = decode(kv, [(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        solo += decode(kv, [(42, len(prompt), 0, True)])
        lib.llama_memory_clear(lib.llama_get_memory(kv.ctx), True)
        crowd, n_other, start = [], 0, 0
        while start < len(prompt):  # chunks of 1, 3, 2, 1, 3, 2, ... tokens, each beside another sequence
            size = (1, 3, 2)[n_other % 3]
            part = [(t, start + i, 7, start + i == len(prompt) - 1) for i, t in enumerate(prompt[start:start + size])]
            crowd += decode(kv, [(other[n_other % len(other)], n_other, 1, True), *part])[1:]
            n_other, start = n_other + 1, start + size
        step = [(other[s % len(other)], n_other if s == 1 else 0, s, True) for s in range(16) if s != 7]
        crowd += decode(kv, step[:8] + [(42, len(prompt), 7, True)] + step[8:])[8:9]
    finally:
        kv.close()
    return all(np.array_equal(a, b) for a, b in zip(solo, crowd))


def test_batched_and_alone_completions_are_bit_identical_where_the_kernels_are_batch_invariant(backend, invariant):
    if not invariant:
        pytest.skip("llama.cpp's kernels are not batch-invariant on this CPU: the statistical tests cover it")
    requests = mixed_requests()
    before = backend.stats()["max_batch_sequences"]
    batched = together(backend, requests)
    assert backend.stats()["max_batch_sequences"] >= max(before, 8), "the requests were decoded in batches"
    for r, c in zip(requests, batched):  # the guided requests were drawn under their constraint (a top-p
        assert (c.constraint is not None) == (r.constraint is not None)  # one may die: no allowed token in
        assert r.constraint is None or "e" not in c.text.lower(), c       # its nucleus, finish "constraint")
    fresh = LlamaCpp(seed=0, n_threads=1)
    try:
        single = alone(fresh, requests)
    finally:
        fresh.close()
    assert [fields(c) for c in batched] == [fields(c) for c in single]


def test_log_probabilities_recorded_in_a_batch_equal_the_single_sequence_ones(backend, invariant):
    """Every token's recorded log p and log q, in a batch of 16 mixed requests, against the same
    request alone (up to the first token where the two drew differently, which only happens where
    the kernels are not batch-invariant; there the tolerance is LOGPROB_TOLERANCE, else 0)."""
    requests = mixed_requests()
    batched = together(backend, requests)
    fresh = LlamaCpp(seed=0, n_threads=1)  # nothing cached: alone means alone from the first token
    try:
        single = alone(fresh, requests)
    finally:
        fresh.close()
    tolerance = 0.0 if invariant else LOGPROB_TOLERANCE
    for b, s in zip(batched, single):
        n = min(len(b.token_ids), len(s.token_ids))
        k = next((i for i in range(n) if b.token_ids[i] != s.token_ids[i]), n)  # same tokens up to k
        assert k > 0
        np.testing.assert_allclose(b.base_token_logprobs[:k], s.base_token_logprobs[:k], rtol=0, atol=tolerance)
        np.testing.assert_allclose(b.token_logprobs[:k], s.token_logprobs[:k], rtol=0, atol=tolerance)


def _first_token_counts(backend, prompt, others, n, seed0):
    """First-token draws (temperature 1) for `prompt`, n requests interleaved with requests for
    `others` in concurrent batches."""
    requests = []
    for k in range(n):
        requests.append(GenerationRequest(prompt=prompt, seed=seed0 + k, settings=GenerationSettings(max_tokens=1)))
        requests.append(GenerationRequest(prompt=others, seed=seed0 + k, settings=GenerationSettings(max_tokens=1)))
    counts: dict[int, int] = {}
    for start in range(0, len(requests), 32):
        for c in together(backend, requests[start:start + 32])[0::2]:
            counts[c.token_ids[0]] = counts.get(c.token_ids[0], 0) + 1
    return counts


def test_batched_first_tokens_follow_the_single_sequence_distribution(backend, reference):
    """600 first tokens drawn in batches (each batch also holds requests for another prompt), against
    p computed from the reference model's logits for this prompt alone. Per category (tokens with
    n·p ≥ 10, the rest pooled) a two-sided binomial z-test, Bonferroni-corrected so that a correct
    sampler fails with probability ≤ α = 1e-4 overall (normal approximation, n·p ≥ 10); a sampler
    that reads another sequence's logits fails with certainty."""
    from statistics import NormalDist

    n = 600
    counts = _first_token_counts(backend, STORY, OTHER, n, seed0=1000)
    prompt = backend.prompt_tokens(GenerationRequest(prompt=STORY))
    reference.reset()
    reference.eval(prompt)
    logits = np.array(reference.scores[len(prompt) - 1], dtype=np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    big = [int(t) for t in np.argsort(-p) if p[t] * n >= 10]
    assert len(big) >= 3, "the test needs several likely tokens"
    categories = [([t], p[t]) for t in big] + [(None, 1.0 - float(p[big].sum()))]
    z_max = NormalDist().inv_cdf(1 - 1e-4 / (2 * len(categories)))
    for tokens, prob in categories:
        seen = sum(counts.get(t, 0) for t in tokens) if tokens else n - sum(counts.get(t, 0) for t in big)
        z = (seen - n * prob) / math.sqrt(n * prob * (1 - prob))
        assert abs(z) <= z_max, (tokens, seen, round(n * prob, 1), round(z, 2))


def test_eviction_under_a_small_cache_keeps_results_right(reference, invariant):
    """Two slots of 96 tokens for 4 interleaved word-by-word generations: sequences are evicted all
    the time. The last word of every generation has the log-probabilities the reference model gives its
    tokens, and where the kernels are batch-invariant all completions equal those of a backend that
    never evicts."""
    small, large = LlamaCpp(seed=0, n_threads=1, n_ctx=96, n_seq_max=2), LlamaCpp(seed=0, n_threads=1)
    try:
        got = {name: _word_by_word(b) for name, b in (("small", small), ("large", large))}
        assert small.stats()["evictions"] >= 4 and large.stats()["evictions"] == 0
        last = {}  # each generation's last word: the longest context, after the most evictions
        for request, c in got["small"]:  # sorted by seed = 100 * generation + word
            last[request.seed // 100] = (small.prompt_tokens(request), c)
    finally:
        small.close()
        large.close()
    if invariant:
        assert [fields(c) for _, c in got["small"]] == [fields(c) for _, c in got["large"]]
    for prompt, c in last.values():
        reference.reset()
        reference.eval(prompt + c.token_ids)
        rows = np.array(reference.scores[len(prompt) - 1: len(prompt) + len(c.token_ids) - 1], dtype=np.float64)
        lse = rows.max(axis=1) + np.log(np.exp(rows - rows.max(axis=1, keepdims=True)).sum(axis=1))
        expected = [rows[i, t] - lse[i] for i, t in enumerate(c.token_ids)]
        np.testing.assert_allclose(c.base_token_logprobs, expected, rtol=0,
                                   atol=FLOAT32_TOLERANCE if invariant else LOGPROB_TOLERANCE)


def _word_by_word(backend: LlamaCpp, particles: int = 4, words: int = 4):
    texts = [""] * particles
    out = []

    async def step(i: int, w: int):
        request = GenerationRequest(messages=chat(["Write about a cat.", "Write about the sea."][i % 2]),
                                    assistant_prefix=texts[i], seed=100 * i + w,
                                    settings=GenerationSettings(unit="word", max_tokens=6))
        c = await backend.complete(request)
        texts[i] += c.text
        out.append((request, c))

    async def run():
        for w in range(words):
            await asyncio.gather(*(step(i, w) for i in range(particles)))

    asyncio.run(run())
    return sorted(out, key=lambda rc: (rc[0].seed, rc[0].assistant_prefix))


def test_the_per_sequence_draw_is_a_hook(backend):
    """A request's drawer decides the token and the log q it records (the plug-in point of guided
    proposals): a drawer that always takes the second most likely token."""
    from agents.backends.llama_chunks import ChunkBuilder
    from agents.backends.llama_engine import Job
    from agents.backends.llama_sampling import PROPOSAL, rng_for

    class SecondBest(type(PROPOSAL)):
        def draw(self, row, rng, free=None):
            token = int(np.argsort(-row.logq, kind="stable")[1])
            return TokenDraw(token, 0.0, float(row.logp[token]))

    request = GenerationRequest(prompt=STORY, settings=GenerationSettings(max_tokens=5))
    tokens = backend.prompt_tokens(request)
    chunk = ChunkBuilder(request.settings, backend._vocab, SecondBest())
    c = backend._engine.submit(Job(tokens, request.settings, chunk, rng_for(0))).result()
    greedy = backend.complete_sync(request.model_copy(update={"settings": GenerationSettings(max_tokens=1,
                                                                                             temperature=0)}))
    assert c.token_logprobs == [0.0] * 5 and c.token_ids[0] != greedy.token_ids[0]
    assert all(math.isfinite(x) for x in c.base_token_logprobs)


def test_a_failing_step_fails_its_requests_and_the_backend_serves_the_next_ones(monkeypatch):
    """An error inside the decode loop reaches every caller in flight as a BackendError naming it,
    and the next request is served by a new decode thread on a new context."""
    from agents.backends.base import BackendError
    from agents.backends.llama_engine import DecodeEngine

    b = LlamaCpp(seed=0, n_threads=1)
    try:
        request = GenerationRequest(prompt=STORY, seed=1, settings=GenerationSettings(max_tokens=4))
        expected = b.complete_sync(request)
        original = DecodeEngine._fill_batch

        def broken(self):
            raise RuntimeError("injected fault")

        monkeypatch.setattr(DecodeEngine, "_fill_batch", broken)
        with pytest.raises(BackendError, match="injected fault"):
            together(b, [request.model_copy(update={"seed": k}) for k in range(3)])
        monkeypatch.setattr(DecodeEngine, "_fill_batch", original)
        assert fields(b.complete_sync(request)) == fields(expected)
    finally:
        b.close()


def test_an_smc_run_is_the_same_batched_and_one_request_at_a_time(invariant):
    """The same seed, program and N give the same result bit for bit whether the backend decodes
    the particles together (up to 8 at once, with a shared, copied and evicted KV cache) or serves
    one request at a time from a single sequence slot (where the kernels are batch-invariant)."""
    if not invariant:
        pytest.skip("llama.cpp's kernels are not batch-invariant on this CPU")
    import policies
    from agents import Agent
    from bench.llm_throughput import word_program

    def run(backend: LlamaCpp):
        writer = Agent(name="writer", system="You write one short, simple sentence.", backend=backend)
        program = word_program(writer, words=3, prompt="Write about a cat.", penalty=0.5, max_tokens=6)
        try:
            result = policies.SMC(num_particles=8, seed=5).run(program)
            return [(p.value, p.log_weight) for p in result.particles], result.log_evidence, backend.stats()
        finally:
            backend.close()

    together_, z1, wide = run(LlamaCpp(seed=0, n_threads=1))
    one_by_one, z2, narrow = run(LlamaCpp(seed=0, n_threads=1, n_seq_max=1))
    assert wide["max_batch_sequences"] >= 4 and narrow["max_batch_sequences"] == 1
    assert (together_, z1) == (one_by_one, z2)


def test_a_growing_context_keeps_the_cached_sequences(invariant):
    """8 slots at first; 16 requests arriving together make the engine build a context of 16 and
    move the cached sequence into it (its KV state re-headed for the new stream count): the prompt
    is not evaluated again, and the completions equal a fresh backend's where the kernels are
    batch-invariant."""
    request = GenerationRequest(prompt=STORY, seed=1, settings=GenerationSettings(max_tokens=3))
    crowd = [request.model_copy(update={"seed": k}) for k in range(16)]
    b = LlamaCpp(seed=0, n_threads=1)
    try:
        b.complete_sync(request)
        assert b.stats()["slots"] == 8
        grown = together(b, crowd)
        stats = b.stats()
    finally:
        b.close()
    assert stats["slots"] == 16 and stats["context_resizes"] == 1
    prompt_size = grown[0].usage.input_tokens
    assert all(c.reused_tokens == prompt_size and c.prefilled_tokens == 0 for c in grown)
    if invariant:
        fresh = LlamaCpp(seed=0, n_threads=1)
        try:
            assert [fields(c) for c in grown] == [fields(c) for c in together(fresh, crowd)]
        finally:
            fresh.close()
