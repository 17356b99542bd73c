"""Choosing where particle segments run: `make_runtime("local" | "ray" | Runtime | {"kind": ...})`.

The runtimes themselves: `swarm.local_runtime.LocalRuntime` (one process) and
`swarm.ray_runtime.RayRuntime` (a pool of Ray actors), both implementing `swarm.runtime_api.Runtime`.
"""

from __future__ import annotations

from typing import Any

from swarm.local_runtime import LocalRuntime
from swarm.runtime_api import Runtime

__all__ = ["LocalRuntime", "Runtime", "make_runtime"]


def make_runtime(spec: Any) -> Runtime:
    """"local", "ray", a Runtime instance, or a dict {"kind": "ray", ...options}."""
    if isinstance(spec, Runtime):
        return spec
    options: dict[str, Any] = {}
    if isinstance(spec, dict):
        options = dict(spec)
        spec = options.pop("kind", "local")
    if spec == "local":
        return LocalRuntime(**options)
    if spec == "ray":
        from swarm.ray_runtime import RayRuntime

        return RayRuntime(**options)
    raise ValueError(f"unknown runtime {spec!r}; expected 'local', 'ray' or a swarm Runtime")
