"""Running a policy's coroutines from synchronous code (`Policy.run`, iterating `policy.stream`).

Inside a plain (non-`async`) program's execution the thread's event loop is already running (it runs
the outer run), so a nested `policy.run(...)` there runs on a new loop in a worker thread while the
program waits (`run_in_own_thread`); the worker starts from the program's context without its
execution state (`swarm.effects.execution_context`), so the nested run starts clean.

What an `asyncio.run` or `asyncio.Runner.run` call returns is boxed, with a constant repr: on Python
3.11 the runner formats its main task's repr when it restores the SIGINT handler (an enum lookup of
the handler builds an error message that is then discarded), and that repr includes the task's
result. A `Result`'s repr is its summary, a marginal over every particle (0.13 s at N = 100,000,
twice per run), and a stream event's repr holds a step's records.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from typing import Any, Awaitable, Coroutine, Iterator

from swarm.effects import execution_context


class Box:
    """A value with a repr that costs nothing."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<boxed>"


async def boxed(awaitable: Awaitable[Any]) -> Box:
    return Box(await awaitable)


_PLAIN_BODY: contextvars.ContextVar[bool] = contextvars.ContextVar("plp_plain_program_body", default=False)


@contextlib.contextmanager
def plain_program_body() -> Iterator[None]:
    """Mark code that runs a plain program's body on the thread of a running event loop outside any
    particle execution (VectorizedSMC calls the program itself): a `policy.run(...)` there is a
    nested run, to be run in its own thread (`in_plain_program_body`), not a blocking call."""
    token = _PLAIN_BODY.set(True)
    try:
        yield
    finally:
        _PLAIN_BODY.reset(token)


def in_plain_program_body() -> bool:
    """Whether the caller runs inside `plain_program_body`."""
    return _PLAIN_BODY.get()


def run_in_own_thread(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run `coroutine` to completion on a new event loop in a worker thread, blocking the caller;
    return its value or raise its exception."""
    outcome: dict[str, Any] = {}
    context = execution_context()
    context.run(_PLAIN_BODY.set, False)  # the nested run starts outside any plain program

    def target() -> None:
        try:
            outcome["value"] = context.run(asyncio.run, boxed(coroutine)).value
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="plp-nested-run", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
