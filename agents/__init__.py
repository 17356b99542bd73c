"""Agents and what they talk to: agent definitions, LLM backends, tools, structured output, hosting.

    from agents import Agent, RayHosting, tool, OpenAICompatible, LlamaCpp
"""

from agents.agent import Agent
from agents.backends import (
    Backend,
    BackendError,
    ChatMessage,
    Completion,
    GenerationRequest,
    GenerationSettings,
)
from agents.cache import ResponseCache
from agents.generation import Generation, GenerationError
from agents.hosting import default_backend
from agents.ray_hosting import RayHosting
from agents.tools import Tool, tool

__all__ = ["Agent", "Backend", "BackendError", "ChatMessage", "Completion", "GenerationRequest",
           "GenerationSettings", "Generation", "GenerationError", "ResponseCache", "Tool", "tool",
           "default_backend", "RayHosting", "LlamaCpp", "OpenAICompatible", "Scripted", "mcp_tools"]


def __getattr__(name: str):
    if name in ("LlamaCpp", "OpenAICompatible", "Scripted"):
        import agents.backends as backends

        return getattr(backends, name)
    if name == "mcp_tools":  # imported on first use: the MCP SDK is a large import
        from agents.mcp import mcp_tools

        return mcp_tools
    raise AttributeError(name)
