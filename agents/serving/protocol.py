"""The OpenAI chat-completions protocol as `swarm serve` speaks it (pydantic, like vLLM's
`protocol.py`): the request with its `swarm` extension, the response, stream chunks, error objects.

Extensions (documented in docs/serving.md):

- request `swarm` (the openai client's `extra_body={"swarm": {...}}`): `arguments` (keyword
  arguments of the program), `answer` ("mode" or "draw"), a per-request budget (`max_tokens`,
  `max_llm_calls`, `timeout_s`), each at most the server's;
- response `swarm`: the run's metadata (`RunInfo`: run id, trace id, log Ẑ, ESS, each answer's
  posterior probability, ...); in a stream, chunks carry progress in `swarm` and content deltas
  only as the docs describe.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from agents.backends.base import ChatMessage


class RequestMessage(BaseModel):
    """A message of the conversation. `content` is a string or a list of text parts
    (`[{"type": "text", "text": ...}]`, joined into one string); only an assistant message (one
    that made tool calls) may have none."""

    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = Field(None, validate_default=True)
    name: str | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, content: Any, info: ValidationInfo) -> Any:
        """The content as one string (text parts joined); every problem names the part."""
        role = info.data.get("role")
        if content is None:
            if role not in (None, "assistant"):  # None: the role itself was invalid, reported already
                raise _invalid(f"a {role} message needs content (a string or a list of text parts)")
            return None
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise _invalid(f"content must be a string or a list of text parts, not {_json_type(content)}")
        return "".join(_part_text(i, part) for i, part in enumerate(content))

    def to_chat_message(self) -> ChatMessage:
        """The framework's `ChatMessage` ("developer" is a system message)."""
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=self.content or "", name=self.name, tool_call_id=self.tool_call_id)


def _part_text(index: int, part: Any) -> str:
    """The text of content part `index`; anything but a text part is an error naming it."""
    form = 'text parts ({"type": "text", "text": "..."}) are supported'
    if not isinstance(part, dict):
        raise _invalid(f"part {index} is {_json_type(part)}, not an object; only {form}")
    if part.get("type") != "text":
        raise _invalid(f"part {index} has type {part.get('type')!r}; only {form}")
    if not isinstance(part.get("text"), str):
        raise _invalid(f"part {index} has no string 'text'; {form}")
    return part["text"]


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is exactly `message` (no "Value error, " before it)."""
    return PydanticCustomError("invalid_content", message)


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


class SwarmOptions(BaseModel):
    """The request's `swarm` object."""

    model_config = ConfigDict(extra="forbid", strict=True)

    arguments: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the served program (`messages`/`prompt` come from the messages)."""
    answer: Literal["mode", "draw"] | None = None
    """"mode": the answers of largest posterior probability; "draw": answers drawn from the
    posterior (without replacement when n > 1). Default: the server's."""
    max_tokens: int | None = Field(None, gt=0)
    """Tokens the whole run may spend (every call of every particle), at most the server's limit."""
    max_llm_calls: int | None = Field(None, gt=0)
    timeout_s: float | None = Field(None, gt=0)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """A chat completion request. Other OpenAI fields are accepted and listed back in
    `swarm.ignored_fields`; those whose silent omission would change the answer's meaning
    (`UNSUPPORTED`) are rejected. Types are strict, as OpenAI's are: `"stream": "yes"` or
    `"n": "2"` is a 400, not coerced (a JSON integer is still a number)."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    messages: list[RequestMessage] = Field(min_length=1)
    n: int = Field(1, ge=1, le=64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    swarm: SwarmOptions = Field(default_factory=SwarmOptions)

    @field_validator("n", "stream", "swarm", mode="before")
    @classmethod
    def _null_is_the_default(cls, value: Any, info: ValidationInfo) -> Any:
        """OpenAI's API takes null for `n` and `stream` as their defaults (1, false); so does `swarm`."""
        return cls.model_fields[info.field_name].get_default(call_default_factory=True) if value is None else value


SAMPLING_FIELDS = {"temperature": ("temperature",), "top_p": ("top_p",),
                   "max_tokens": ("max_completion_tokens", "max_tokens")}
"""Standard fields passed to the program as the keyword argument they map to when it takes it
(`max_completion_tokens`, OpenAI's newer name, before `max_tokens`); otherwise ignored and listed."""

UNSUPPORTED = {"tools": (None, []), "functions": (None, []), "tool_choice": (None, "none", "auto"),
               "logprobs": (None, False), "top_logprobs": (None, 0), "response_format": (None, {"type": "text"}),
               "modalities": (None, ["text"]), "audio": (None,), "prediction": (None,)}
"""Fields rejected unless they hold one of these (harmless) values."""


# -- responses -------------------------------------------------------------------------------------
class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str = "stop"
    logprobs: None = None


class Usage(BaseModel):
    """Every token the run spent: all LLM calls of all particles (dead ones too, prompts re-sent at
    every step included). completion_tokens: what the calls generated; prompt_tokens: the rest."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class RunInfo(BaseModel):
    """The response's `swarm` object: what the run was and how much to trust its answer."""

    run_id: str
    trace_id: str
    """The OpenTelemetry trace of this request (32 hex digits): request span → run span → steps."""
    policy: str
    num_particles: int
    log_evidence: float | None
    """log Ẑ, the estimate of log Z = log Σ π(τ)Φ(τ) (None when not finite)."""
    ess: float
    min_ess: float
    steps: int
    llm_calls: int
    answer: Literal["mode", "draw"]
    probabilities: list[float]
    """The posterior probability of each choice's answer (by choice index)."""
    distinct_answers: int
    """How many distinct answers the posterior puts mass on (n > this returns fewer choices)."""
    stopped_by: str | None = None
    wall_time_s: float
    ignored_fields: list[str] = Field(default_factory=list)


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    swarm: RunInfo


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    swarm: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "plp-swarm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- errors ------------------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""

    error: ErrorBody


def finite(x: float | None) -> float | None:
    """JSON has no infinities: a non-finite float becomes None."""
    return x if x is not None and math.isfinite(x) else None
