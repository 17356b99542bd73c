"""The effect-handler stack that gives the primitives their meaning (after NumPyro/Pyro).

Every primitive statement builds a `Message` and sends it through the stack of active handlers:
`process_message` innermost-first on the way in (a handler may set the value, rename the site, or
stop the message from reaching outer handlers), then the default behaviour (draw a value if nobody
supplied one), then `postprocess_message` outermost-last on the way out (recording, weighting).

The stack lives in a `contextvars.ContextVar` holding an immutable tuple, so concurrent particles
(asyncio tasks, threads) and the concurrent replicas of an async `plate` each see their own stack.
"""

from __future__ import annotations

import contextvars
from typing import Any

from swarm.randomness import SiteRandom, UnseededRandom

_STACK: contextvars.ContextVar[tuple["Handler", ...]] = contextvars.ContextVar("swarm_handler_stack", default=())
_RUN_SCOPE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("swarm_run_scope", default=None)
_PROCESS_SCOPE: dict[str, Any] = {}


def run_scope() -> dict[str, Any]:
    """A scratch dictionary shared by everything that runs inside the current policy run (outside
    any run: one process-wide dictionary). Layers above the core keep per-run state here, e.g. the
    agents' response cache, without the core knowing about them."""
    scope = _RUN_SCOPE.get()
    return _PROCESS_SCOPE if scope is None else scope


class new_run_scope:
    """Context manager giving the code inside it a fresh `run_scope()`."""

    def __enter__(self) -> dict[str, Any]:
        self._scope: dict[str, Any] = {}
        self._token = _RUN_SCOPE.set(self._scope)
        return self._scope

    def __exit__(self, *exc: Any) -> None:
        _RUN_SCOPE.reset(self._token)


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()


class Message:
    """One primitive statement on its way through the handler stack."""

    __slots__ = ("type", "name", "fn", "proposal", "value", "log_prob", "target_log_prob", "info",
                 "shaping", "scale", "rng", "stop", "replayed", "plates", "args")

    def __init__(self, type: str, name: str, *, fn: Any = None, proposal: Any = None, value: Any = UNSET,
                 shaping: bool = False, args: dict[str, Any] | None = None) -> None:
        self.type = type
        self.name = name
        self.fn = fn
        self.proposal = proposal
        self.value = value
        self.log_prob: float | None = None
        self.target_log_prob: float | None = None
        self.info: dict[str, Any] | None = None
        self.shaping = shaping
        self.scale = 1.0
        self.rng: SiteRandom | None = None
        self.stop = False
        self.replayed = False
        self.plates: tuple[str, ...] = ()
        self.args = args

    def __repr__(self) -> str:
        return f"Message({self.type} {self.name!r} value={self.value!r})"


class Handler:
    """Base handler: a context manager that pushes itself on the stack of the current context."""

    def __init__(self) -> None:
        self._tokens: list[contextvars.Token] = []

    def process_message(self, msg: Message) -> None:
        pass

    def postprocess_message(self, msg: Message) -> None:
        pass

    def __enter__(self) -> "Handler":
        self._tokens.append(_STACK.set(_STACK.get() + (self,)))
        return self

    def __exit__(self, *exc: Any) -> None:
        _STACK.reset(self._tokens.pop())


def active_handlers() -> tuple[Handler, ...]:
    return _STACK.get()


def _process(msg: Message) -> tuple[Handler, ...]:
    """Run process_message innermost-first; return the handlers that saw the message (inner→outer)."""
    stack = _STACK.get()
    seen: list[Handler] = []
    for handler in reversed(stack):
        seen.append(handler)
        handler.process_message(msg)
        if msg.stop:
            break
    return tuple(seen)


def _postprocess(msg: Message, seen: tuple[Handler, ...]) -> None:
    for handler in seen:
        handler.postprocess_message(msg)


def _default_sample(msg: Message) -> None:
    if msg.value is not UNSET:
        return
    rng = msg.rng or UnseededRandom()
    if msg.proposal is None:
        msg.value = msg.fn.sample(rng)
        msg.log_prob = msg.fn.log_prob(msg.value)
    else:
        msg.value = msg.proposal.sample(rng)
        msg.log_prob = msg.proposal.log_prob(msg.value)
        msg.target_log_prob = msg.fn.log_prob(msg.value)


async def _default_sample_async(msg: Message) -> None:
    if msg.value is not UNSET:
        return
    rng = msg.rng or UnseededRandom()
    source = msg.proposal if msg.proposal is not None else msg.fn
    draw = await source.sample_async(rng)
    msg.value, msg.log_prob, msg.info = draw.value, draw.log_prob, draw.info
    if msg.proposal is not None:
        msg.target_log_prob = msg.fn.log_prob(draw.value)
    else:
        msg.target_log_prob = draw.target_log_prob


def apply_stack(msg: Message) -> Message:
    """Send a message through the stack (synchronous distributions and non-sample statements)."""
    seen = _process(msg)
    if msg.type == "sample":
        _default_sample(msg)
    _postprocess(msg, seen)
    return msg


async def apply_stack_async(msg: Message) -> Message:
    """Send a sample message whose distribution (or proposal) is asynchronous through the stack."""
    seen = _process(msg)
    await _default_sample_async(msg)
    _postprocess(msg, seen)
    return msg
