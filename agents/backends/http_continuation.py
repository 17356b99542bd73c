"""Continuing a partial assistant reply over a chat endpoint, or refusing to: never a silent restart.

Chunked generation in chat mode sends the conversation plus the reply so far (`assistant_prefix`)
and must get the *continuation* of that reply. vLLM does this when asked (`continue_final_message:
true, add_generation_prompt: false`); llama.cpp's servers ignore the two fields, close the partial
reply as a finished turn and start a new one ("The sea is a place ofThe sea is a place of…").

`OpenAICompatible(continuation=...)`:
- "auto" (default): on first use, probe the server (below); if it continues, send chats as they
  are; if not, render the chat on the client with `chat_template` and send it to /completions; with
  no template, raise `ContinuationUnsupported`;
- "server": trust the server (no probe); "client": always render on the client; "refuse": raise.

The probe (two requests of one token each, once per backend; its answer is kept in
`server_continues` and travels with the backend to Ray actors): the same conversation ending in an
assistant message "OK", (A) with the continuation fields, (B) without. A server that continues
renders (A) as an open assistant turn and (B) as a closed turn plus a new assistant header, so (A)
has fewer prompt tokens than (B) (`usage.prompt_tokens`). A server that ignores the fields renders
both alike: equal counts, or no counts at all, mean it does not continue.

Client-side rendering uses the model's Jinja chat template the way Hugging Face's
`apply_chat_template` and llama.cpp do (a sandboxed Jinja environment, trim_blocks and
lstrip_blocks, `add_generation_prompt=True`), then appends the reply so far; `bos_token` renders
as "" because the server adds BOS itself when it tokenizes a /completions prompt. The server then
sees the same text as its own chat rendering would give, continued. `chat_template_from_gguf(path)`
reads the template of a GGUF file (the one the server serves).
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from agents.backends.base import BackendError, GenerationRequest
from agents.backends.system_role import fold_system_messages, keeps_system
from swarm.errors import SwarmError

if TYPE_CHECKING:
    from agents.backends.openai_compat import OpenAICompatible

_PROBE_CHAT = [{"role": "user", "content": "Say OK."}, {"role": "assistant", "content": "OK"}]


class ContinuationUnsupported(SwarmError, ValueError):
    """The chat endpoint does not continue a partial assistant reply and the backend has no chat
    template to render the chat itself: a configuration error, not a failed call."""


async def route(backend: "OpenAICompatible", request: GenerationRequest) -> tuple[GenerationRequest, bool]:
    """(request to send, whether to send it raw to /completions) for a chat request that continues
    `request.assistant_prefix`."""
    mode = backend.continuation
    if mode == "server":
        return request, False
    if mode == "auto":
        if backend.server_continues is None:
            async with backend.probe_lock():
                if backend.server_continues is None:
                    backend.server_continues = await probe(backend)
        if backend.server_continues:
            return request, False
    if mode == "refuse" or backend.chat_template is None:
        raise ContinuationUnsupported(
            f"{backend.identity()}: the server does not continue a partial assistant reply "
            f"(continue_final_message is ignored: it would restart the reply), and continuation={mode!r} "
            "has no chat template to render the chat on the client. Pass chat_template= (e.g. "
            "chat_template_from_gguf(path) for a llama.cpp server), or use mode='completions' with a raw prompt.")
    if request.tools:
        raise ContinuationUnsupported(f"{backend.identity()}: continuing a reply with tools needs a server that "
                                      "honours continue_final_message (client-side rendering drops tool schemas)")
    messages = request.messages if request.messages is not None else None
    dicts = ([m.model_dump(exclude_none=True) for m in messages] if messages is not None
             else [{"role": "user", "content": request.prompt}])
    rendered = render_chat(backend.chat_template, dicts)
    return request.replaced(messages=None, prompt=rendered), True


async def probe(backend: "OpenAICompatible") -> bool:
    """Whether the server continues a final assistant message (see the module docstring)."""
    common = {**backend.extra_body, "model": backend.model, "messages": _PROBE_CHAT, "max_tokens": 1,
              "temperature": 0.0}
    try:
        cont = await backend.post_json("chat", {**common, "continue_final_message": True,
                                                "add_generation_prompt": False})
    except BackendError as exc:
        if exc.status_code in (400, 422):  # the server rejects the fields: it does not continue
            return False
        raise
    closed = await backend.post_json("chat", common)
    a = (cont.get("usage") or {}).get("prompt_tokens")
    b = (closed.get("usage") or {}).get("prompt_tokens")
    return isinstance(a, int) and isinstance(b, int) and a < b


def render_chat(template: str, messages: list[dict[str, Any]]) -> str:
    """`messages` rendered by a Jinja chat template, ready for the assistant's reply. A template
    without a system role (it drops a system message, or raises on it) gets each system message
    folded into the next user message (`system_role.fold_system_messages`), as `LlamaCpp` does."""
    if any(m["role"] == "system" for m in messages) and not _keeps_system(template):
        messages = fold_system_messages(messages)
    return _render(template, messages)


def _render(template: str, messages: list[dict[str, Any]]) -> str:
    return _compiled(template).render(messages=messages, add_generation_prompt=True, bos_token="", eos_token="")


@functools.lru_cache(maxsize=8)
def _keeps_system(template: str) -> bool:
    return keeps_system(lambda messages: _render(template, messages))


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    return env.from_string(template)


def chat_template_from_gguf(path: str) -> str:
    """The chat template stored in a GGUF file (`tokenizer.chat_template`), read without loading
    the weights."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        template = llm.metadata.get("tokenizer.chat_template")
    finally:
        llm.close()
    if not template:
        raise ValueError(f"{path}: the GGUF file has no tokenizer.chat_template")
    return template
