"""An LLM generation as a distribution, so `sample` can draw from it like from any other.

    draft = await sample("draft", writer.generate("Write a haiku about the sea."))

Drawing calls the agent's backend with a seed derived from the site's random stream (particle
stream and address), and records the completion with log q(completion) under the proposal it was
sampled from. With `target="base"` the site's model distribution is the base model at temperature
1, so a completion drawn at another temperature carries log p − log q into the particle's weight.

Log-probabilities are asked of the backend (`GenerationRequest.log_q = "required"`) only when the
weight needs them: `target="base"`, or a policy that scores traces by log q and says so with
`run_scope()[NEEDS_LOG_Q] = True` (`SelfConsistency(length_normalized=True)`). The sample event's
info records `log_q` (the completion's `log_q_quality`: "exact", "estimated" or "absent") and
`tokens_generated` vs `tokens_kept` (a chunk's look-ahead beyond its boundary is generated, not
kept; kept is None when the backend returned no token pieces, i.e. without log-probabilities). A
weight that needs what the backend could not give (base log p missing; log q only estimated while
p ≠ q) raises `GenerationError` naming the agent and the setting at fault, never a silently wrong
weight.

With a constraint (`agents.constraints`), the completion was drawn from the proposal renormalised
over the constraint, and the site's target is the unconstrained one times the constraint's
potential, so the weight gains the log-mass of the allowed tokens (docs/constraints.md); the
correction and whether it is exact, estimated or unavailable are recorded in info["constraint"].

Native tool calls (a backend that returns them apart from the text: an OpenAI-compatible server
given the agent's tools) are appended to the drawn text in the `<tool_call>` protocol
(`agents.tools`), so the agent runs them and a replay reads them back from the recorded value.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Literal

from agents.backends.base import GenerationRequest
from agents.clients import client_for, completion_info
from agents.tools import with_native_calls
from swarm.distributions import Distribution, Draw
from swarm.errors import SwarmError
from swarm.effects import NEEDS_LOG_Q, run_scope

if TYPE_CHECKING:
    from agents.agent import Agent


class GenerationError(SwarmError):
    """A generation cannot do what was asked of it (e.g. a log-probability of arbitrary text)."""


class InvalidGenerationRequest(GenerationError, ValueError):
    """An agent was asked for a generation it cannot request: an unknown or invalid setting, a
    message without a known role or string content, a prompt that is not a string, a chat prompt
    and a raw prompt at once, or nothing to answer. A programming error, so it aborts the run: as an
    ordinary exception it would kill only the particles that reach it."""


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
        update: dict[str, Any] = {"seed": rng.seed()}
        if self.target == "base" or run_scope().get(NEEDS_LOG_Q):
            update["log_q"] = "required"
        request = self.request.replaced(**update)
        agent = self.agent
        started = time.time_ns()
        completion = await client_for(agent).complete(request)
        log_prob = completion.log_prob
        info = completion_info(agent, request, completion, started, agent.backend_name(), log_prob)
        report = None if self.request.constraint is None else self._constraint_report(completion, info)
        target = None
        if self.target == "base":
            target = self._base_log_prob(completion, info["backend"])
            if report is not None and report.weights != "unavailable":
                target = -math.inf if report.log_weight == -math.inf else target + report.log_potential
        elif report is not None and report.weights != "unavailable":
            target = log_prob + report.log_weight
        text = with_native_calls(completion.text, info["tool_calls"]) if completion.tool_calls else completion.text
        return Draw(text, log_prob, target, info)

    def _constraint_report(self, completion: Any, info: dict[str, Any]) -> Any:
        """The constraint's weight correction, recorded in the sample event's info (never dropped:
        a backend that ignored the constraint is an error, not an unconstrained sample).

        Target "proposal": log p(site) = log q_C(text) + Σ log Z, the proposal restricted to the
        constraint (weight: Σ log Z). Target "base": log p(text) + log Φ(text)/Φ(prefix)."""
        report = completion.constraint
        if report is None:
            raise GenerationError(f"agent {self.agent.name!r}: backend {info['backend']!r} did not apply the constraint "
                                  f"{self.request.constraint.describe()} (it does not support token-level constraints)")
        info["constraint"] = {**report.model_dump(), "log_weight": report.log_weight}
        return report

    def _base_log_prob(self, completion: Any, backend: str) -> float:
        """log p of the completion for target="base", or `GenerationError` when the weight
        log p − log q cannot be computed from what the backend reported."""
        target = completion.base_log_prob
        where = f"agent {self.agent.name!r} (target='base')"
        if target is None or completion.log_q_quality == "absent":
            raise GenerationError(f"{where} needs base-model log-probabilities, which backend {backend!r} did not "
                                  "report for this request")
        s = self.request.settings
        q_is_p = s.temperature == 1 and s.top_p == 1 and self.request.response_format is None
        if completion.log_q_quality == "estimated" and not q_is_p:  # with q = p an estimate cancels out
            raise GenerationError(
                f"{where}: backend {backend!r} reports only an estimate of log q at temperature={s.temperature:g}, "
                f"top_p={s.top_p:g}{', response_format' if self.request.response_format else ''}, so the weight "
                "log p - log q would be wrong; sample at temperature=1 and top_p=1 (then q = p), use a backend that "
                "reports proposal log-probabilities (reported_logprobs='proposal'), or LlamaCpp")
        return target
