"""An LLM generation as a distribution, so `sample` can draw from it like from any other.

    draft = await sample("draft", writer.generate("Write a haiku about the sea."))

Drawing calls the agent's backend with a seed derived from the site's random stream (particle
stream and address), and records the completion with log q(completion) under the proposal it was
sampled from. With `target="base"` the site's model distribution is the base model at temperature
1, so a completion drawn at another temperature carries log p − log q into the particle's weight.
With a constraint (`agents.constraints`), the completion was drawn from the proposal renormalised
over the constraint, and the site's target is the unconstrained one times the constraint's
potential, so the weight gains the log-mass of the allowed tokens (docs/constraints.md); the
correction and whether it is exact, estimated or unavailable are recorded in info["constraint"].
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Literal

from agents.backends.base import GenerationRequest
from swarm.distributions import Distribution, Draw
from swarm.errors import SwarmError

if TYPE_CHECKING:
    from agents.agent import Agent


class GenerationError(SwarmError):
    """A generation cannot do what was asked of it (e.g. a log-probability of arbitrary text)."""


class Generation(Distribution):
    """The distribution of one LLM completion of `request` by `agent`'s backend."""

    is_async = True

    def __init__(self, agent: "Agent", request: GenerationRequest,
                 target: Literal["proposal", "base"] = "proposal") -> None:
        self.agent = agent
        self.request = request
        self.target = target

    @property
    def support(self) -> None:
        return None

    def describe(self) -> str:
        return f"Generation({self.agent.name})"

    def sample(self, rng: Any) -> Any:
        raise GenerationError(f"agent {self.agent.name!r}: an LLM generation is asynchronous; inside an "
                              "`async def` program write `await sample(name, agent.generate(...))`")

    def log_prob(self, value: Any) -> float:
        raise GenerationError(f"agent {self.agent.name!r}: the log-probability of arbitrary text under a "
                              "generation is not available (it needs teacher-forced scoring); generations "
                              "can be sampled and replayed, not conditioned on")

    async def sample_async(self, rng: Any) -> Draw:
        from agents.hosting import client_for, completion_info

        request = self.request.model_copy(update={"seed": rng.seed()})
        started = time.time_ns()
        completion = await client_for(self.agent).complete(request)
        info = completion_info(self.agent, request, completion, started, self.agent.backend_name())
        if completion.tool_calls:
            info["tool_calls"] = [c.model_dump() for c in completion.tool_calls]
        report = self._constraint_report(completion, info)
        target = None
        if self.target == "base":
            target = completion.base_log_prob
            if target is None:
                raise GenerationError(f"agent {self.agent.name!r}: target='base' needs base-model log-probabilities, "
                                      f"which backend {info['backend']!r} did not report for this request")
            if report is not None and report.weights != "unavailable":
                target = -math.inf if report.log_weight == -math.inf else target + report.log_potential
        elif report is not None and report.weights != "unavailable":
            target = completion.log_prob + report.log_weight
        return Draw(value=completion.text, log_prob=completion.log_prob, target_log_prob=target, info=info)

    def _constraint_report(self, completion: Any, info: dict[str, Any]) -> Any:
        """The constraint's weight correction, recorded in the sample event's info (never dropped:
        a backend that ignored the constraint is an error, not an unconstrained sample).

        Target "proposal": log p(site) = log q_C(text) + Σ log Z, the proposal restricted to the
        constraint (weight: Σ log Z). Target "base": log p(text) + log Φ(text)/Φ(prefix)."""
        if self.request.constraint is None:
            return None
        report = completion.constraint
        if report is None:
            raise GenerationError(f"agent {self.agent.name!r}: backend {info['backend']!r} did not apply the constraint "
                                  f"{self.request.constraint.describe()} (it does not support token-level constraints)")
        info["constraint"] = {**report.model_dump(), "log_weight": report.log_weight}
        return report
