"""Agents and what they talk to: agent definitions, LLM backends, tools, structured output, hosting.

    from agents import Agent, RayHosting, tool, OpenAICompatible, LlamaCpp

The built-in backends (`LlamaCpp`, `OpenAICompatible`, `Scripted`) are imported on first use, through
the one registry in `agents.backends`.
"""

from agents.agent import Agent
from agents.backends import BUILT_IN, Backend, BackendError, ChatMessage, Completion, GenerationRequest
from agents.backends import GenerationSettings, built_in_backend, default_backend
from agents.cache import ResponseCache
from agents.generation import Generation, GenerationError, InvalidGenerationRequest
from agents.ray_hosting import RayHosting
from agents.tools import Tool, tool

__all__ = ["Agent", "Backend", "BackendError", "ChatMessage", "Completion", "GenerationRequest",
           "GenerationSettings", "Generation", "GenerationError", "InvalidGenerationRequest", "ResponseCache", "Tool", "tool",
           "default_backend", "RayHosting", *BUILT_IN, "mcp_tools"]


PLP_SWARM_AGENTS = True
"""Marks this package as plp-swarm's `agents` (`swarm.agents_package.require_own_agents` reads it)."""


def __getattr__(name: str):
    if name == "mcp_tools":  # imported on first use: the MCP SDK is a large import
        from agents.mcp import mcp_tools

        return mcp_tools
    return built_in_backend(name, __name__)
