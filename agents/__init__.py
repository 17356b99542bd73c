"""Agents and what they talk to: agent definitions, LLM backends, tools, the Ray actor host."""
