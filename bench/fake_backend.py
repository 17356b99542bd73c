"""`FakeLatencyBackend`: an in-process backend *test double* with a fixed latency (no model, no HTTP).

Every call sleeps `latency` seconds on the event loop (0 means no sleep at all) and returns the
same short completion with honest-looking log-probabilities, so the framework's own cost
(agents, traces, replay, resampling, scheduling) can be measured apart from any model or HTTP
client. `fake_reply(latency)` (bench/asyncio_fanout.py) is the same thing as a bare coroutine, for
the plain-asyncio and LangGraph baselines.
"""

from __future__ import annotations

from agents.backends.base import Backend, Completion, GenerationRequest, Usage
from bench.asyncio_fanout import REPLY, fake_reply


class FakeLatencyBackend(Backend):
    """A test double: answers every request with "ok ok" after `latency` seconds."""

    name = "fake_latency"

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.model = f"fake-{latency * 1e3:g}ms"
        self.calls = 0

    async def complete(self, request: GenerationRequest) -> Completion:
        text = await fake_reply(self.latency)
        self.calls += 1
        return Completion(text=text, tokens=list(REPLY), token_logprobs=[-0.1] * len(REPLY),
                          base_token_logprobs=[-0.1] * len(REPLY), finish_reason="length",
                          usage=Usage(input_tokens=4, output_tokens=len(REPLY)), latency_s=self.latency,
                          model=self.model, backend=self.name)
