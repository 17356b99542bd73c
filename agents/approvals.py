"""Approvals: a person decides whether a tool call runs (docs/human_in_the_loop.md).

    delete = tool(delete_file, requires_approval=True)                        # every call
    shell = tool(run, requires_approval=lambda tool, args: "rm" in args["cmd"])   # some calls
    fs = mcp_tools(command=[...], requires_approval=True)

Before such a call the agent asks a person (`swarm.human.ask` with an approval question named
"approve:<endpoint>", whose text holds the endpoint and the arguments): identical calls (same
endpoint, same arguments) from any number of particles are one pending question. The answer is

    true                                         run the call
    false  or  {"approved": false, "reason": ...}   do not: the call's result is
                                                 "refused by a human: <reason>", which the agent
                                                 reads in its next prompt like any tool result

The answer is recorded in the trace (a point-mass sample site `<call site>/approval`), so a replayed
or resumed particle reads it and a person is never asked twice; the refusal is the recorded result.
Answering by name ("approve:<endpoint>") approves or refuses every call to that endpoint, like the
OpenAI Agents SDK's `always_approve`; answering by question id decides that one call.
"""

from __future__ import annotations

import json
from typing import Any

from agents.tools import parse_arguments
from swarm.errors import SwarmError
from swarm.human import Question, ask

__all__ = ["APPROVAL_SCHEMA", "ApprovalRuleError", "needs_approval", "approval_question", "decision", "refusal_of"]

class ApprovalRuleError(SwarmError, TypeError):
    """A tool's `requires_approval` rule did not answer True or False, or raised (the run stops: a
    rule that cannot decide must not let calls through, nor kill particles as if the target had)."""


APPROVAL_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "boolean"},
        {"type": "object", "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string"}},
         "required": ["approved"], "additionalProperties": False},
    ],
}


def _arguments(arguments: Any) -> Any:
    """The call's arguments as the model wrote them, parsed (JSON text becomes an object)."""
    parsed, problem = parse_arguments(arguments)
    return arguments if problem is not None else parsed


def needs_approval(tool: Any, arguments: Any) -> bool:
    """Whether a person must approve this call of `tool` (its `requires_approval`)."""
    rule = tool.requires_approval
    if rule is True or rule is False:
        return rule
    try:
        decided = rule(tool, _arguments(arguments))
    except Exception as exc:  # noqa: BLE001 - a rule that cannot decide stops the run, named
        raise ApprovalRuleError(f"tool {tool.name!r}: requires_approval(tool, arguments) raised "
                                f"{type(exc).__name__}: {exc} (arguments {_arguments(arguments)!r})") from exc
    if not isinstance(decided, bool):
        raise ApprovalRuleError(f"tool {tool.name!r}: requires_approval(tool, arguments) must return a bool, "
                                f"got {type(decided).__name__} {decided!r}")
    return decided


def approval_question(tool: Any, arguments: Any) -> Question:
    """The question for a call: named after the endpoint, its text the endpoint and the arguments."""
    args = json.dumps(_arguments(arguments), sort_keys=True, default=str)
    return Question.make(f"approve:{tool.endpoint}", f"Allow the call {tool.endpoint} with arguments {args}?",
                         APPROVAL_SCHEMA, kind="approval", details={"endpoint": tool.endpoint, "arguments": args})


def decision(answer: Any) -> tuple[bool, str]:
    """(approved, reason) from an answer that fits `APPROVAL_SCHEMA`."""
    if isinstance(answer, bool):
        return answer, ""
    return bool(answer["approved"]), str(answer.get("reason") or "")


def refusal_of(site: str, agent: str, tool: Any, arguments: Any) -> str | None:
    """Ask for approval when the call needs it: None to run the call, else the refusal text that is
    its result. Raises `swarm.AwaitingHuman` while nobody has answered (the run pauses). A call whose
    arguments do not fit the tool's schema is not put to anyone: it does not run, and the agent reads
    "invalid arguments" (the rule, too, only ever sees arguments that fit)."""
    if tool.validated(arguments)[1] is not None or not needs_approval(tool, arguments):
        return None
    approved, reason = decision(ask(f"{site}/approval", approval_question(tool, arguments), sender=agent))
    return None if approved else f"refused by a human: {reason or 'no reason given'}"
