"""The effect-handler stack that gives the primitives their meaning (after NumPyro/Pyro).

Every primitive statement builds a `Message` and sends it through the stack of active handlers:
`process_message` innermost-first on the way in (a handler may set the value, rename the site, or
stop the message from reaching outer handlers), then the default behaviour (draw a value if nobody
supplied one), then `postprocess_message` outermost-last on the way out (recording, weighting).
Handlers talk to each other only through the message's fields, never by finding one another.

The stack lives in a `contextvars.ContextVar` holding an immutable tuple, so concurrent particles
(asyncio tasks, greenlets) and the concurrent replicas of an async `plate` each see their own stack.
A handler that does not override a hook costs nothing: for each stack the hooks that do something
are listed once (`_dispatch`) and reused for every statement sent through that stack.
"""

from __future__ import annotations

import contextvars
from typing import Any

from swarm.randomness import SiteRandom, UnseededRandom

class _Stack(tuple):
    """The handlers of one context, outermost first, with the hooks each message type meets cached
    on the stack itself (a stack is immutable: pushing a handler makes a new one)."""


_EMPTY_STACK = _Stack()
_STACK: contextvars.ContextVar[_Stack] = contextvars.ContextVar("swarm_handler_stack", default=_EMPTY_STACK)
_FUSED: contextvars.ContextVar[Any] = contextvars.ContextVar("swarm_fused_engine", default=None)
"""The fused engine of the current stack when it is exactly an execution's engine stack; every
handler pushed on top resets it to None (see `fused_engine`)."""
_UNAWAITED: contextvars.ContextVar[dict[object, tuple[str, tuple[Any, ...], str]] | None] = contextvars.ContextVar(
    "swarm_unawaited", default=None)
"""{token: (site, the coroutine `sample` returned and any it holds unstarted, the call: "sample" or
"ask_human")} for an async program's samples of asynchronous distributions not started yet (see
`unawaited_samples`)."""
_VECTOR: contextvars.ContextVar[int | None] = contextvars.ContextVar("swarm_vector_run", default=None)
"""The number of particles of the vectorised run (`swarm.vector_run`) this context executes, if any:
its statements then take one value per particle (arrays) where a scalar run takes one."""
_RUN_SCOPE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("swarm_run_scope", default=None)
_PROCESS_SCOPE: dict[str, Any] = {}


NEEDS_LOG_Q = "swarm.needs_log_q"
"""`run_scope()` key: set True by a policy whose scores use every site's log q (a length-normalised
vote), so LLM generations ask their backend for log-probabilities even with target="proposal"."""


def run_scope() -> dict[str, Any]:
    """A scratch dictionary shared by everything that runs inside the current policy run (outside
    any run: one process-wide dictionary). Layers above the core keep per-run state here, e.g. the
    agents' response cache, without the core knowing about them."""
    scope = _RUN_SCOPE.get()
    return _PROCESS_SCOPE if scope is None else scope


def current_run_scope() -> dict[str, Any] | None:
    """The current run's scratch dictionary, or None outside any policy run (unlike `run_scope`,
    which then falls back to the process-wide one): for state that must never outlive its run."""
    return _RUN_SCOPE.get()


def set_run_scope(scope: dict[str, Any]) -> None:
    """Make `scope` the `run_scope()` of the rest of the current context, with no undo: for a
    context that is dropped afterwards (an execution's own greenlet context)."""
    _RUN_SCOPE.set(scope)


class new_run_scope:
    """Context manager giving the code inside it a fresh `run_scope()` (or the given dictionary)."""

    def __init__(self, scope: dict[str, Any] | None = None) -> None:
        self._scope: dict[str, Any] = {} if scope is None else scope

    def __enter__(self) -> dict[str, Any]:
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
    """One primitive statement on its way through the handler stack.

    `replayed` is set by a handler that supplies a recorded value (replay): the statement happened
    before, in an ancestor's execution, and must not be recorded or charged again. `is_async` marks
    a sample whose distribution is asynchronous (an LLM generation)."""

    __slots__ = ("type", "name", "fn", "proposal", "value", "log_prob", "target_log_prob", "info",
                 "shaping", "scale", "rng", "stop", "replayed", "plates", "args", "is_async")

    def __init__(self, type: str, name: str, fn: Any = None, proposal: Any = None, value: Any = UNSET,
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
        self.is_async = False

    def __repr__(self) -> str:
        return f"Message({self.type} {self.name!r} value={self.value!r})"


class Handler:
    """Base handler: a context manager that pushes itself on the stack of the current context.

    `process_types` / `postprocess_types` name the message types a handler's hooks care about
    (None: every type); a hook is not called for other types."""

    process_types: frozenset[str] | None = None
    postprocess_types: frozenset[str] | None = None

    def __init__(self) -> None:
        self._tokens: list[contextvars.Token] = []

    def process_message(self, msg: Message) -> None:
        pass

    def postprocess_message(self, msg: Message) -> None:
        pass

    def __enter__(self) -> "Handler":
        self._tokens.append((_STACK.set(_Stack((*_STACK.get(), self))), _FUSED.set(None)))
        return self

    def __exit__(self, *exc: Any) -> None:
        stack, fused = self._tokens.pop()
        _FUSED.reset(fused)
        _STACK.reset(stack)


def push_plain_handlers(handlers: list[Handler]) -> bool:
    """Push `handlers` (outermost first) for the rest of the current context, with no undo, when
    each is a plain handler (the base class's enter/exit); return False, pushing nothing, otherwise.
    For a context that is dropped afterwards (an execution's own greenlet context): entering and
    exiting each handler there would only rebuild the stack once per handler."""
    for handler in handlers:
        kind = type(handler)
        if kind.__enter__ is not _PLAIN_ENTER or kind.__exit__ is not _PLAIN_EXIT:
            return False
    _STACK.set(_Stack((*_STACK.get(), *handlers)))
    return True


def execution_context() -> contextvars.Context:
    """The context a new particle execution runs in: a copy of the current one (so context variables
    the caller set, such as OpenTelemetry's current span, are visible to the program), without any
    of the caller's execution state: its handler stack, fused engine, unawaited samples, vectorised
    run size and run scope. A policy run nested inside another program's execution thus starts
    clean (before, an inner execution whose stack is not the fused one still saw the outer
    particle's fused engine, and its samples went into the outer particle's trace)."""
    context = contextvars.copy_context()
    context.run(_clean)
    return context


def _clean() -> None:
    _STACK.set(_EMPTY_STACK)
    _FUSED.set(None)
    _UNAWAITED.set(None)
    _VECTOR.set(None)
    _RUN_SCOPE.set(None)


def active_handlers() -> tuple[Handler, ...]:
    return _STACK.get()


fused_engine = _FUSED.get
"""`fused_engine()`: the fused engine of the execution whose own stack this is (`swarm.engine.Fused`),
or None under any other stack (then every statement goes through the handlers). A bound
`ContextVar.get`: asked at every statement, it costs no Python call."""


unawaited_samples = _UNAWAITED.get
"""`unawaited_samples()`: the execution's {token: (site, coroutines)} of asynchronous samples handed to the
program and not started yet (`swarm.execution` sets a fresh one for each async execution and, when
the program returns, raises `UnawaitedSampleError` for any left: a `sample` without `await`), or
None outside an execution."""


def track_unawaited_samples() -> dict[object, tuple[str, tuple[Any, ...], str]]:
    """Start tracking the current execution's unawaited samples (its context is its own)."""
    pending: dict[object, tuple[str, tuple[Any, ...], str]] = {}
    _UNAWAITED.set(pending)
    return pending


vector_run_size = _VECTOR.get
"""`vector_run_size()`: N inside a vectorised run of N particles (`swarm.vector_run`), else None."""


def set_vector_run(n: int) -> contextvars.Token:
    return _VECTOR.set(n)


def reset_vector_run(token: contextvars.Token) -> None:
    _VECTOR.reset(token)


def mark_fused(fused: Any) -> None:
    """Declare the current stack to be exactly an execution's engine stack (see `fused_engine`)."""
    _STACK.get().__dict__["fused"] = fused
    _FUSED.set(fused)


_PLAIN_ENTER = Handler.__enter__
_PLAIN_EXIT = Handler.__exit__
_NOOP_PROCESS = Handler.process_message
_NOOP_POSTPROCESS = Handler.postprocess_message


def _dispatch(stack: _Stack, kind: str) -> tuple[tuple, tuple]:
    """For a stack and a message type: the process hooks that care, innermost first, and the
    postprocess hooks that care, inner→outer, each as (depth, hook) with depth 0 the innermost
    handler. Computed once per stack and type (base-class no-ops and other types are skipped)."""
    cache = stack.__dict__
    hooks = cache.get(kind)
    if hooks is None:
        inner_first = list(enumerate(reversed(stack)))
        process = tuple((d, h.process_message) for d, h in inner_first
                        if type(h).process_message is not _NOOP_PROCESS and _cares(h.process_types, kind))
        post = tuple((d, h.postprocess_message) for d, h in inner_first
                     if type(h).postprocess_message is not _NOOP_POSTPROCESS and _cares(h.postprocess_types, kind))
        hooks = cache[kind] = (process, post)
    return hooks


def _cares(types: frozenset[str] | None, kind: str) -> bool:
    return types is None or kind in types


def _process(msg: Message) -> tuple:
    """Run process_message innermost-first; return the (depth, postprocess hook) pairs of the
    handlers that saw the message (a handler that stops it hides it from the ones outside)."""
    process, post = _dispatch(_STACK.get(), msg.type)
    for depth, hook in process:
        hook(msg)
        if msg.stop:
            return tuple(pair for pair in post if pair[0] <= depth)
    return post


def _postprocess(msg: Message, post: tuple) -> None:
    for _, hook in post:
        hook(msg)


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
    post = _process(msg)
    if msg.type == "sample":
        _default_sample(msg)
    _postprocess(msg, post)
    return msg


def apply_stack_async(msg: Message) -> Any:
    """Send a sample message whose distribution (or proposal) is asynchronous through the stack.

    The way in runs now, when the statement is executed (so a handler can refuse the statement at
    once, e.g. an LLM generation inside a plain `def` program); the draw and the way out run when
    the returned awaitable is awaited."""
    msg.is_async = True
    post = _process(msg)
    return _finish_async(msg, post)


async def _finish_async(msg: Message, post: tuple) -> Message:
    await _default_sample_async(msg)
    _postprocess(msg, post)
    return msg
