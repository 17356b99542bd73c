"""How to reach an MCP server: a command to start over stdio, or a streamable-HTTP URL."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class MCPServerParams(BaseModel):
    """One MCP server. Exactly one of `command` (started as a child process, spoken to over its
    stdin/stdout) and `url` (streamable HTTP, e.g. "http://127.0.0.1:8000/mcp").

    `env` is added to the child's environment, which is otherwise the SDK's minimal default (PATH,
    HOME, ...: no inherited API keys). `headers` go with every HTTP request; their values are
    registered as secrets (masked in traces, spans and logs) and never shown in `repr`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: tuple[str, ...] | None = None
    url: str | None = None
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    cwd: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    connect_timeout_s: float = Field(30.0, gt=0)
    """Seconds to start (or reach) the server and finish the MCP handshake."""

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = shlex.split(value)
        if value is not None and (not value or not all(isinstance(p, str) and p for p in value)):
            raise ValueError(f"command must be a non-empty list of non-empty strings, got {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"url must be an http:// or https:// URL with a host, got {value!r}")
        return value

    @field_validator("cwd", mode="before")
    @classmethod
    def _cwd_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, Path) else value

    @model_validator(mode="after")
    def _one_transport(self) -> "MCPServerParams":
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command=[...] (a stdio server) and url=... (streamable HTTP)")
        if self.headers and self.url is None:
            raise ValueError("headers are for url=... servers; a stdio server takes env={...}")
        return self

    @property
    def transport(self) -> Literal["stdio", "streamable-http"]:
        return "stdio" if self.command is not None else "streamable-http"

    def key(self) -> str:
        """What identifies the server (and so its session in a process): the transport settings."""
        return json.dumps([self.command, self.url, sorted(self.env.items()), self.cwd, sorted(self.headers.items())])

    def describe(self) -> str:
        """A short human-readable name of the server (no secrets)."""
        if self.url is not None:
            return self.url
        assert self.command is not None
        return " ".join(Path(self.command[0]).name if i == 0 else p for i, p in enumerate(self.command[:3]))
