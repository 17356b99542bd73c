"""Exceptions across process boundaries: package one where it was raised, rebuild it where it is
awaited, as its own type with its own message and the remote traceback as a note.

Used by the Ray segment workers (`swarm.ray_runtime`) and by the agents' Ray actors
(`agents.agent_actor`, `agents.ray_hosting`). Ray-free: nothing here imports Ray, so a module that
only needs to carry errors does not pull in the runtime. The exception itself travels pickled when it
survives a round trip unchanged, with Ray's cloudpickle when it is importable (it pickles classes
defined in `__main__` or in a function by value), else the standard pickle; otherwise it is rebuilt
from its module and class name, and failing that becomes a `RemoteFailure`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import pickle
import traceback
from typing import Any

from swarm.errors import SwarmError


class RemoteFailure(SwarmError, RuntimeError):
    """An exception raised in another process whose type cannot be rebuilt here."""


@dataclasses.dataclass
class RemoteError:
    """An exception raised in a worker, in a form that always crosses the process boundary."""

    module: str
    qualname: str
    message: str
    traceback: str
    where: str
    pickled: bytes | None = None
    """The exception itself, when it survives a pickle round trip unchanged."""


def pickler() -> Any:
    """Ray's cloudpickle when Ray is installed, else the standard pickle (see the module docstring)."""
    try:
        import ray.cloudpickle as cloudpickle
    except ImportError:  # pragma: no cover - ray is a dependency
        return pickle
    return cloudpickle


def capture_error(exc: BaseException, where: str) -> RemoteError:
    """Package `exc` for the process that awaits the result."""
    cls = type(exc)
    text = "".join(traceback.format_exception(exc))
    err = RemoteError(cls.__module__, cls.__qualname__, str(exc), text, where)
    with contextlib.suppress(Exception):
        blob = pickler().dumps(exc)
        copy = pickler().loads(blob)
        if type(copy) is cls and str(copy) == str(exc):
            err.pickled = blob
    return err


def rebuild_error(err: RemoteError) -> BaseException:
    """The awaiting side's exception: the original type and message, plus a note with the remote
    traceback. A type that cannot be rebuilt becomes a `RemoteFailure`."""
    exc: BaseException | None = None
    if err.pickled is not None:
        with contextlib.suppress(Exception):
            exc = pickler().loads(err.pickled)
    if exc is None:
        exc = _instantiate(err)
    exc.add_note(f"raised in {err.where}; remote traceback:\n{err.traceback}")
    return exc


def _instantiate(err: RemoteError) -> BaseException:
    """Build an instance of the named exception class without calling its __init__."""
    try:
        cls: Any = importlib.import_module(err.module)
        for part in err.qualname.split("."):
            cls = getattr(cls, part)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            exc = cls.__new__(cls)
            exc.args = (err.message,)
            return exc
    except Exception:  # noqa: BLE001 - fall through to the generic error
        pass
    return RemoteFailure(f"{err.qualname}: {err.message}")
