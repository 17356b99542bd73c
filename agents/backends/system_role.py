"""System messages for chat templates that have no system role.

Some chat templates (Gemma's, "mistral-instruct", "vicuna", ...) drop a system message silently or
raise on it (Jinja `raise_exception`). Where a template does, each system message is folded into
the conversation instead: its content heads the next user message. Used wherever a chat is
rendered on the client: `LlamaCpp` (llama-cpp-python's formatters) and `OpenAICompatible`'s
client-side rendering (`http_continuation.render_chat`).
"""

from __future__ import annotations

from typing import Any, Callable

_PROBE = "\x1fplp-swarm system probe\x1f"


def keeps_system(render: Callable[[list[dict[str, Any]]], str]) -> bool:
    """Whether `render` (messages → prompt text) shows a system message's content; False when it
    drops it or raises on the role."""
    try:
        rendered = render([{"role": "system", "content": _PROBE}, {"role": "user", "content": "x"}])
    except Exception:  # noqa: BLE001 - a template that refuses the role (Jinja raise_exception)
        return False
    return _PROBE in rendered


def fold_system_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` without system messages: each one's content heads the next user message (a blank
    line between), or becomes a user message of its own where another role comes next, or at the end."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []
    for m in messages:
        if m["role"] == "system":
            pending.append(m["content"])
            continue
        if m["role"] == "user" and pending:
            m = {**m, "content": "\n\n".join([*pending, m["content"]])}
        elif pending:
            out.append({"role": "user", "content": "\n\n".join(pending)})
        pending = []
        out.append(m)
    if pending:
        out.append({"role": "user", "content": "\n\n".join(pending)})
    return out
