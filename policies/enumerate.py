"""Exact inference by enumerating every execution path of a program with finite supports."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field

from policies.base import Policy, RunContext
from policies.independent import particle_of
from swarm.errors import BackendUnavailable, EnumerationError
from swarm.human import CannotPauseError, HumanAnswer
from swarm.execution import SegmentTask
from swarm.population import logsumexp
from swarm.result import Result
from swarm.effects import UNSET, Handler, Message


class _Branch(BaseException):
    """Control signal: execution reached a sample site that the current path has not chosen yet."""

    def __init__(self, address: str, choices: list[tuple[Any, float]]) -> None:
        super().__init__(address)
        self.address = address
        self.choices = choices


class _FollowPath(Handler):
    """Set every sample site on the path to its chosen value (with log p under the site's model
    distribution); stop at the first site off the path so the caller can branch on it."""

    def __init__(self, path: dict[str, tuple[Any, float]]) -> None:
        super().__init__()
        self.path = path

    def process_message(self, msg: Message) -> None:
        if msg.type != "sample" or msg.value is not UNSET:
            return
        chosen = self.path.get(msg.name)
        if chosen is not None:
            msg.value, msg.log_prob = chosen
            msg.target_log_prob = None
            return
        dist = msg.fn
        if isinstance(dist, HumanAnswer):
            raise CannotPauseError(
                f"Enumerate: site {msg.name!r} asks a person ({dist.question.question!r}); Enumerate enumerates the "
                "program's paths and can neither ask nor pause: run it under SMC, Forward, Importance or BestOfN, which pause for the "
                f"answer, or give it up front, e.g. SMC(..., answers={{{dist.question.name!r}: ...}})")
        if dist.is_async or dist.support is None:
            raise EnumerationError(
                f"Enumerate: sample site {msg.name!r} draws from {dist.describe()}, which has no finite support; "
                "use Importance or SMC for programs with LLM generations or continuous distributions")
        raise _Branch(msg.name, dist.enumerate_support())


class Enumerate(Policy):
    """Exact posterior and evidence by depth-first enumeration of every path.

    Each complete path τ has joint log mass log π(τ) + log Φ(τ), with π built from each site's own
    distribution (a custom proposal is ignored: enumeration needs no proposal). Then

        Z = Σ_τ π(τ)Φ(τ)   (exact `log_evidence`),     p(τ) = π(τ)Φ(τ)/Z   (exact particle weights).

    The program is re-executed once per node of the path tree; a path ends early at a failed
    guarantee or −∞ factor. Shaping factors are excluded: the target is unchanged by them.
    A path lost to an infrastructure failure is missing data (`_lost_mass`): the result is then
    not exact, and more than `max_lost_fraction` of the proposal mass lost stops the run.
    """

    max_paths: int = Field(1_000_000, gt=0)

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(0)
        current: dict[str, Any] = {}
        runner = ctx.runner(args, kwargs)
        runner.extra_handlers = lambda: [_FollowPath(current["path"])]
        particles: list = []
        lost: list[Any] = []
        stack: list[dict[str, tuple[Any, float]]] = [{}]
        executions = 0
        while stack:
            current["path"] = stack.pop()
            executions += 1
            if executions > self.max_paths:
                raise EnumerationError(f"Enumerate: more than max_paths={self.max_paths} executions; "
                                       "the program's path tree is too large to enumerate")
            try:
                seg = await runner.run(SegmentTask(stream=0))
            except _Branch as branch:
                for value, lp in reversed(branch.choices):
                    stack.append({**current["path"], branch.address: (value, lp)})
                continue
            ctx.diagnostics.account([seg])
            if seg.status == "lost":
                lost.append(seg)
            if seg.status != "finished":
                continue
            log_joint = seg.trace.proposal_log_prob + seg.trace.log_weight
            if log_joint > -math.inf:
                particles.append(particle_of(ctx, len(particles), seg, log_joint))
        lost_mass = self._lost_mass(ctx, lost)
        if not particles:
            raise ctx.diagnostics.no_survivors(ctx.policy_name, detail="every path has zero mass")
        log_w = np.array([p.log_weight for p in particles])
        log_z = logsumexp(log_w) - math.log1p(-lost_mass)
        return ctx.result(particles, log_z, exact=not lost,
                          extra={"executions": executions, "lost_mass": lost_mass})

    def _lost_mass(self, ctx: RunContext, lost: list) -> float:
        """π(lost) = Σ over the lost paths of the proposal mass of their prefix, checked against
        `max_lost_fraction` (`BackendUnavailable` above it).

        A lost path is missing data, as in every policy (docs/theory.md §3.4): the found paths are
        taken as representative of the mass that was not lost, so

            Z ≈ Σ_{finished τ} π(τ)Φ(τ) / (1 − π(lost)),

        the quantity the sampling policies' Ẑ (a mean over the particles not lost) estimates, and
        the result is no longer exact. It summed the found paths only and said exact=True: log Z
        fell by −log(1 − π(lost)), silently."""
        if not lost:
            return 0.0
        mass = min(1.0, math.fsum(math.exp(seg.trace.proposal_log_prob) for seg in lost))
        if mass > self.max_lost_fraction:
            last = lost[-1]
            raise BackendUnavailable(
                f"Enumerate: paths of proposal mass {mass:.4g} were lost to infrastructure failures "
                f"(max_lost_fraction={self.max_lost_fraction:g}); the last at {last.site}: {last.error}",
                site=last.site or "", last_error=last.error or "")
        return mass
