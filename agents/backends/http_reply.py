"""One choice of an OpenAI-style reply (a dict) → `OpenAICompletion`, with the logprob rules of
`agents.backends.openai_compat` and the quality of log q: "exact", "estimated" or "absent"."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from agents.backends.base import BackendError, Completion, GenerationRequest, GenerationSettings, ToolCall
from agents.backends.http_wire import align, chat_tokens, completion_tokens, cut_word_text, cut_word_tokens

if TYPE_CHECKING:
    from agents.backends.openai_compat import OpenAICompatible


class OpenAICompletion(Completion):
    """A `Completion` that also carries the base-model mass of the chunk's stopping event (the same
    field and meaning as `LlamaCppCompletion.base_stop_log_prob`)."""

    base_stop_log_prob: float | None = None

    @property
    def base_log_prob(self) -> float | None:
        """log p(chunk) under the base model at temperature 1, including the stopping event."""
        if self.base_token_logprobs is None:
            return None
        return math.fsum([*self.base_token_logprobs, self.base_stop_log_prob or 0.0])


def parse_choice(backend: "OpenAICompatible", kind: str, choice: dict[str, Any], request: GenerationRequest,
                 want: bool, in_word: bool = False) -> OpenAICompletion:
    """The completion of one choice. `want`: logprobs were requested; `in_word`: this request
    continues a word chunk that already holds content (see `http_words`)."""
    if kind == "chat":
        message = choice.get("message") or {}
        text, toks = message.get("content") or "", chat_tokens(choice) if want else None
        tool_calls = [ToolCall(id=t.get("id") or "", name=t["function"]["name"],
                               arguments=t["function"].get("arguments") or "")
                      for t in (message.get("tool_calls") or []) if t.get("function")]
    else:  # logprobs a server sends unasked are ignored: "absent" means not requested, always
        text, toks, tool_calls = choice.get("text") or "", completion_tokens(choice) if want else None, []
    finish, unit = choice.get("finish_reason"), request.settings.unit
    if toks is None:
        if want and text and backend.require_logprobs:
            raise BackendError(f"{backend._where(kind)} returned no logprobs for a non-empty completion; "
                               "weights need them (pass require_logprobs=False to accept this)")
        completion = _without_logprobs(text, finish, unit, choice, in_word, tool_calls, backend.name)
        completion.constraint = _report(request, completion.text)
        return completion
    stop_lp = 0.0
    pieces, text, newline = align(toks, text, unit == "line")
    if unit == "word":
        k, stop_lp = cut_word_tokens(toks, pieces, in_word)
        if k is not None:
            toks, pieces, text, finish = toks[:k], pieces[:k], "".join(pieces[:k]), "unit"
    elif newline or (unit == "token" and finish == "length"):
        finish = "unit"
    s = request.settings
    token_lps, base_lps, stop_q, stop_p = _logprob_fields(backend.reported_logprobs, s,
                                                          [lp for _, lp, _ in toks], stop_lp)
    exact = backend.proposal_logprobs_exact(request) and (unit != "word" or finish != "unit" or s.temperature == 0)
    return OpenAICompletion(text=text, tokens=pieces, token_logprobs=token_lps, base_token_logprobs=base_lps,
                            stop_log_prob=stop_q, base_stop_log_prob=stop_p, finish_reason=finish,
                            backend=backend.name, tool_calls=tool_calls,
                            log_q_quality="exact" if exact else "estimated", constraint=_report(request, text))


def _report(request: GenerationRequest, text: str) -> Any:
    """A server-enforced constraint's report: its weight correction is unavailable (see
    `OpenAICompatible._constraint_fields`)."""
    if request.constraint is None:
        return None
    from agents.constraints.report import ConstraintReport

    return ConstraintReport(description=request.constraint.describe(), weights="unavailable",
                            complete=request.constraint.complete(text) > 0)


def _without_logprobs(text: str, finish: str | None, unit: str, choice: dict[str, Any], in_word: bool,
                      tool_calls: list[ToolCall], name: str) -> OpenAICompletion:
    """No token pieces: words are cut at the first whitespace after content (`cut_word_text`); a
    line is known to end at a newline when the server said so (`stop_reason` == "\\n")."""
    if unit == "word":
        k = cut_word_text(text, in_word)
        if k is not None:
            text, finish = text[:k], "unit"
    elif unit == "line" and choice.get("stop_reason") == "\n":
        text, finish = text + "\n", "unit"
    elif unit == "token" and finish == "length":
        finish = "unit"
    return OpenAICompletion(text=text, finish_reason=finish, backend=name, tool_calls=tool_calls,
                            log_q_quality="absent")


def _logprob_fields(reported_kind: str, s: GenerationSettings, reported: list[float], stop: float
                    ) -> tuple[list[float], list[float] | None, float, float | None]:
    """(token_logprobs, base_token_logprobs, stop_log_prob, base_stop_log_prob) per the rules of
    the `openai_compat` module docstring."""
    untempered = s.temperature == 1 and s.top_p == 1
    if reported_kind == "proposal":
        return reported, (list(reported) if untempered else None), stop, (stop if untempered else None)
    if s.temperature == 0:  # greedy: the proposal is a point mass
        return [0.0] * len(reported), reported, 0.0, stop
    return reported, list(reported), stop, stop  # exact only when untempered: PROPOSAL_LOGPROBS_INEXACT
