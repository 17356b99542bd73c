"""What the `swarm` commands share: finding the program in a file, reading `k=v` arguments, printing a
result, and the error a user can fix (`CLIError`)."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from observability.progress import fmt_float
from swarm.agents_package import require_own_agents
from swarm.errors import SwarmError

__all__ = ["CLIError", "load_program", "parse_kwargs", "print_result"]


class CLIError(SwarmError):
    """A command-line problem the user can fix (a missing file, program or argument)."""


def load_program(target: str) -> tuple[ModuleType, Callable[..., Any]]:
    """Import FILE.py and return (module, program): the function named after a colon, else the
    module's `program`, else its `main`."""
    file, name = target, None
    head, sep, tail = target.rpartition(":")
    if sep and tail.isidentifier() and head:
        file, name = head, tail
    path = Path(file)
    if not path.is_file():
        raise CLIError(f"{file}: no such file (expected FILE.py or FILE.py:function)")
    if _imports_agents(path):
        require_own_agents()  # a clear error when another `agents` package (openai-agents) shadows ours
    module_name = path.stem if path.stem.isidentifier() else "swarm_program"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"{file}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.resolve().parent))
    spec.loader.exec_module(module)
    candidates = [name] if name else ["program", "main"]
    for candidate in candidates:
        fn = getattr(module, candidate, None)
        if callable(fn):
            return module, fn
    found = sorted(k for k, v in vars(module).items()
                   if callable(v) and getattr(v, "__module__", None) == module_name and not k.startswith("_"))
    wanted = f"function named {name!r}" if name else "function named 'program' or 'main'"
    raise CLIError(f"{file} has no {wanted}; its functions: {', '.join(found) or 'none'} "
                   f"(pick one with {file}:NAME)")


def _imports_agents(path: Path) -> bool:
    """Whether the program file imports the `agents` package (or a module of it)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return False  # exec_module reports it
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level]
    return any(name == "agents" or name.startswith("agents.") for name in names)


def parse_kwargs(items: list[str]) -> dict[str, Any]:
    """`k=v` pairs → keyword arguments; a value is a Python literal when it parses as one."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise CLIError(f"--arg {item!r}: expected NAME=VALUE")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def print_result(result: Any, *, top: int = 10) -> None:
    marginal = list(result.marginal().items())
    print(f"\nanswer marginal (top {min(top, len(marginal))} of {len(marginal)} values):")
    width = max((len(repr(v)) for v, _ in marginal[:top]), default=0)
    for value, p in marginal[:top]:
        print(f"  {repr(value):<{min(width, 40)}}  {p:.4f}  {'█' * round(30 * p)}")
    print(f"log Z = {fmt_float(result.log_evidence)}   ESS = {fmt_float(result.ess, 1)} / {len(result.particles)}"
          f" (lowest at a step {fmt_float(result.min_ess, 1)})"
          f"   tokens = {result.diagnostics.tokens}   LLM calls = {result.diagnostics.llm_calls}")
