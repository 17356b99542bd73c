"""`Scripted`, the test-double backend: deterministic replies, fake tokens, fixed logprobs."""

from __future__ import annotations

import asyncio
import time

import pytest

from agents.backends import Scripted
from agents.backends.base import BackendError, ChatMessage, GenerationRequest, GenerationSettings


def req(prefix: str = "", **settings) -> GenerationRequest:
    return GenerationRequest(messages=[ChatMessage(role="user", content="say it")], assistant_prefix=prefix,
                             settings=GenerationSettings(**settings))


def test_cycles_through_the_list_with_fake_tokens_and_fixed_logprobs():
    b = Scripted(["Hello world", "bye"], logprob_per_token=-0.25)
    out = [asyncio.run(b.complete(req())) for _ in range(3)]
    assert [c.text for c in out] == ["Hello world", "bye", "Hello world"]
    c = out[0]
    assert c.tokens == ["Hello", " world"] and c.token_logprobs == [-0.25, -0.25]
    assert c.base_token_logprobs == [-0.25, -0.25] and c.log_prob == -0.5
    assert c.usage.input_tokens == 2 and c.usage.output_tokens == 2 and c.backend == "scripted"
    assert b.calls == 3 and b.output_tokens == 5


def test_callable_responses_and_chunked_generation():
    b = Scripted(lambda r: "The answer is 42.\nDone")
    word = asyncio.run(b.complete(req(unit="word")))
    assert word.text == "The" and word.finish_reason == "unit"
    assert asyncio.run(b.complete(req("The", unit="word"))).text == " answer"
    assert asyncio.run(b.complete(req("The answer", unit="line"))).text == " is 42.\n"
    assert asyncio.run(b.complete(req("The answer is 42.\n", unit="line"))).text == "Done"
    assert asyncio.run(b.complete(req(stop=("42",)))).text == "The answer is "
    c = asyncio.run(b.complete(req(max_tokens=2)))
    assert c.text == "The answer" and c.finish_reason == "length"


def test_latency_and_concurrency():
    b = Scripted(["x"], latency_s=0.05)

    async def many():
        return await asyncio.gather(*(b.complete(req()) for _ in range(20)))

    started = time.monotonic()
    out = asyncio.run(many())
    assert len(out) == 20 and time.monotonic() - started < 0.5  # concurrent, not 20 × 50 ms


def test_fail_times_raises_retryable_errors_first():
    b = Scripted(["ok"], fail_times=2)
    for _ in range(2):
        with pytest.raises(BackendError) as info:
            asyncio.run(b.complete(req()))
        assert info.value.retryable
    assert asyncio.run(b.complete(req())).text == "ok" and b.calls == 3


def test_bad_scripts_are_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        Scripted([])
    with pytest.raises(TypeError, match="not str"):
        asyncio.run(Scripted(lambda r: 3).complete(req()))
