"""LLM backends behind one protocol (`Backend.complete`), and the registry of the built-in ones.

The built-in backends are imported on first use (`agents.backends.LlamaCpp` loads the llama.cpp
binding only when asked for), through one table, `BUILT_IN`, which `agents` shares.
"""

from __future__ import annotations

import importlib

from agents.backends.base import (
    Backend,
    BackendError,
    ChatMessage,
    Completion,
    GenerationRequest,
    GenerationSettings,
    ToolCall,
    Usage,
)

BUILT_IN: dict[str, str] = {
    "LlamaCpp": "agents.backends.llama_cpp",
    "OpenAICompatible": "agents.backends.openai_compat",
    "Scripted": "agents.backends.scripted",
}
"""Built-in backend class name → the module that defines it (imported lazily)."""

__all__ = [
    "Backend", "BackendError", "ChatMessage", "Completion", "GenerationRequest",
    "GenerationSettings", "ToolCall", "Usage", "default_backend", *BUILT_IN,
]


def built_in_backend(name: str, owner: str = __name__) -> type[Backend]:
    """The built-in backend class called `name`, imported on first use; AttributeError (as for a
    missing module attribute of `owner`) for any other name."""
    module = BUILT_IN.get(name)
    if module is None:
        raise AttributeError(f"module {owner!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __getattr__(name: str):
    return built_in_backend(name)


_default_backend: Backend | None = None


def default_backend() -> Backend:
    """The embedded default: SmolLM2-135M-Instruct through in-process llama.cpp (one per process)."""
    global _default_backend
    if _default_backend is None:
        _default_backend = built_in_backend("LlamaCpp")()
    return _default_backend
