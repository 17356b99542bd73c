"""The five primitives of Probabilistic Language Programming.

- `sample(name, dist)`       draw from a proposal and record log q (and log p when they differ);
- `factor(name, ℓ)`          add a log-potential ℓ = log Φ_f to the trace weight (target), or a
                             telescoping twist (`shaping=True`) that only guides inference;
- `guarantee(name, c)`       a hard constraint Φ ∈ {0, 1} (log weight −∞ when `c` is false);
- `plate(name, n, fn, ...)`  n conditionally independent replicas of `fn` inside one trace;
- `interact(s, r, content)`  a message between agents, or a tool/environment step.

Each builds a message and sends it through the handler stack (`swarm.effects`); what the statement
*means* (record it, weight by it, replay it, suspend at it) is decided by the handlers a policy has
installed. Called outside any policy, a program just runs forward: samples are drawn from their
distributions with fresh entropy and weighting statements are validated and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import numbers
from typing import Any, Callable

import numpy as np

from swarm.distributions import Distribution
from swarm.errors import InvalidDistributionError, InvalidPotentialError, PrimitiveUsageError
from swarm.effects import (UNSET, Handler, Message, apply_stack, apply_stack_async, fused_engine, unawaited_samples,
                           vector_run_size)
from swarm.engine import at_site as _at_site, raise_async_in_plain_program

__all__ = ["sample", "factor", "guarantee", "plate", "interact", "auto_name"]


def _check_name(name: Any, primitive: str) -> str:
    if not isinstance(name, str) or not name:
        raise PrimitiveUsageError(f"{primitive}() needs a non-empty string site name, got {name!r}")
    return name


def as_log_potential(name: str, value: Any) -> float:
    """Validate a log-potential: a real scalar, not NaN, not +inf (−inf is allowed: it kills)."""
    if type(value) is float and value == value and value != math.inf:  # the common case, fast
        return value
    if isinstance(value, (bool, np.bool_)):
        raise InvalidPotentialError(
            f"factor {name!r}: got a boolean ({value!r}); use guarantee({name!r}, condition) for hard constraints")
    if isinstance(value, np.ndarray):
        if value.shape != ():
            if vector_run_size() is not None:  # one per particle: validated by the vectorised run
                return value
            raise InvalidPotentialError(
                f"factor {name!r}: the log-potential must be a scalar, got an array of shape {value.shape}")
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise InvalidPotentialError(
            f"factor {name!r}: the log-potential must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value):
        raise InvalidPotentialError(f"factor {name!r}: the log-potential is NaN")
    if value == math.inf:
        raise InvalidPotentialError(f"factor {name!r}: the log-potential is +inf (Φ must be finite)")
    return value


def _as_condition(name: str, condition: Any) -> bool:
    if isinstance(condition, np.ndarray):
        if vector_run_size() is not None:  # one per particle: validated by the vectorised run
            return condition
        if condition.size != 1:
            raise InvalidPotentialError(
                f"guarantee {name!r}: the condition must be a single truth value, got an array of shape {condition.shape}")
        condition = condition.item()
    if isinstance(condition, (float, np.floating)) and condition != condition:  # NaN is truthy
        raise InvalidPotentialError(f"guarantee {name!r}: the condition is NaN (bool(NaN) would be True); "
                                    "pass a comparison, e.g. score > threshold")
    try:
        return bool(condition)
    except Exception as exc:  # e.g. an object whose __bool__ raises
        raise InvalidPotentialError(f"guarantee {name!r}: the condition has no truth value ({exc})") from exc


def _distribution_hint(value: Any) -> str:
    """What to pass instead of `value`, for the common mistakes."""
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # never started: no "never awaited" warning on top of this error
        return "an awaitable, e.g. agent.ask(...), which samples by itself: await it, or sample agent.generate(...)"
    if isinstance(value, type) and issubclass(value, Distribution):
        return "the class, not an instance: e.g. Bernoulli(0.5)"
    return "e.g. Bernoulli(0.5), Categorical(...), agent.generate(prompt)"


def sample(name: str, dist: Distribution, *, proposal: Distribution | None = None) -> Any:
    """Draw a value at site `name` from `dist` (or from `proposal`, weighting by log p − log q).

    With a synchronous distribution the value is returned. With an asynchronous one (an LLM
    generation) an awaitable is returned: `text = await sample("draft", writer.generate(prompt))`.
    """
    if type(name) is not str or not name:
        _check_name(name, "sample")
    if not isinstance(dist, Distribution):
        raise PrimitiveUsageError(f"sample {name!r}: expected a swarm Distribution, got {type(dist).__name__} "
                                  f"({_distribution_hint(dist)})")
    if proposal is not None and not isinstance(proposal, Distribution):
        raise PrimitiveUsageError(f"sample {name!r}: proposal must be a swarm Distribution, got "
                                  f"{type(proposal).__name__}")
    if dist.is_async or (proposal is not None and proposal.is_async):
        token = object()  # the coroutine drops it from `unawaited_samples()` when it starts
        if proposal is None and (fused := fused_engine()) is not None:
            if not fused.suspend.program_is_async:
                raise_async_in_plain_program(name, dist)
            pending = fused.sample_async(name, dist, token)
            coroutines: tuple[Any, ...] = (pending,)
        else:
            inner = apply_stack_async(Message("sample", name, dist, proposal))
            pending = _await_value(name, inner, token)
            coroutines = (pending, inner)
        if (waiting := unawaited_samples()) is not None:  # a program that returns before it starts
            waiting[token] = (name, coroutines, "sample")   # never awaited it
        return pending
    try:
        if proposal is None:
            if (fused := fused_engine()) is not None:
                return fused.sample(name, dist)
        elif vector_run_size() is None:  # a vectorised run's distributions hold one row per particle
            check_proposal_covers(dist, proposal)
        return apply_stack(Message("sample", name, dist, proposal)).value
    except InvalidDistributionError as exc:  # found while drawing/enumerating: name the site
        raise _at_site(name, exc) from exc


def check_proposal_covers(dist: Distribution, proposal: Distribution) -> None:
    """Raise `InvalidDistributionError` unless q > 0 wherever p > 0 (checked when both supports are
    finite). Importance weights p/q are unbiased only then: a value the proposal never draws is
    missing from every estimate, silently (p = 0.6 on a value q never proposes: the posterior
    came out without it)."""
    target, support = dist.support, proposal.support
    if target is None or support is None:
        return
    for value in target:
        if dist.log_prob(value) > -math.inf and proposal.log_prob(value) == -math.inf:
            raise InvalidDistributionError(
                f"the proposal {proposal.describe()} never draws {value!r}, which the target {dist.describe()} "
                "can take: importance weights p/q would leave it out of every estimate; give a proposal whose "
                "support covers the target's")


async def _await_value(name: str, pending: Any, token: object = None) -> Any:
    if (waiting := unawaited_samples()) is not None:
        waiting.pop(token, None)
    try:
        return (await pending).value
    except InvalidDistributionError as exc:
        raise _at_site(name, exc) from exc


def factor(name: str, log_potential: float, *, shaping: bool = False) -> None:
    """Multiply the trace's potential by exp(log_potential).

    A target factor (the default) changes p(τ) ∝ π(τ)Φ(τ). A shaping factor (`shaping=True`) is a
    twist: each one *replaces* the particle's previous shaping factor and the last is removed when
    the program ends, so Σ of the increments telescopes to zero and the target is unchanged; it only
    changes which particles survive resampling (docs/theory.md §4.2).
    """
    if type(name) is not str or not name:
        _check_name(name, "factor")
    value = as_log_potential(name, log_potential)
    shaping = shaping is True or bool(shaping)
    fused = fused_engine()
    if fused is not None:
        fused.factor(name, value, shaping)
    else:
        apply_stack(Message("factor", name, None, None, value, shaping))


def guarantee(name: str, condition: Any) -> None:
    """A hard constraint: Φ = 1 when `condition` holds, 0 (log weight −∞) otherwise."""
    _check_name(name, "guarantee")
    satisfied = _as_condition(name, condition)
    fused = fused_engine()
    if fused is not None:
        fused.guarantee(name, satisfied)
    else:
        apply_stack(Message("guarantee", name, value=satisfied))


def interact(sender: str, receiver: str, content: Any, *, kind: str = "message", name: str | None = None,
             info: dict[str, Any] | None = None) -> None:
    """Record a message from `sender` to `receiver` (or a tool call/result, an observation)."""
    if not isinstance(sender, str) or not isinstance(receiver, str):
        raise PrimitiveUsageError(f"interact() needs string sender and receiver, got {sender!r} → {receiver!r}")
    address = name or f"{kind}:{sender}->{receiver}"
    apply_stack(Message("interact", address, value=content,
                        args={"sender": sender, "receiver": receiver, "kind": kind, "info": info or {}}))


_fallback_counts: dict[str, int] = {}


def auto_name(base: str) -> str:
    """A site name `base#n` that is unique and deterministic within one execution: n counts the
    earlier `auto_name(base)` calls of this execution in the same plate replica, so replaying the
    program yields the same names. (Concurrent calls with the same base inside one replica race for
    n: give those explicit names.) Outside any policy, a process-wide counter is used."""
    _check_name(base, "auto_name")
    msg = apply_stack(Message("name", base))
    if msg.value is UNSET:
        n = _fallback_counts.get(base, 0)
        _fallback_counts[base] = n + 1
    else:
        n = msg.value
    return f"{base}#{n}"


class _PlateScope(Handler):
    """Prefixes the addresses of the sites inside replica i of a plate: `name[i]/site`."""

    def __init__(self, prefix: str, plate: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.plate = plate

    def process_message(self, msg: Message) -> None:
        if msg.type in ("sample", "factor", "guarantee", "interact", "sync", "name"):
            msg.name = f"{self.prefix}/{msg.name}"
            msg.plates = (self.plate, *msg.plates)


def _plate_exit(name: str) -> None:
    """A synchronisation point after a plate: weighting statements inside a plate do not suspend
    a particle one by one; the plate as a whole is one step when it weighted anything."""
    apply_stack(Message("sync", name))


def plate(name: str, size: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `size` conditionally independent replicas of `fn(*args, **kwargs)` inside this trace.

    Sites inside replica i are addressed `name[i]/site`. For an `async def` fn the replicas run
    concurrently and an awaitable is returned (`votes = await plate("vote", 5, ask)`); otherwise they
    run in order and the list of results is returned.
    """
    _check_name(name, "plate")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
        raise PrimitiveUsageError(f"plate {name!r}: size must be a non-negative integer, got {size!r}")
    if not callable(fn):
        raise PrimitiveUsageError(f"plate {name!r}: the replica must be a function (called once per replica), "
                                  f"got {type(fn).__name__}")
    if inspect.iscoroutinefunction(fn):
        return _plate_async(name, int(size), fn, args, kwargs)
    results = []
    for i in range(int(size)):
        with _PlateScope(f"{name}[{i}]", name):
            results.append(fn(*args, **kwargs))
    _plate_exit(name)
    return results


async def _plate_async(name: str, size: int, fn: Callable[..., Any], args: tuple, kwargs: dict) -> list[Any]:
    async def replica(i: int) -> Any:
        with _PlateScope(f"{name}[{i}]", name):
            return await fn(*args, **kwargs)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(replica(i)) for i in range(size)]
    except BaseExceptionGroup as group:  # re-raise the replica's own exception, not the group
        raise _first_leaf(group) from None
    _plate_exit(name)
    return [t.result() for t in tasks]


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The exception that ended a plate: control signals and swarm errors before ordinary ones."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    from swarm.errors import SwarmError

    for kind in (lambda e: not isinstance(e, Exception), lambda e: isinstance(e, SwarmError)):
        for exc in leaves:
            if kind(exc):
                return exc
    return leaves[0]
