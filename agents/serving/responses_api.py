"""OpenAI's Responses API (`POST /v1/responses`) over the same runs as chat completions.

A Responses request becomes the chat request it means, and runs exactly as one would
(`ChatService.prepare` / `complete` / `events`): `input` (a string, or a list of message items whose
content is a string or a list of `input_text`/`output_text` parts) is the conversation, and
`instructions` a system message before it; `temperature`, `top_p` and `max_output_tokens` are the
chat request's `temperature`, `top_p` and `max_completion_tokens`; `seed` and `swarm` are the same
extensions. The answer is one `message` output item with one `output_text` part; `usage` counts the
run's tokens (input / output / total) and `swarm` carries the run's metadata (`RunInfo`).

With `stream=true` the events are those of OpenAI's stream, in its order:

    response.created, response.in_progress          the response, status "in_progress", no output
    response.output_item.added, response.content_part.added      the message and its empty text part
    response.in_progress (one per step)            with "swarm": {"event": "step", ...} (as the chat
                                                    stream's step chunks), after the step's
    response.output_text.delta                      committed text (`--stream-text committed`)
    response.output_text.delta                      the rest of the answer, at the end
    response.output_text.done, response.content_part.done, response.output_item.done
    response.completed                              the whole response, with usage and "swarm"

A failure after the stream began is an `error` event, then `response.failed`. What cannot be
served is a 400 naming the field: a non-message input item (a function call's output, say), a
non-text part (an image), `tools`, `previous_response_id` and the other fields `UNSUPPORTED`
names; other fields are accepted and listed in `swarm.ignored_fields`.
"""

from __future__ import annotations

import json
import time
from typing import Any, AsyncIterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.serving.errors import ServeError, bad_request
from agents.serving.protocol import ChatCompletion, ChatCompletionRequest, SwarmOptions, finite
from agents.serving.service import ChatService, PreparedRun, stream_run
from policies.streaming import CommittedText, StepEnd

UNSUPPORTED = {"tools": (None, []), "tool_choice": (None, "none", "auto"), "previous_response_id": (None,),
               "conversation": (None,), "background": (None, False), "reasoning": (None,), "include": (None, []),
               "prompt": (None,), "text": (None, {"format": {"type": "text"}}), "max_tool_calls": (None,),
               "top_logprobs": (None, 0)}
"""Responses fields rejected unless they hold one of these (harmless) values: each would change what
the answer means (a tool loop, a stored conversation, a structured format)."""

CHAT_ONLY = {"messages": "'input' (and 'instructions')", "n": "one answer (send n requests)",
             "max_tokens": "'max_output_tokens'", "max_completion_tokens": "'max_output_tokens'"}
"""Chat-completions fields that mean something else, or nothing, in a Responses request."""

ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text", "text")


class ResponsesRequest(BaseModel):
    """A Responses request; `input` is checked item by item by `conversation`."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    input: str | list[Any]
    instructions: str | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_output_tokens: int | None = Field(None, gt=0)
    seed: int | None = None
    swarm: SwarmOptions = Field(default_factory=SwarmOptions)


def parse_responses_request(body: bytes) -> tuple[ResponsesRequest, ChatCompletionRequest]:
    """(the Responses request, the chat request it means); every problem is a 400 naming the field."""
    try:
        request = ResponsesRequest.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if not str(part).startswith(("str", "list[")))
        if first["type"] == "json_invalid":
            raise bad_request(f"the request body is not valid JSON: {first['msg']}", code="invalid_json") from None
        raise bad_request(f"{where or 'body'}: {first['msg']}", param=where or None, code="invalid_request") from None
    extra = request.model_extra or {}
    for field, harmless in UNSUPPORTED.items():
        if extra.get(field) not in harmless:
            raise bad_request(f"{field} is not supported by swarm serve (the answer is the program's, chosen from "
                              "its posterior)", param=field, code="unsupported_parameter")
    for field in extra:
        if field in CHAT_ONLY:
            raise bad_request(f"{field} is a chat-completions field; a Responses request gives {CHAT_ONLY[field]}",
                              param=field, code="invalid_request")
    messages = conversation(request)
    chat = {**{k: v for k, v in extra.items() if k not in UNSUPPORTED and k not in ChatCompletionRequest.model_fields},
            "model": request.model, "messages": messages, "stream": request.stream, "seed": request.seed,
            "temperature": request.temperature, "top_p": request.top_p,
            "max_completion_tokens": request.max_output_tokens, "swarm": request.swarm.model_dump()}
    return request, ChatCompletionRequest.model_validate(chat, strict=False)


def conversation(request: ResponsesRequest) -> list[dict[str, str]]:
    """`instructions` and `input` as chat messages ({"role", "content"})."""
    out = [{"role": "system", "content": request.instructions}] if request.instructions else []
    if isinstance(request.input, str):
        return [*out, {"role": "user", "content": request.input}]
    if not request.input:
        raise bad_request("input: give a string or at least one message item", param="input", code="invalid_input")
    for i, item in enumerate(request.input):
        out.append(_message(f"input.{i}", item))
    return out


def _message(where: str, item: Any) -> dict[str, str]:
    if not isinstance(item, dict):
        raise bad_request(f"{where}: an input item is an object, not {type(item).__name__}", param=where,
                          code="invalid_input")
    kind = item.get("type", "message")
    if kind != "message":
        raise bad_request(f"{where}: input items of type {kind!r} are not supported (message items are: "
                          '{"role": "user", "content": "..."})', param=f"{where}.type", code="invalid_input")
    role = item.get("role")
    if role not in ROLES:
        raise bad_request(f"{where}.role: {role!r} is not one of {', '.join(map(repr, ROLES))}",
                          param=f"{where}.role", code="invalid_input")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise bad_request(f"{where}.content: a string or a list of text parts", param=f"{where}.content",
                          code="invalid_input")
    texts = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise bad_request(f"{where}.content.{k}: only text parts ({{\"type\": \"input_text\", \"text\": \"...\"}}) "
                              f"are supported, got {kind or type(part).__name__!r}", param=f"{where}.content.{k}",
                              code="invalid_input")
        texts.append(part["text"])
    return {"role": role, "content": "".join(texts)}


# -- the response object -----------------------------------------------------------------------------
def response_id(run: PreparedRun) -> str:
    return "resp_" + run.id.rsplit("-", 1)[-1]


def message_id(run: PreparedRun) -> str:
    return "msg_" + run.id.rsplit("-", 1)[-1]


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(run: PreparedRun, text: str | None, status: str) -> dict[str, Any]:
    return {"type": "message", "id": message_id(run), "status": status, "role": "assistant",
            "content": [] if text is None else [text_part(text)]}


def response_object(run: PreparedRun, request: ResponsesRequest, status: str,
                    completion: ChatCompletion | None = None, error: ServeError | None = None) -> dict[str, Any]:
    """The Response: in progress (no output), completed (the answer, usage, `swarm`), or failed."""
    out: dict[str, Any] = {
        "id": response_id(run), "object": "response", "created_at": run.created, "status": status,
        "model": request.model, "output": [], "instructions": request.instructions,
        "temperature": request.temperature, "top_p": request.top_p, "max_output_tokens": request.max_output_tokens,
        "parallel_tool_calls": False, "tool_choice": "none", "tools": [], "text": {"format": {"type": "text"}},
        "error": None if error is None else {"code": error.code or "server_error", "message": error.message},
        "incomplete_details": None, "metadata": (request.model_extra or {}).get("metadata") or {}, "usage": None}
    if completion is not None:
        out["completed_at"] = int(time.time())
        out["output"] = [message_item(run, completion.choices[0].message.content, "completed")]
        usage = completion.usage
        out["usage"] = {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
                        "total_tokens": usage.total_tokens, "input_tokens_details": {"cached_tokens": 0},
                        "output_tokens_details": {"reasoning_tokens": 0}}
        out["swarm"] = completion.swarm.model_dump()
    return out


# -- the stream --------------------------------------------------------------------------------------
class ResponseEvents:
    """Builds the server-sent events of one streamed response (numbered in order)."""

    def __init__(self, run: PreparedRun, request: ResponsesRequest, committed: bool) -> None:
        self.run, self.request, self.committed = run, request, committed
        self.sequence = 0
        self.streamed = ""
        self._content = ""
        self._where = {"item_id": message_id(run), "output_index": 0, "content_index": 0}

    def event(self, kind: str, **fields: Any) -> dict[str, str]:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return {"event": kind, "data": json.dumps(data)}

    def opening(self) -> list[dict[str, str]]:
        started = response_object(self.run, self.request, "in_progress")
        return [self.event("response.created", response=started),
                self.event("response.in_progress", response=started),
                self.event("response.output_item.added", output_index=0,
                           item=message_item(self.run, None, "in_progress")),
                self.event("response.content_part.added", part=text_part(""), **self._where)]

    def on_event(self, event: Any) -> list[dict[str, str]]:
        """A step's events (its committed text, then its progress), at its StepEnd."""
        if isinstance(event, CommittedText) and self.committed:
            self._content += event.delta
            return []
        if not isinstance(event, StepEnd):
            return []
        out = [self.delta(self._content)] if self._content else []
        self.streamed, self._content = self.streamed + self._content, ""
        progress = {"event": "step", "step": event.step, "ess": event.ess, "log_evidence": finite(event.log_evidence),
                    "alive": event.alive, "num_particles": event.num_particles, "resampled": event.resampled,
                    "deaths": event.deaths, "tokens": event.tokens, "llm_calls": event.llm_calls}
        snapshot = {**response_object(self.run, self.request, "in_progress"), "swarm": progress}
        return [*out, self.event("response.in_progress", response=snapshot)]

    def delta(self, text: str) -> dict[str, str]:
        return self.event("response.output_text.delta", delta=text, logprobs=[], **self._where)

    def closing(self, completion: ChatCompletion) -> list[dict[str, str]]:
        text = completion.choices[0].message.content
        if not text.startswith(self.streamed):
            raise ServeError(500, "the program's answer does not start with the text its particles committed; "
                                  "serve it with --stream-text final", type="server_error", code="stream_mismatch")
        rest = text[len(self.streamed):]
        done = response_object(self.run, self.request, "completed", completion)
        return [*([self.delta(rest)] if rest else []),
                self.event("response.output_text.done", text=text, logprobs=[], **self._where),
                self.event("response.content_part.done", part=text_part(text), **self._where),
                self.event("response.output_item.done", output_index=0, item=done["output"][0]),
                self.event("response.completed", response=done)]

    def failure(self, error: ServeError) -> list[dict[str, str]]:
        return [self.event("error", code=error.code, message=error.message, param=error.param),
                self.event("response.failed", response=response_object(self.run, self.request, "failed", error=error))]


def stream_response_events(service: ChatService, run: PreparedRun,
                           request: ResponsesRequest) -> AsyncIterator[dict[str, str]]:
    """The server-sent events of a streamed response (see the module docstring)."""
    return stream_run(service, run, ResponseEvents(run, request, service.config.stream_text == "committed"))
