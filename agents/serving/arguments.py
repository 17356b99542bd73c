"""How a request becomes the served program's arguments.

A served program takes the conversation as `messages` (a list of `agents.ChatMessage`) or, for a
single-turn program, as `prompt` (the last user message's text), plus any other keyword arguments:

    async def program(messages, letter="e", max_words=12): ...

Its other arguments come from, in increasing priority: the program's defaults, the module's
`DEFAULTS["args"]` and `swarm serve --arg K=V`, the standard sampling fields of the request
(`temperature`, `top_p`, `max_tokens`) when the program has a parameter of that name, and the
request's `swarm.arguments`. An argument the program does not take, or a required one that is
missing, is a 400 naming it; so is a request argument that does not fit the parameter's type
annotation (checked, and converted, by pydantic: `max_words: int` takes 3, not "many").
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable

from pydantic import TypeAdapter, ValidationError

from agents.serving.errors import bad_request
from agents.serving.protocol import SAMPLING_FIELDS, UNSUPPORTED, ChatCompletionRequest
from swarm.errors import SwarmError

CONVERSATION = ("messages", "prompt")


class ProgramSignatureError(SwarmError, TypeError):
    """The program cannot be served (it takes neither `messages` nor `prompt`, or a default is unknown)."""


class ProgramArguments:
    """The served program's parameters, checked once at start-up; `bind` builds each request's."""

    def __init__(self, program: Callable[..., Any], defaults: dict[str, Any] | None = None) -> None:
        params = inspect.signature(program).parameters
        name = getattr(program, "__qualname__", repr(program))
        self.conversation = next((p for p in CONVERSATION if p in params), None)
        if self.conversation is None:
            raise ProgramSignatureError(f"{name} cannot be served: it needs a parameter named 'messages' (the "
                                        "conversation, a list of agents.ChatMessage) or 'prompt' (the last user message)")
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        self.names = [p for p, spec in params.items() if spec.kind in kinds and p != self.conversation]
        self.any_keyword = any(spec.kind == inspect.Parameter.VAR_KEYWORD for spec in params.values())
        self.defaults = dict(defaults or {})
        unknown = [k for k in self.defaults if not self.accepts(k)]
        if unknown:
            raise ProgramSignatureError(f"{name} has no parameter {unknown[0]!r} (given as a default argument); "
                                        f"it takes: {', '.join(self.names) or 'no other arguments'}")
        self.required = [p for p in self.names if params[p].default is inspect.Parameter.empty
                         and p not in self.defaults]
        self.types = _annotated_types(program, self.names)

    def accepts(self, name: str) -> bool:
        return name in self.names or (self.any_keyword and name not in CONVERSATION)

    def bind(self, request: ChatCompletionRequest) -> tuple[dict[str, Any], list[str]]:
        """(keyword arguments for the program, the request fields that were ignored)."""
        kwargs = dict(self.defaults)
        ignored = sorted(k for k in (request.model_extra or {}) if k not in UNSUPPORTED)
        for key, sent in SAMPLING_FIELDS.items():
            given = [field for field in sent if getattr(request, field) is not None]
            if not given:
                continue
            if self.accepts(key):
                kwargs[key] = getattr(request, given[0])  # max_completion_tokens before max_tokens
            else:
                ignored.extend(given)
        for key, value in request.swarm.arguments.items():
            if key in CONVERSATION:
                raise bad_request(f"swarm.arguments.{key}: the conversation comes from 'messages', not from arguments",
                                  param=f"swarm.arguments.{key}", code="unknown_argument")
            if not self.accepts(key):
                raise bad_request(f"unknown program argument {key!r}; the program takes: "
                                  f"{', '.join(self.names) or 'no arguments besides the conversation'}",
                                  param=f"swarm.arguments.{key}", code="unknown_argument")
            kwargs[key] = self._checked(key, value)
        missing = [p for p in self.required if p not in kwargs]
        if missing:
            raise bad_request(f"missing program argument {missing[0]!r} (pass it in swarm.arguments)",
                              param=f"swarm.arguments.{missing[0]}", code="missing_argument")
        kwargs[self.conversation] = self._conversation(request)
        return kwargs, sorted(ignored)

    def _checked(self, key: str, value: Any) -> Any:
        """`value` validated against the parameter's annotation (as pydantic converts it), or a 400."""
        if key not in self.types:
            return value
        hint, adapter = self.types[key]
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise bad_request(f"swarm.arguments.{key}: {problem} (the program takes {key}: {_type_name(hint)})",
                              param=f"swarm.arguments.{key}", code="invalid_argument") from None

    def _conversation(self, request: ChatCompletionRequest) -> Any:
        messages = [m.to_chat_message() for m in request.messages]
        if self.conversation == "messages":
            return messages
        users = [m for m in messages if m.role == "user"]
        if not users:
            raise bad_request("messages: this program answers a user message, and there is none",
                              param="messages", code="invalid_messages")
        return users[-1].content


def _annotated_types(program: Callable[..., Any], names: list[str]) -> dict[str, tuple[Any, TypeAdapter]]:
    """A validator for each parameter in `names` with a type annotation pydantic can check (string
    annotations resolved); a parameter without one, or with one that cannot be resolved or
    checked, takes any value."""
    try:
        hints = typing.get_type_hints(program)
    except Exception:  # an annotation naming what the module cannot resolve: check none
        return {}
    adapters = {}
    for name in names:
        hint = hints.get(name, Any)
        if hint is Any:
            continue
        try:
            adapters[name] = (hint, TypeAdapter(hint))
        except Exception:  # not a type pydantic knows (an arbitrary class): unchecked
            continue
    return adapters


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def check_supported(request: ChatCompletionRequest) -> None:
    """Reject fields whose silent omission would change what the answer means (tools, logprobs...)."""
    for field, harmless in UNSUPPORTED.items():
        value = (request.model_extra or {}).get(field)
        if value not in harmless:
            raise bad_request(f"{field} is not supported by swarm serve (the answer is the program's, "
                              f"chosen from its posterior)", param=field, code="unsupported_parameter")
