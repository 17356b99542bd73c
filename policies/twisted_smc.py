"""Twisted SMC: SMC whose intermediate targets are shaped by a critic's estimate of the soft value
(docs/theory.md §4.3; Zhao, Brekelmans, Makhzani & Grosse 2024)."""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

from pydantic import field_validator

from policies.base import RunContext
from policies.critics import bind_critic, evaluate_all, evaluate_now
from policies.checkpointing import RunCheckpoints
from policies.smc import SMC
from swarm.distributions import Categorical
from swarm.effects import UNSET, Handler, Message
from swarm.execution import Segment, SegmentTask
from swarm.handlers import event_from_message
from swarm.result import Result
from swarm.trace import SampleEvent, Trace

__all__ = ["TwistedSMC"]


class _TwistedProposal(Handler):
    """Draw each finite-support sample site from the twist-induced proposal

        q(x | s) ∝ p(x | s) · exp V̂(s ⊕ x),

    by giving the site a custom proposal: the core then records log q and log p, and the weight gains
    log p(x) − log q(x) = log Σ_x' p(x'|s) e^{V̂(s⊕x')} − V̂(s ⊕ x). Sites the critic cannot look ahead
    at (LLM generations, infinite supports), or where every candidate has V̂ = −inf, keep their own
    proposal. The handler keeps its own record of the execution's statements (replayed ones too), the
    prefix s the critic is shown."""

    def __init__(self, critic: Callable[[Trace], Any]) -> None:
        super().__init__()
        self.critic = critic
        self.events: list[Any] = []

    def process_message(self, msg: Message) -> None:
        if msg.type != "sample" or msg.value is not UNSET or msg.fn.is_async or msg.fn.support is None:
            return
        describe = msg.fn.describe()
        values, logits = [], []
        for value, log_p in msg.fn.enumerate_support():
            candidate = Trace([*self.events, SampleEvent(address=msg.name, value=value, log_prob=log_p, dist=describe)])
            values.append(value)
            logits.append(log_p + evaluate_now(self.critic, candidate, f"TwistedSMC critic at site {msg.name!r}"))
        if max(logits) > -math.inf:
            msg.proposal = Categorical(values, logits=logits)

    def postprocess_message(self, msg: Message) -> None:
        if msg.type in ("sample", "factor", "guarantee", "interact"):
            self.events.append(event_from_message(msg))


class TwistedSMC(SMC):
    """SMC with a critic's soft-value estimate as a telescoping shaping factor (a twist).

    After step t (particles suspended at their t-th sync point with prefixes s_t), every running
    particle's weight carries the twist ψ_t = exp V̂(s_t) from `critic(s_t)` in place of ψ_{t−1}:

        log W_t = log W_{t−1} + [log w(s_t) − log w(s_{t−1})] + V̂(s_t) − V̂(s_{t−1}),

    i.e. the intermediate target is π(s_t)·Φ(s_t)·ψ_t(s_t) (twisted SMC's π_t ∝ p₀ψ_t). When a particle
    finishes, its last twist is removed (V̂ = 0 for a complete trace), so the increments telescope and
    the final target is p ∝ πΦ whatever the critic: a critic only changes *which* particles survive
    resampling, and Ẑ = Π_epochs mean W stays unbiased for Z for any critic that is finite wherever the
    target has mass (a −inf value kills the particle: only return it for prefixes with V(s) = −inf).

    Mechanism: the core's shaping-factor machinery. A `Segment`'s log weight is its target weight
    plus its current twist; after each step the critic's value is added to the twist of every running
    segment (on top of any shaping factor of the program's own), and `Population.update`
    takes increments of that total, so the telescoping is the same one `factor(..., shaping=True)`
    gets. Post-processing segments (rather than a handler emitting factors) evaluates the critic once
    per particle and step, only where the particle stops, and lets it be asynchronous (an LLM judge)
    and concurrent across particles.

    `proposal="twisted"` also draws each finite-support site from the twist-induced proposal
    q(x|s) ∝ p(x|s)·exp V̂(s⊕x) (the critic is evaluated on every candidate extension, so it must be
    synchronous). With the exact soft value V (`EnumerationCritic`) this is the optimal (Doob
    h-transform) proposal: every incremental weight equals exp V(∅) = Z at the first step and 1 after,
    with zero variance. With `proposal="prior"` (the default) sites are drawn from π as in SMC; no
    twist can then make the weights constant (the new sites' own variation remains), but a good
    critic still decides early which partial traces to keep.

    The critic: any callable on the prefix trace returning V̂(s) (a Python heuristic, an LLM judge's
    `JudgeCritic`, or `RolloutCritic(num_rollouts)` / `EnumerationCritic()`, bound to the program at
    the start of the run). The twist of a run stopped early (max_steps, budget) is left in the
    weights of its still-running particles.
    """

    critic: Any
    """callable(prefix: Trace) -> float | Awaitable[float], or an object with .bind(program, args, kwargs, seed)."""
    proposal: Literal["prior", "twisted"] = "prior"

    @field_validator("checkpoint")
    @classmethod
    def _no_checkpoints(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("TwistedSMC does not checkpoint (its critic's state is not saved); use checkpoint=None")
        return value

    @field_validator("critic")
    @classmethod
    def _callable_critic(cls, value: Any) -> Any:
        if callable(value) or callable(getattr(value, "bind", None)):
            return value
        raise ValueError(f"critic must be a callable on a prefix trace (or have .bind), got {type(value).__name__}")

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        critic = _RunCritic(bind_critic(self.critic, ctx.program, args, kwargs, ctx.seed))
        ctx.twist_critic = critic  # per-run state, read by the advance hook
        runner = ctx.runner(args, kwargs)
        if self.proposal == "twisted":
            runner.extra_handlers = lambda: [_TwistedProposal(critic.fn)]
        swarm = ctx.coordinator(runner, self.num_particles)
        await self.run_population(ctx, swarm, RunCheckpoints(None, None))
        result = self.result(ctx, swarm)
        critic.account(ctx)
        result.extra["critic_usage"] = dict(critic.spent)
        return result

    def advance_hook(self, ctx: RunContext) -> Callable[[list[Segment], list[SegmentTask]], Any]:
        """After each step's segments: add the critic's V̂(s_t) to each running segment's twist."""
        critic: _RunCritic = ctx.twist_critic

        async def add_twist(segments: list[Segment], tasks: list[SegmentTask]) -> None:
            running = [(seg, task) for seg, task in zip(segments, tasks)
                       if seg.status == "running" and seg.target_log_weight > -math.inf]
            prefixes = [Trace([*task.prefix_events(), *seg.events]) for seg, task in running]
            values = await evaluate_all(critic.fn, prefixes, "TwistedSMC critic")
            for (seg, _), value in zip(running, values):
                if value == -math.inf:
                    seg.site = critic_kill_site(seg.site)
                seg.twist = seg.twist + value if value > -math.inf else -math.inf
            critic.calls += len(running)
            critic.account(ctx)

        return add_twist


def critic_kill_site(site: str | None) -> str:
    """What a particle the critic killed (V̂ = −inf at its prefix) is counted under: the critic at
    the sync point, not the statement there. It was the statement's address, so a run whose
    critic saw no viable completion (e.g. the program raises further on) read "'f' killed 2000",
    naming a factor of log-potential 0."""
    return f"TwistedSMC critic (V = -inf) at {site!r}"


class _RunCritic:
    """The critic of one run, with what it has cost so far (charged to the run's budget)."""

    def __init__(self, fn: Callable[[Trace], Any]) -> None:
        self.fn = fn
        self.calls = 0
        self.spent = {"executions": 0, "tokens": 0, "llm_calls": 0}

    def account(self, ctx: RunContext) -> None:
        """Charge the critic's own executions (rollouts, enumeration) to the run's tokens and calls."""
        usage = getattr(self.fn, "usage", None)
        if usage:
            ctx.diagnostics.tokens += usage["tokens"] - self.spent["tokens"]
            ctx.diagnostics.llm_calls += usage["llm_calls"] - self.spent["llm_calls"]
            self.spent = dict(usage)
        self.spent["calls"] = self.calls
