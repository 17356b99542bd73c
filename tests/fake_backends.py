"""TEST DOUBLE backends for the Ray-agent and checkpoint tests (no model: fixed, seed-driven text).

- `SeededEcho`: the reply is a function of the request's seed (so of the particle's stream and site)
  and of the last message, with a latency; deterministic wherever it runs (driver, actor, restarted
  actor), which is what parity and fault-injection tests need.
- `CallCountingBackend`: a `SeededEcho` that appends one line per *completed* call to a file
  (O_APPEND, one write), so a test can see every call made by any process, including a killed one.
"""

from __future__ import annotations

import asyncio
import os

from agents.backends.base import Backend, Completion, GenerationRequest, Usage
from agents.backends.scripted import fake_tokens


class SeededEcho(Backend):
    """A TEST DOUBLE: replies `"<prefix> <seed mod modulus>"`; log-probability -1 per fake token."""

    name = "seeded_echo"

    def __init__(self, prefix: str = "idea", modulus: int = 10, latency_s: float = 0.0, model: str = "fake") -> None:
        self.prefix = prefix
        self.modulus = modulus
        self.latency_s = latency_s
        self.model = model

    def reply(self, request: GenerationRequest) -> str:
        return f"{self.prefix} {(request.seed or 0) % self.modulus}"

    def delay(self, request: GenerationRequest) -> float:
        return self.latency_s

    async def complete(self, request: GenerationRequest) -> Completion:
        if self.delay(request):
            await asyncio.sleep(self.delay(request))
        text = self.reply(request)
        tokens = fake_tokens(text)
        prompt = request.prompt or " ".join(m.content for m in request.messages or [])
        return Completion(text=text, tokens=tokens, token_logprobs=[-1.0] * len(tokens), finish_reason="stop",
                          usage=Usage(input_tokens=len(fake_tokens(prompt)), output_tokens=len(tokens)),
                          latency_s=self.delay(request), model=self.model, backend=self.name)


class Critic(SeededEcho):
    """A TEST DOUBLE critic: scores the digit at the end of the last message (0-9) as text."""

    name = "fake_critic"

    def reply(self, request: GenerationRequest) -> str:
        last = (request.messages or [])[-1].content if request.messages else request.prompt or ""
        digits = [c for c in last if c.isdigit()]
        return str(int(digits[-1]) if digits else 0)


class CallCountingBackend(SeededEcho):
    """A TEST DOUBLE that records each completed call (its seed and prompt) as a line of `counter_path`.

    Latency varies with the seed (`latency_s` + 0–9 × `spread_s`) so that calls of one step complete
    at different times, as real LLM calls do."""

    name = "call_counting"

    def __init__(self, counter_path: str, latency_s: float = 0.05, spread_s: float = 0.02, **kwargs) -> None:
        super().__init__(latency_s=latency_s, **kwargs)
        self.counter_path = str(counter_path)
        self.spread_s = spread_s

    def delay(self, request: GenerationRequest) -> float:
        return self.latency_s + ((request.seed or 0) % 10) * self.spread_s

    async def complete(self, request: GenerationRequest) -> Completion:
        completion = await super().complete(request)
        last = (request.messages or [])[-1].content if request.messages else request.prompt or ""
        fd = os.open(self.counter_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{request.seed}|{last}\n".encode())
        finally:
            os.close(fd)
        return completion


class FailsOnSomeSeeds(SeededEcho):
    """A TEST DOUBLE that raises a non-retryable `BackendError` for seeds divisible by `every`."""

    name = "fails_on_some_seeds"

    def __init__(self, every: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.every = every

    async def complete(self, request: GenerationRequest) -> Completion:
        from agents.backends.base import BackendError

        if (request.seed or 0) % self.every == 0:
            raise BackendError(f"seed {request.seed} refused", status_code=400)
        return await super().complete(request)
