"""The backend protocol: one small async contract every LLM backend implements.

A backend turns a `GenerationRequest` into a `Completion` that carries what the inference engine
needs to keep weights honest:

- `token_logprobs`: log q(token) under the distribution the token was actually sampled from
  (the proposal: temperature, top-p, …), so `Completion.log_prob` = log q(completion);
- `base_token_logprobs`: log p(token) under the base model at temperature 1 with no truncation,
  where the backend can know it (None otherwise), so weights can correct a tempered proposal;
- token usage and latency, for budgets and for the GenAI span attributes.

Backends: `LlamaCpp` (in-process llama.cpp, the embedded SmolLM2 default), `OpenAICompatible`
(any OpenAI-compatible endpoint through the official `openai` client), `Scripted` (a test double).
"""

from __future__ import annotations

import abc
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator
from typing_extensions import Annotated

from agents.constraints.base import Constraint
from agents.constraints.report import ConstraintReport

from swarm.errors import ParticleLost

_object_setattr = object.__setattr__


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _assistant_calls_without_text(cls, data: Any) -> Any:
        """An OpenAI-format assistant message that only calls tools has `content: null`: it is the
        empty text (a history copied from an OpenAI chat was refused, "content=None")."""
        if isinstance(data, dict) and data.get("content", "") is None and data.get("role") == "assistant" \
                and data.get("tool_calls"):
            data = {**data, "content": ""}
        return data


class GenerationSettings(BaseModel):
    """Sampling settings. Validation names the field at fault; an unknown one (a misspelt
    `max_token=8`) is refused, not ignored (it would have sampled with the default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(128, gt=0)
    temperature: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    """0 means greedy decoding (the proposal is then a point mass: log q = 0). Finite: infinity
    would sample uniformly over the vocabulary, and no JSON request can carry it."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: tuple[str, ...] = ()
    """Strings that end the generation (not included); each non-empty."""
    unit: Literal["text", "token", "word", "line"] = "text"
    """Stepwise generation: stop after one token / one word / one line, so SMC can resample between
    chunks. The recorded log-probability is that of the chunk under this chunking proposal."""

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """An empty stop string matches everywhere: backends ignored it (or a server refused it)."""
        if "" in value:
            raise ValueError("stop strings must be non-empty (an empty one would match before every token)")
        return value


class GenerationRequest(BaseModel):
    """Exactly one of `messages` (chat) or `prompt` (raw completion). `assistant_prefix` continues a
    partial assistant reply (chunked generation); `seed` makes sampling reproducible."""

    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    assistant_prefix: str = ""
    settings: GenerationSettings = Field(default_factory=GenerationSettings)
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    """OpenAI-format tool schemas ({"type": "function", "function": {...}})."""
    response_format: dict[str, Any] | None = None
    log_q: Literal["optional", "required"] = "optional"
    """"required": the site's weight needs log q and log p of the completion (`target="base"`, or a
    policy that scores traces by log q), so the backend must report them; "optional": up to the
    backend (HTTP backends then skip log-probabilities, which cost the server; `LlamaCpp` always
    computes them)."""
    constraint: Annotated[Any, PlainSerializer(lambda c: None if c is None else c.describe(), return_type=Any)] = None
    """A token-level constraint applied inside the proposal (`agents.constraints`); serialised as its
    stable description, so it is part of the response-cache key."""

    @field_validator("constraint")
    @classmethod
    def _is_constraint(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, Constraint):
            raise ValueError(f"constraint must be built with agents.constraints (e.g. constraints.regex(...)), "
                             f"got {type(value).__name__}")
        return value

    @model_validator(mode="after")
    def _one_input(self) -> "GenerationRequest":
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("GenerationRequest needs exactly one of 'messages' or 'prompt'")
        return self

    def replaced(self, **fields: Any) -> "GenerationRequest":
        """A shallow copy with `fields` replaced, unvalidated: what `model_copy(update=fields)` gives
        (same fields, fields set, equality and dump), for values of the fields' own types, at a third
        of its cost. Every generation copies its request once, to set the particle's seed; the HTTP
        backend copies it for word chunks, sibling groups and client-rendered continuations."""
        new = object.__new__(type(self))
        values = self.__dict__.copy()
        values.update(fields)
        _object_setattr(new, "__dict__", values)
        _object_setattr(new, "__pydantic_extra__", None)  # extra input is ignored, never stored
        _object_setattr(new, "__pydantic_fields_set__", self.__pydantic_fields_set__ | fields.keys())
        _object_setattr(new, "__pydantic_private__", None)  # and has no private attributes
        return new


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: str
    """The raw JSON text of the arguments, as the model wrote it."""


class Completion(BaseModel):
    text: str
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    base_token_logprobs: list[float] | None = None
    stop_log_prob: float = 0.0
    """log-probability of the event that ended the chunk (e.g. the mass of word-boundary tokens for
    unit="word"), part of the chunk's proposal probability; 0 when stopping was deterministic."""
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    model: str = ""
    backend: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    log_q_quality: Literal["exact", "estimated", "absent"] = "exact"
    """How far `token_logprobs`/`stop_log_prob` are log q of what was drawn: "exact"; "estimated"
    (e.g. a server's raw-model log-probabilities at temperature != 1, or a word boundary's mass
    estimated from top-k log-probabilities); "absent" (not requested: `log_prob` is 0, a placeholder)."""
    constraint: ConstraintReport | None = None
    """With `request.constraint`: the weight correction (log-mass of the allowed tokens per position)
    and whether it is exact, estimated or unavailable (see `agents.constraints.report`)."""
    served_by: dict[str, Any] | None = None
    """Where the call ran, when a Ray actor served it: node_id, actor_id, replica, pid (the sample
    event's info carries it as `served_by`, so the global trace shows where every call ran)."""

    @property
    def log_prob(self) -> float:
        """log q(completion) under the proposal it was sampled from."""
        return math.fsum(self.token_logprobs) + self.stop_log_prob

    @property
    def base_log_prob(self) -> float | None:
        """log p(completion) under the base model at temperature 1, if the backend knows it."""
        if self.base_token_logprobs is None:
            return None
        return math.fsum(self.base_token_logprobs)


class BackendError(ParticleLost):
    """A backend call failed for good (after retries, or a non-retryable 4xx).

    A `swarm.ParticleLost`: raised inside a program it marks the particle *lost* to the
    infrastructure (missing data, left out of Ẑ), not *killed* by the target (docs/theory.md §3.4).
    `source` names the backend when the raiser knows it."""

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False,
                 source: str = "") -> None:
        super().__init__(message, source=source)
        self.status_code = status_code
        self.retryable = retryable


class Backend(abc.ABC):
    """An LLM backend. Implementations must be safe to call concurrently from one event loop."""

    name: str = "backend"
    model: str = ""

    @abc.abstractmethod
    async def complete(self, request: GenerationRequest) -> Completion:
        """Generate one completion for `request`."""

    def identity(self) -> str:
        """A stable string naming this backend and model: part of every response-cache key."""
        return f"{self.name}:{self.model}"

    async def aclose(self) -> None:
        """Release connections, models, threads."""
