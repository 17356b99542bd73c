"""Is the top-level `agents` package Python would import the one that ships with plp-swarm?

`agents` is a popular name: openai-agents installs a top-level `agents` too. With both installed,
`from agents import Agent` may silently import the other one (and then fail far from the cause, or
build the wrong kind of agent). Code that is about to import plp-swarm's agents calls
`require_own_agents()` first: the CLI before it loads a program, the examples at the top.

This module imports nothing of `agents` (it must work precisely when that package is the wrong one).
"""

from __future__ import annotations

import importlib.util
import pathlib

from swarm.errors import SwarmError

MARKER = "PLP_SWARM_AGENTS = True"
"""A line of plp-swarm's agents/__init__.py: how a package of the same name, installed over ours into
the same directory, is told apart."""


class AgentsShadowedError(SwarmError, ImportError):
    """Another package named `agents` is the one Python imports, not plp-swarm's."""


def own_agents_dir() -> pathlib.Path:
    """Where plp-swarm's agents package lives: beside `swarm` (they ship in one distribution)."""
    return pathlib.Path(__file__).resolve().parent.parent / "agents"


def require_own_agents() -> pathlib.Path:
    """Return the directory of the `agents` package Python imports, or raise `AgentsShadowedError`
    naming both packages and what to do, when it is not plp-swarm's."""
    ours = own_agents_dir()
    try:
        spec = importlib.util.find_spec("agents")
    except (ImportError, ValueError) as exc:  # a broken or half-imported `agents`
        raise AgentsShadowedError(f"the package 'agents' cannot be found cleanly ({exc}); plp-swarm's is at {ours}") \
            from exc
    origin = pathlib.Path(spec.origin).resolve() if spec is not None and spec.origin else None
    if origin is not None and origin.parent == ours and _has_marker(origin):
        return ours
    found = "no package named 'agents'" if spec is None else f"another package named 'agents' at {origin or spec}"
    raise AgentsShadowedError(
        f"plp-swarm needs its own 'agents' package ({ours}), but Python imports {found}. The openai-agents "
        "distribution installs a top-level 'agents' too; uninstall it (pip uninstall openai-agents) or use a "
        f"virtualenv without it, or put {ours.parent} first on sys.path (PYTHONPATH)")


def _has_marker(init: pathlib.Path) -> bool:
    try:
        return MARKER in init.read_text(encoding="utf-8")
    except OSError:
        return False
