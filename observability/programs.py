"""What every `swarm` command that runs a program shares (`swarm run`, `swarm serve`, `swarm mcp`):
finding the program in FILE.py[:function], parsing K=V arguments, and building the policy from the
command line, the module's POLICY and DEFAULTS."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from swarm.agents_package import require_own_agents
from swarm.errors import SwarmError

POLICIES = {"smc": "SMC", "importance": "Importance", "enumerate": "Enumerate", "forward": "Forward",
            "rejection": "Rejection", "vectorized-smc": "VectorizedSMC"}
BUILTIN_DEFAULTS = {"policy": "smc", "particles": 100, "seed": None, "runtime": "local"}
POPULATION_FIELDS = ("num_particles", "width")
"""The fields `--particles` sets, looked up by name on the policy's class (the first it has): every
policy's population size is `num_particles` (Beam's is its `width`)."""


class CLIError(SwarmError):
    """A command-line problem the user can fix (a missing file, program or argument)."""

    exit_status = 1


class UsageError(CLIError):
    """A command line that is malformed (as argparse's own errors): `swarm` exits with status 2."""

    exit_status = 2


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
    module_name = _module_name(path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"{file}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.resolve().parent))
    _execute(spec.loader, module, path, file)
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


def _module_name(path: Path) -> str:
    """The name the program's module is registered under: the file's stem, unless that names
    another module (json.py, logging.py, policies.py: registering it would replace the real one
    for everything imported after it), then "swarm_program_<stem>"."""
    if not path.stem.isidentifier():
        return "swarm_program"
    stem = path.stem
    loaded = sys.modules.get(stem)
    if loaded is not None:
        taken = Path(getattr(loaded, "__file__", None) or "").resolve() != path.resolve()
    else:
        try:
            spec = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            spec = None
        taken = spec is not None and (spec.origin is None or Path(spec.origin).resolve() != path.resolve())
    return f"swarm_program_{stem}" if taken else stem


def _execute(loader: Any, module: ModuleType, path: Path, file: str) -> None:
    """Run the program file's top level. What it raises (a syntax error, a failed import, any
    exception, a `sys.exit`) becomes a one-line `CLIError` naming the file and the line; the
    original exception stays its `__cause__`, for `swarm --debug`."""
    try:
        loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module.__name__, None)
        elsewhere = bool(exc.filename) and Path(exc.filename).resolve() != path.resolve()
        where = exc.filename if elsewhere else file
        raise CLIError(f"{where}{f', line {exc.lineno}' if exc.lineno else ''}: {type(exc).__name__}: {exc.msg}"
                       + (f" (imported by {file})" if elsewhere else "")) from exc
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module.__name__, None)
        what = (f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit)
                else f"raised {type(exc).__name__}: {one_line(str(exc))}")
        line = _line_of(exc, path)
        raise CLIError(f"{file}{f', line {line}' if line else ''}: importing it {what}") from exc


def _line_of(exc: BaseException, path: Path) -> int | None:
    """The last line of the program file in the exception's traceback (None if it is not there)."""
    import traceback

    target = path.resolve()
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
             if frame.filename and Path(frame.filename).resolve() == target]
    return lines[-1] if lines else None


def one_line(text: str, width: int = 300) -> str:
    """The first line of a message, clipped to `width` characters (a message on stderr is one line)."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    more = "…" if len(first) > width or len(text.strip().splitlines()) > 1 else ""
    return first[:width] + more


def ship_by_value(module: ModuleType) -> None:
    """Let Ray workers run a program file they cannot import: its module, and every module it
    imported from beside it (e.g. examples/arithmetic_work.py), are pickled by value."""
    from ray import cloudpickle

    directory = Path(module.__file__ or ".").resolve().parent
    cloudpickle.register_pickle_by_value(module)
    for other in list(sys.modules.values()):
        file = getattr(other, "__file__", None)
        if other is not module and file and Path(file).resolve().parent == directory:
            cloudpickle.register_pickle_by_value(other)


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
            raise UsageError(f"--arg {item!r}: expected NAME=VALUE (NAME a Python identifier)")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def _validation_message(exc: ValueError) -> str:
    """What a pydantic ValidationError (or another ValueError) says, in one line."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        return str(errors()[0].get("msg", exc))
    return one_line(str(exc))


DEFAULT_KEYS = ("policy", "particles", "seed", "runtime", "args")


def module_defaults(module: ModuleType) -> dict[str, Any]:
    """The module's DEFAULTS, checked: a dict with only the keys `DEFAULT_KEYS` (a misspelt key was
    silently ignored), its "args" a dict of keyword arguments."""
    defaults = getattr(module, "DEFAULTS", None)
    if defaults is None:
        return {}
    where = f"{getattr(module, '__file__', None) or module.__name__}: DEFAULTS"
    if not isinstance(defaults, dict):
        raise CLIError(f"{where} must be a dict with keys among {', '.join(DEFAULT_KEYS)}, "
                       f"got {type(defaults).__name__}")
    unknown = sorted(str(k) for k in defaults if k not in DEFAULT_KEYS)
    if unknown:
        raise CLIError(f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; "
                       f"the keys are {', '.join(DEFAULT_KEYS)}")
    args = defaults.get("args")
    if args is not None and not (isinstance(args, dict) and all(isinstance(k, str) for k in args)):
        raise CLIError(f"{where}['args'] must be a dict of keyword arguments (name: value), got {type(args).__name__}")
    return dict(defaults)


def make_policy(args: argparse.Namespace, module: ModuleType, listeners: list[Any]) -> Any:
    """The policy: --policy, else the module's POLICY, else DEFAULTS["policy"], else SMC; then
    --particles/--seed/--runtime (or DEFAULTS) applied, and the CLI's listeners attached."""
    import policies
    from policies.base import Policy

    defaults = {**BUILTIN_DEFAULTS, **module_defaults(module)}
    base = getattr(module, "POLICY", None)
    if base is not None and not isinstance(base, Policy):
        raise CLIError(f"{module.__file__}: POLICY must be a policies.Policy instance, got {type(base).__name__}")
    given = {k: getattr(args, k) for k in ("particles", "seed", "runtime")}
    if args.policy is None and base is not None:
        policy = base.model_copy()
        updates = {k: v for k, v in given.items() if v is not None}
    else:
        name = (args.policy or defaults["policy"]).lower()
        if name not in POLICIES:
            raise CLIError(f"DEFAULTS['policy'] = {name!r} is not one of {', '.join(POLICIES)}")
        policy = getattr(policies, POLICIES[name])()
        updates = {k: (v if v is not None else defaults.get(k)) for k, v in given.items()}
    for key, value in updates.items():
        if value is None:
            continue
        field = key
        if key == "particles":
            field = next((f for f in POPULATION_FIELDS if f in type(policy).model_fields), None)
            if field is None and args.particles is not None:
                raise CLIError(f"--particles {value}: {type(policy).__name__} has no population size to set "
                               f"(none of the fields {', '.join(POPULATION_FIELDS)}); drop --particles")
            if field is None:
                continue
        try:
            setattr(policy, field, value)
        except ValueError as exc:  # pydantic's ValidationError: one line, naming the option and the field
            source = f"--{key} {value}" if given[key] is not None else f"DEFAULTS[{key!r}] = {value!r}"
            raise CLIError(f"{source}: invalid {type(policy).__name__}.{field}: {_validation_message(exc)}") from None
    policy.listeners = [*policy.listeners, *listeners]
    return policy
