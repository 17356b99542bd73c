"""Critics: estimates of the soft value of a prefix, for twisting (TwistedSMC) and search (TreeSearch).

A *prefix* s is the trace of a particle suspended part-way (at a sync point, or just after a sample
site). Its soft value is the log of the potential mass still to come (docs/theory.md §4.1, §4.4):

    V(s) = log Σ_{τ ≻ s} π(τ | s) · Φ(τ)/Φ(s),

the sum over completions τ of s, Φ(τ)/Φ(s) the target factors and guarantees *after* s (those in s
are already in the particle's weight). V(∅) = log Z, V(τ) = 0 for a complete trace, and V obeys the
soft Bellman equation V(s) = log Σ_x p(x|s) e^{V(s ⊕ x)} (a factor ℓ between s and s': V(s) = ℓ + V(s')).
With V exact, exp V(s) is the optimal twist ψ*_t of twisted SMC (Zhao et al. 2024).

A critic is any callable `critic(prefix: Trace) -> float` (or an awaitable of one: an LLM judge).
Critics that need to run the program (rollouts, enumeration) have `bind(program, args, kwargs,
seed)`, which the policy calls at the start of a run; the bound critic counts the executions,
tokens and LLM calls it spends (`usage`), so equal-budget comparisons include them.

- `RolloutCritic(num_rollouts)`: Monte Carlo, V̂(s) = log (1/K) Σ_k w(τ_k)/w(s), τ_k ~ π(· | s);
  exp V̂ is unbiased for exp V.
- `EnumerationCritic()`: V(s) exactly, by enumerating every completion (finite supports only).
- `JudgeCritic(judge)`: log P(C=1 | verdict on the prefix) from a calibrated `Judge`.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
from typing import Any, Awaitable, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.enumerate import _Branch, _FollowPath
from swarm.errors import EnumerationError, InvalidPotentialError, SwarmError
from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.handlers import block
from swarm.population import logmeanexp, logsumexp
from swarm.result import hashable
from swarm.trace import Trace

__all__ = ["RolloutCritic", "EnumerationCritic", "JudgeCritic", "bind_critic", "evaluate", "evaluate_all", "evaluate_now", "CriticError",
           "prefix_key", "future_log_weight", "run_now"]


# --- helpers ------------------------------------------------------------------------------------------
def prefix_key(prefix: Trace) -> tuple:
    """A hashable identity of a prefix: its weighting statements and sampled values, in order. Two
    prefixes with the same key have the same future (programs are deterministic given their samples)."""
    return tuple((e.type, e.address, hashable(e.value) if e.type == "sample" else None)
                 for e in prefix.events if e.type in ("sample", "factor", "guarantee"))


def _stream_of(prefix: Trace) -> str:
    return hashlib.blake2b(repr(prefix_key(prefix)).encode(), digest_size=8).hexdigest()


def future_log_weight(events: list, *, joint: bool = False) -> float:
    """Σ over `events` of their log weight contributions: scaled target factors, guarantees
    (−inf when failed), and per sample site log p − log q (or, with `joint`, log p itself)."""
    total = 0.0
    for e in events:
        if e.type == "sample":
            log_p = e.log_prob if e.target_log_prob is None else e.target_log_prob
            total += log_p if joint else log_p - e.log_prob
        elif e.type == "factor" and not e.shaping and e.scale != 0.0:
            total += e.scale * e.log_potential
        elif e.type == "guarantee" and not e.satisfied:
            return -math.inf
    return total


def run_now(coro: Awaitable[Any]) -> Any:
    """Run a coroutine that never suspends (segments of a plain program) to completion, synchronously."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a critic's coroutine suspended; an asynchronous critic cannot be evaluated synchronously")


class CriticError(SwarmError, TypeError):
    """A critic that cannot be used where it is asked for (e.g. an asynchronous one inside a sample site)."""


def _checked(value: Any, prefix: Trace, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise InvalidPotentialError(f"{who}: the critic returned {type(value).__name__} {value!r}, not a number")
    v = float(value)
    if math.isnan(v) or v == math.inf:
        where = prefix.events[-1].address if prefix.events else "<program start>"
        raise InvalidPotentialError(f"{who}: the critic returned {v!r} for the prefix ending at {where!r}; "
                                    "a soft value must be finite or -inf")
    return v


async def evaluate(critic: Callable[[Trace], Any], prefix: Trace, who: str = "critic") -> float:
    """critic(prefix), awaited if it is awaitable, checked (NaN and +inf raise InvalidPotentialError)."""
    value = critic(prefix)
    if inspect.isawaitable(value):
        value = await value
    return _checked(value, prefix, who)


async def evaluate_all(critic: Callable[[Trace], Any], prefixes: list[Trace], who: str = "critic") -> list[float]:
    """[critic(s) for s in prefixes], the awaitable ones (LLM judges, async rollouts) concurrently."""
    values = [critic(prefix) for prefix in prefixes]
    pending = [i for i, v in enumerate(values) if inspect.isawaitable(v)]
    if pending:
        done = await asyncio.gather(*(values[i] for i in pending))
        for i, v in zip(pending, done):
            values[i] = v
    return [_checked(v, prefix, who) for v, prefix in zip(values, prefixes)]


def evaluate_now(critic: Callable[[Trace], Any], prefix: Trace, who: str = "critic") -> float:
    """critic(prefix) synchronously (inside a running program); an asynchronous critic raises TypeError."""
    value = critic(prefix)
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise CriticError(f"{who}: the critic is asynchronous, but it is needed synchronously here (inside a "
                        "program's sample site); use a synchronous critic")
    return _checked(value, prefix, who)


def bind_critic(critic: Any, program: Callable[..., Any], args: tuple, kwargs: dict, seed: int | None) -> Any:
    """The critic a run uses: `critic.bind(...)` when it has one, else the callable itself."""
    bind = getattr(critic, "bind", None)
    return bind(program, args, kwargs, seed) if callable(bind) else critic


# --- critics that run the program ---------------------------------------------------------------------
class _BoundCritic:
    """A critic bound to one run's program: runs nested executions shielded from the caller's handlers."""

    def __init__(self, program: Callable[..., Any], args: tuple, kwargs: dict, seed: int | None) -> None:
        self.runner = SegmentRunner(program, args, kwargs, seed=seed)
        self.cache: dict[tuple, Any] = {}
        self.usage = {"executions": 0, "tokens": 0, "llm_calls": 0}

    def __call__(self, prefix: Trace) -> float | Awaitable[float]:
        """V̂(prefix): a float for a plain program; for an async one an awaitable, shared by concurrent
        calls on the same prefix (the cache holds the task, so equal prefixes cost one evaluation)."""
        key = prefix_key(prefix)
        hit = self.cache.get(key)
        if self.runner.is_async:
            if hit is None:
                hit = self.cache[key] = asyncio.ensure_future(self._value(prefix))
            return _awaited(hit)
        if hit is None:
            hit = self.cache[key] = run_now(self._value(prefix))
        return hit

    async def _run(self, task: SegmentTask, runner: SegmentRunner | None = None) -> Segment:
        with block():  # the nested execution's statements never reach the caller's handlers
            seg = await (runner or self.runner).run(task)
        self.usage["executions"] += 1
        self.usage["tokens"] += seg.tokens
        self.usage["llm_calls"] += seg.llm_calls
        return seg

    async def _value(self, prefix: Trace) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


async def _awaited(task: "asyncio.Future[float]") -> float:
    return await task


class _BoundRollouts(_BoundCritic):
    def __init__(self, spec: "RolloutCritic", *bind_args: Any) -> None:
        super().__init__(*bind_args)
        self.spec = spec

    async def _value(self, prefix: Trace) -> float:
        stream = _stream_of(prefix)
        start = len(prefix)
        future = []
        for k in range(self.spec.num_rollouts):
            seg = await self._run(SegmentTask(stream=f"rollout:{stream}:{k}", prefix=prefix if start else None))
            future.append(future_log_weight(seg.trace.events[start:]) if seg.status == "finished" else -math.inf)
        value = logmeanexp(future) if self.spec.reduce == "logmeanexp" else max(future)
        return value if self.spec.floor is None else max(value, self.spec.floor)


class RolloutCritic(BaseModel):
    """Monte Carlo soft value: run the program on from the prefix K times (each rollout on its own
    random stream, derived from the prefix so the critic is a deterministic function of it) and

        V̂(s) = log (1/K) Σ_k exp( log w(τ_k) − log w(s) ),    τ_k ~ π(· | s)     (reduce="logmeanexp")

    whose exponential is unbiased for exp V(s); or the best future found, max_k (log w(τ_k) − log w(s))
    (reduce="max", a search value). A prefix whose rollouts all die would get V̂ = −inf, a zero twist
    that excludes a prefix the target may still favour (twisted SMC needs ψ > 0 wherever the target
    has mass), so V̂ is raised to `floor` (None: no floor).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_rollouts: int = Field(8, gt=0)
    reduce: Literal["logmeanexp", "max"] = "logmeanexp"
    floor: float | None = -20.0

    def bind(self, program: Callable[..., Any], args: tuple, kwargs: dict, seed: int | None) -> _BoundRollouts:
        return _BoundRollouts(self, program, args, kwargs, seed)


class _BoundEnumeration(_BoundCritic):
    def __init__(self, spec: "EnumerationCritic", *bind_args: Any) -> None:
        super().__init__(*bind_args)
        self.spec = spec

    def _following(self, path: dict[str, Any]) -> SegmentRunner:
        r = self.runner
        return SegmentRunner(r.program, r.args, r.kwargs, seed=r.seed, extra_handlers=lambda: [_FollowPath(path)])

    async def _value(self, prefix: Trace) -> float:
        start, masses, stack, runs = len(prefix), [], [{}], 0
        while stack:
            path = stack.pop()
            runs += 1
            if runs > self.spec.max_paths:
                raise EnumerationError(f"EnumerationCritic: more than max_paths={self.spec.max_paths} executions "
                                       "below one prefix")
            try:
                seg = await self._run(SegmentTask(stream="enumerate", prefix=prefix if start else None),
                                      self._following(path))
            except _Branch as branch:
                stack.extend({**path, branch.address: choice} for choice in reversed(branch.choices))
                continue
            if seg.status == "finished":
                masses.append(future_log_weight(seg.trace.events[start:], joint=True))
        return logsumexp(masses) if masses else -math.inf


class EnumerationCritic(BaseModel):
    """The exact soft value V(s) = log Σ_{τ≻s} π(τ|s) Φ(τ)/Φ(s), by depth-first enumeration of every
    completion of s (each new site from its own distribution; finite supports only). Values are cached
    per prefix. The optimal twist: with it and `TwistedSMC(proposal="twisted")` every incremental
    weight equals its expectation (zero variance) and log Ẑ = log Z exactly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_paths: int = Field(100_000, gt=0)

    def bind(self, program: Callable[..., Any], args: tuple, kwargs: dict, seed: int | None) -> _BoundEnumeration:
        return _BoundEnumeration(self, program, args, kwargs, seed)


class JudgeCritic(BaseModel):
    """A calibrated `Judge` as a critic: V̂(s) = judge.potential(verdict(view(s))), the judge's log
    posterior (or log likelihood ratio) that the prefix leads to a correct trace. `view` maps the
    prefix to the judge's input (default: its sampled values {address: value})."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    judge: Any
    view: Callable[[Trace], Any] | None = None

    def __call__(self, prefix: Trace) -> float | Awaitable[float]:
        x = self.view(prefix) if self.view is not None else prefix.samples()
        verdict = self.judge.verdict(x)
        if inspect.isawaitable(verdict):
            return self._potential_async(verdict)
        return self.judge.potential(verdict)

    async def _potential_async(self, pending: Awaitable[bool]) -> float:
        return self.judge.potential(await pending)
