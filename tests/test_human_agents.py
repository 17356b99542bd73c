"""Approvals (`agents.approvals`): a tool that requires approval asks a person before each call.

The model is the `Scripted` TEST DOUBLE in the fast tests (the tool calls it writes are fixed; the
engine, the policies, the checkpoints and the tools are real); the last test has the embedded
SmolLM2 model call a real MCP server's tool whose approval is refused, and reads the refusal in
the prompt of the model's next generation."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import policies
from agents import Agent, GenerationSettings, mcp_tools, tool
from agents.approvals import ApprovalRuleError
from agents.backends.scripted import Scripted
from agents.mcp import close_all
from swarm import InvalidAnswerError, factor
from tests.mcp_servers.harness import WORKED_EXAMPLES, CallLog, calc_stdio


def make_agent(calls: list[str], rule=True) -> Agent:
    @tool(requires_approval=rule)
    def delete(path: str) -> str:
        "Delete a file."
        calls.append(path)
        return f"deleted {path}"

    def reply(request):  # TEST DOUBLE: half the particles (by their seed) ask to delete /etc/passwd
        last = request.messages[-1]
        if last.role == "tool":
            return f"Done: {last.content}"
        path = "/etc/passwd" if request.seed % 2 else "/tmp/scratch"
        return f'<tool_call>{{"name": "delete", "arguments": {{"path": "{path}"}}}}</tool_call>'

    return Agent(name="ops", backend=Scripted(reply), tools=[delete], hosting="local")


def make_program(agent: Agent):
    async def program():
        reply = await agent.ask("Clean up.", name="clean")
        factor("tidy", 0.5 if "deleted" in reply else 0.0)
        factor("later", 0.0)  # one more step: offspring of resampling replay the call
        return reply
    return program


def test_identical_approvals_are_asked_once_and_a_rule_asks_only_for_its_calls(tmp_path):
    calls: list[str] = []
    agent = make_agent(calls, rule=lambda t, args: args["path"].startswith("/etc"))
    result = policies.SMC(num_particles=16, seed=0, checkpoint=tmp_path).run(make_program(agent))
    assert result.status == "waiting"
    (question,) = result.pending  # sixteen particles, one question: same endpoint, same arguments
    assert question.kind == "approval" and question.name == "approve:delete"
    assert question.details == {"endpoint": "delete", "arguments": '{"path": "/etc/passwd"}'}
    asking = len(question.particles)
    assert 0 < asking < 16
    assert calls == ["/tmp/scratch"] * (16 - asking)  # the rule let the others through, unasked


def test_a_refusal_is_the_calls_result_the_agent_reads_it_and_the_tool_never_runs(tmp_path):
    calls: list[str] = []
    program = make_program(make_agent(calls))
    policy = policies.SMC(num_particles=8, seed=1, ess_threshold=1.0, checkpoint=tmp_path)
    waiting = policy.run(program)
    assert [q.name for q in waiting.pending] == ["approve:delete"] * len(waiting.pending)
    answers = {q.id: {"approved": False, "reason": "not on a Friday"} for q in waiting.pending}
    done = policy.resume(tmp_path, program, answers=answers)
    assert done.status == "finished" and calls == []
    assert set(done.values) == {"Done: refused by a human: not on a Friday"}
    for p in done.particles:
        result = p.trace["clean/call0/result"]
        assert result.value == "refused by a human: not on a Friday" and result.info["refused"] is True
        assert p.trace["clean/call0/approval"].value == {"approved": False, "reason": "not on a Friday"}


def test_an_approved_call_runs_once_per_particle_history(tmp_path):
    calls: list[str] = []
    program = make_program(make_agent(calls))
    policy = policies.SMC(num_particles=8, seed=1, ess_threshold=1.0, checkpoint=tmp_path)
    waiting = policy.run(program)
    done = policy.resume(tmp_path, program, answers={"approve:delete": True})  # by name: every such call
    assert done.status == "finished"
    assert sum(s.resampled for s in done.diagnostics.steps) >= 1
    assert len(calls) == 8  # one per original particle: offspring replayed the recorded result
    asked = {json.loads(q.details["arguments"])["path"]: len(q.particles) for q in waiting.pending}
    assert Counter(calls) == asked  # each particle's own call, approved once by name
    reference = policies.SMC(num_particles=8, seed=1, ess_threshold=1.0, answers={"approve:delete": True}).run(program)
    assert [(p.id, p.value, p.log_weight) for p in reference.particles] == \
           [(p.id, p.value, p.log_weight) for p in done.particles]


def test_a_bad_approval_answer_is_refused_naming_the_question(tmp_path):
    program = make_program(make_agent([]))
    policy = policies.SMC(num_particles=4, seed=0, checkpoint=tmp_path)
    policy.run(program)
    with pytest.raises(InvalidAnswerError, match=r"answer to 'approve:delete' \(id [0-9a-f]+\) refused"):
        policy.resume(tmp_path, program, answers={"approve:delete": "maybe"})
    with pytest.raises(InvalidAnswerError, match=r"approve:delete.*Additional properties"):
        policy.resume(tmp_path, program, answers={"approve:delete": {"approved": True, "why": "x"}})


def test_a_rule_that_does_not_decide_stops_the_run_naming_the_tool():
    with pytest.raises(ValueError, match="requires_approval"):  # neither a bool nor a callable
        make_agent([], rule="yes")
    program = make_program(make_agent([], rule=lambda t, args: "yes"))
    with pytest.raises(ApprovalRuleError, match=r"tool 'delete': requires_approval\(tool, arguments\) must return a bool"):
        policies.SMC(num_particles=2, seed=0).run(program)


# -- the embedded model and a real MCP server (WORKED_EXAMPLES: the harness's) ---------------------------
@pytest.mark.llm
@pytest.mark.server
def test_a_refused_mcp_call_reaches_the_embedded_models_next_prompt(tmp_path):
    log = CallLog(tmp_path / "calls.log")
    try:
        tools = mcp_tools(**calc_stdio(log), include=["add"], timeout_s=60, requires_approval=True)
        agent = Agent(name="solver", system="You answer sums by calling the add tool.", tools=tools,
                      max_tool_rounds=1, settings=GenerationSettings(temperature=0.7, max_tokens=40))

        async def program():
            return await agent.ask("What is 7 plus 5?", history=WORKED_EXAMPLES, name="sum")

        policy = policies.Forward(num_particles=2, seed=0, checkpoint=tmp_path / "run")
        waiting = policy.run(program)
        assert waiting.status == "waiting", [p.value for p in waiting.particles]
        assert {q.name for q in waiting.pending} == {"approve:mcp:calc/add"}
        answers = {q.id: {"approved": False, "reason": "use mental arithmetic"} for q in waiting.pending}
        done = policy.resume(tmp_path / "run", program, answers=answers)
    finally:
        close_all()
    assert done.status == "finished" and log.calls() == []  # the server never saw a refused call
    refusal = "refused by a human: use mental arithmetic"
    refused = [p for p in done.particles if "sum/call0/approval" in p.trace]
    assert refused and len(refused) == sum(len(q.particles) for q in waiting.pending)
    for p in refused:
        assert p.trace["sum/call0/result"].value == refusal
        prompt = p.trace["sum/turn1"].info["prompt"]  # the model's next generation
        assert prompt[-1]["role"] == "tool" and prompt[-1]["content"] == refusal
