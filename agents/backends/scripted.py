"""`Scripted`: a TEST DOUBLE backend. It returns scripted text, not model output.

Use it for fast, deterministic unit tests and for measuring the framework's own overhead (no model,
no network). Its log-probabilities are fixed numbers, not probabilities of anything: weights computed
from them are only meaningful as bookkeeping checks.
"""

from __future__ import annotations

import asyncio
import re
from typing import Callable

from agents.backends.base import Backend, BackendError, Completion, GenerationRequest, Usage

_TOKEN_RE = re.compile(r"\s*\S+|\s+")


def fake_tokens(text: str) -> list[str]:
    """Whitespace-led fake tokens: `"Hi there\\n"` → `["Hi", " there", "\\n"]` (they join back to text)."""
    return _TOKEN_RE.findall(text)


class Scripted(Backend):
    """A TEST DOUBLE: replies from a script instead of a model.

    `responses` is a list cycled through one call at a time, or a function of the request. The reply
    is then shaped like a real backend's: an `assistant_prefix` that the reply starts with is removed
    (so a function can return the whole answer and chunked generation walks through it), `unit`
    keeps one token / word / line (the line with its newline; finish_reason "unit"), `stop` strings
    cut it, and `max_tokens` truncates it. Tokens are
    fake whitespace-led pieces, each with log-probability `logprob_per_token` (also the base model's).

    `latency_s` adds an `asyncio.sleep` per call; the first `fail_times` calls raise a retryable
    `BackendError` (to test error handling). `calls` counts calls (failed ones included);
    `last_request` is the most recent request.
    """

    name = "scripted"

    def __init__(
        self,
        responses: list[str] | Callable[[GenerationRequest], str],
        *,
        latency_s: float = 0.0,
        logprob_per_token: float = -1.0,
        fail_times: int = 0,
        model: str = "scripted",
    ) -> None:
        if not callable(responses):
            responses = list(responses)
            if not responses:
                raise ValueError("Scripted: responses must be a non-empty list or a callable")
            if not all(isinstance(r, str) for r in responses):
                raise ValueError("Scripted: every entry of responses must be a str")
        if latency_s < 0:
            raise ValueError(f"Scripted: latency_s={latency_s!r} must be >= 0")
        self._responses = responses
        self.latency_s = latency_s
        self.logprob_per_token = float(logprob_per_token)
        self.fail_times = fail_times
        self.model = model
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.last_request: GenerationRequest | None = None

    def __repr__(self) -> str:
        kind = "callable" if callable(self._responses) else f"{len(self._responses)} responses"
        return f"Scripted({kind}, model={self.model!r})"

    async def complete(self, request: GenerationRequest) -> Completion:
        index = self.calls
        self.calls += 1
        self.last_request = request
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if index < self.fail_times:
            raise BackendError(f"Scripted: scripted failure {index + 1} of {self.fail_times}", retryable=True)
        text = self._pick(request, index - self.fail_times)
        if not isinstance(text, str):
            raise TypeError(f"Scripted: the response function returned {type(text).__name__}, not str")
        text, tokens, finish = _shape(text, request)
        usage = Usage(input_tokens=_input_tokens(request), output_tokens=len(tokens))
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        logprobs = [self.logprob_per_token] * len(tokens)
        return Completion(text=text, tokens=tokens, token_logprobs=logprobs,
                          base_token_logprobs=list(logprobs), finish_reason=finish, usage=usage,
                          latency_s=self.latency_s, model=self.model, backend=self.name)

    def _pick(self, request: GenerationRequest, index: int) -> str:
        if callable(self._responses):
            return self._responses(request)
        return self._responses[index % len(self._responses)]


def _shape(text: str, request: GenerationRequest) -> tuple[str, list[str], str]:
    """Apply assistant_prefix, stop strings, unit and max_tokens; returns (text, tokens, finish)."""
    s = request.settings
    if request.assistant_prefix and text.startswith(request.assistant_prefix):
        text = text[len(request.assistant_prefix):]
    finish = "stop"
    if s.unit == "line" and "\n" in text:
        text, finish = text[:text.index("\n") + 1], "unit"  # a line keeps its newline, like LlamaCpp
    cuts = [text.find(x) for x in s.stop if x and x in text]
    if cuts:
        text, finish = text[:min(cuts)], "stop"
    tokens = fake_tokens(text)
    if s.unit in ("token", "word") and len(tokens) > 1:
        tokens, finish = tokens[:1], "unit"  # fake tokens are whole whitespace-led words
    if len(tokens) > s.max_tokens:
        tokens, finish = tokens[:s.max_tokens], "length"
    return "".join(tokens), tokens, finish


def _input_tokens(request: GenerationRequest) -> int:
    if request.prompt is not None:
        return len(fake_tokens(request.prompt))
    return sum(len(fake_tokens(m.content)) for m in request.messages or [])
