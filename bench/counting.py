"""`OutputTokenBudget`: a backend wrapper for equal-*generated*-token comparisons (a bench tool).

`policies.Budget(max_tokens=B)` counts input + output tokens as the backend reports them. For a
word-by-word SMC every call re-sends the conversation, so its reported input tokens are counted
over and over although the backend's KV cache reuses them; an input+output budget would starve
stepwise policies for work they do not do. Wrapped in this class, a backend reports
input_tokens = 0 to the run (the real counts are kept in `input_tokens`), so `Budget(max_tokens=B)`
becomes a cap on generated tokens, the same for every policy. Everything else is delegated.
"""

from __future__ import annotations

from agents.backends.base import Backend, Completion, GenerationRequest, Usage


class OutputTokenBudget(Backend):
    """Delegates to `inner`; counts calls and tokens; reports only output tokens to the run."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0

    def identity(self) -> str:
        return self.inner.identity()

    def reset(self) -> None:
        self.calls = self.input_tokens = self.output_tokens = 0

    async def complete(self, request: GenerationRequest) -> Completion:
        completion = await self.inner.complete(request)
        self.calls += 1
        self.input_tokens += completion.usage.input_tokens
        self.output_tokens += completion.usage.output_tokens
        return completion.model_copy(update={"usage": Usage(input_tokens=0,
                                                            output_tokens=completion.usage.output_tokens)})

    async def aclose(self) -> None:
        await self.inner.aclose()
