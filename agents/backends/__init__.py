"""LLM backends behind one protocol (`Backend.complete`). Heavy ones are imported lazily."""

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

__all__ = [
    "Backend", "BackendError", "ChatMessage", "Completion", "GenerationRequest",
    "GenerationSettings", "ToolCall", "Usage", "LlamaCpp", "OpenAICompatible", "Scripted",
]


def __getattr__(name: str):
    if name == "LlamaCpp":
        from agents.backends.llama_cpp import LlamaCpp
        return LlamaCpp
    if name == "OpenAICompatible":
        from agents.backends.openai_compat import OpenAICompatible
        return OpenAICompatible
    if name == "Scripted":
        from agents.backends.scripted import Scripted
        return Scripted
    raise AttributeError(name)
