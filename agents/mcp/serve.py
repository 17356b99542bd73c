"""A program run under a policy, served as an MCP tool (`swarm mcp FILE.py[:program]`).

    swarm mcp tests/mcp_servers/dice_program.py:program --policy smc --particles 200 --seed 0   # stdio

The server has one tool, named after the program, whose arguments are the program's parameters
(the input schema comes from its signature and annotations, as for any typed tool). A call runs
`policy.run_async(program, **arguments)` and answers with the weighted result: the most probable
value, the answer marginal (top values), the evidence estimate log Ẑ, the ESS and the policy.
A run that fails (e.g. no surviving particles) is the tool's error result, with the message; so is
a run that would wait for a person (`swarm.ask_human`, approvals), naming the questions.
With a fixed `--seed`, the same arguments give the same answer.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from policies.pausing import cannot_wait
from swarm.errors import SwarmError

TOP_VALUES = 10


class AnswerShare(BaseModel):
    value: Any
    """The program's return value (as JSON when it is a JSON scalar, else its repr)."""
    probability: float


class WeightedAnswer(BaseModel):
    """What a served program answers: the posterior over its return values, estimated by the policy."""

    answer: Any = Field(description="the most probable return value")
    marginal: list[AnswerShare] = Field(description=f"the {TOP_VALUES} most probable return values")
    log_evidence: float | None = Field(description="log Z estimate (null when not finite)")
    ess: float | None = Field(description="effective sample size of the final population")
    num_particles: int
    policy: str


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def weighted_answer(result: Any, policy_name: str) -> WeightedAnswer:
    """A `Result` as a `WeightedAnswer`."""
    marginal = list(result.marginal().items())[:TOP_VALUES]
    shares = [AnswerShare(value=_plain(v), probability=float(p)) for v, p in marginal]
    return WeightedAnswer(answer=shares[0].value if shares else None, marginal=shares,
                          log_evidence=_finite(result.log_evidence), ess=_finite(result.ess),
                          num_particles=len(result.particles), policy=policy_name)


def program_server(program: Callable[..., Any], policy: Any, *, name: str | None = None,
                   description: str | None = None) -> MCPServer:
    """An MCP server whose one tool runs `program` under `policy` (see the module docstring)."""
    tool_name = name or getattr(program, "__name__", "program")
    signature = inspect.signature(program)
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(f"program {tool_name!r}: parameter {param.name!r} cannot be a tool argument "
                            "(use plain named parameters)")
    policy_name = type(policy).__name__

    async def run_program(**arguments: Any) -> WeightedAnswer:
        try:
            result = await policy.run_async(program, **arguments)
        except SwarmError as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}") from exc
        if getattr(result, "status", "finished") == "waiting":
            raise ToolError(cannot_wait(result, policy))
        return weighted_answer(result, policy_name)

    run_program.__name__ = run_program.__qualname__ = tool_name
    run_program.__signature__ = signature.replace(return_annotation=WeightedAnswer)  # type: ignore[attr-defined]
    doc = inspect.getdoc(program) or ""
    summary = description or (doc.split("\n\n")[0] if doc else f"Runs the program {tool_name}.")
    server = MCPServer(f"swarm-{tool_name}", log_level="WARNING",
                       instructions=f"{tool_name}: a probabilistic program answered by {policy_name} inference.")
    server.add_tool(run_program, name=tool_name,
                    description=f"{summary} Answers with the posterior over its return values "
                                f"(marginal, log Z, ESS) estimated by {policy_name}.",
                    structured_output=True)
    return server
