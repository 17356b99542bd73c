"""Edge cases of people in the loop: approval rules given what a model really writes, and pauses,
resumes and answers used the wrong way. The model is the `Scripted` TEST DOUBLE (the tool calls it
writes are fixed); the engine, the policies, the checkpoints and the tools are real."""

from __future__ import annotations

import pytest

import policies
from agents import Agent, tool
from agents.approvals import ApprovalRuleError
from agents.backends.scripted import Scripted
from swarm import Bernoulli, ask_human, factor, guarantee, sample
from swarm.errors import AsyncInPlainProgramError, PrimitiveUsageError, UnawaitedSampleError
from swarm.human import InvalidAnswerError


def deleting_agent(arguments: str, rule, calls: list[str]) -> Agent:
    """An agent whose model asks once for `delete` with these arguments (JSON text), then replies."""

    @tool(requires_approval=rule)
    def delete(path: str) -> str:
        """Delete a file."""
        calls.append(path)
        return f"deleted {path}"

    def reply(request):  # TEST DOUBLE
        last = request.messages[-1]
        if last.role == "tool":
            return f"Done: {last.content}"
        return f'<tool_call>{{"name": "delete", "arguments": {arguments}}}</tool_call>'

    return Agent(name="ops", backend=Scripted(reply), tools=[delete], hosting="local")


def cleaning(agent: Agent):
    async def program():
        reply = await agent.ask("Clean up.", name="clean")
        factor("f", 0.0)
        return reply
    return program


def test_a_call_with_invalid_arguments_is_answered_to_the_model_without_asking_anyone(tmp_path):
    """Before the fix a person was asked to approve `delete` with `{"path": 5}` or `{}` (the run
    paused), and only after the approval did the agent read "invalid arguments"."""
    calls: list[str] = []
    for arguments in ('{"path": 5}', "{}"):
        agent = deleting_agent(arguments, True, calls)
        result = policies.SMC(num_particles=3, seed=0, checkpoint=tmp_path / arguments).run(cleaning(agent))
        assert result.status == "finished" and not result.pending
        for p in result.particles:
            assert p.value.startswith("Done: error: invalid arguments for delete: 'path': ")
            assert not [e for e in p.trace.events if e.address.endswith("/approval")]
    assert calls == []


def test_a_rule_that_fails_on_the_models_arguments_stops_the_run_naming_the_tool():
    """A rule that raises cannot decide, like one that returns a non-bool: the run stops with
    `ApprovalRuleError` naming the tool (before the fix its KeyError killed every particle, as if
    the target had ruled them out: 'KeyError after clean/call0' killed 2)."""
    calls: list[str] = []
    agent = deleting_agent('{"path": "/etc/x"}', lambda t, args: args["file"].startswith("/etc"), calls)
    with pytest.raises(ApprovalRuleError, match=r"tool 'delete': requires_approval\(tool, arguments\) raised "
                                                r"KeyError: 'file'"):
        policies.SMC(num_particles=2, seed=0).run(cleaning(agent))
    assert calls == []


def test_a_rule_sees_only_arguments_that_fit_the_schema():
    calls: list[str] = []
    seen: list[dict] = []

    def rule(t, args):
        seen.append(args)
        return args["path"].startswith("/etc")

    result = policies.SMC(num_particles=2, seed=0).run(cleaning(deleting_agent('{"file": "/etc/x"}', rule, calls)))
    assert seen == [] and calls == [] and result.status == "finished"
    result = policies.SMC(num_particles=2, seed=0).run(cleaning(deleting_agent('{"path": "/tmp/x"}', rule, calls)))
    assert seen == [{"path": "/tmp/x"}] * 2 and calls == ["/tmp/x"] * 2


# -- ask_human without await ------------------------------------------------------------------------
def _keep_plain():
    x = sample("x", Bernoulli(0.5))
    answer = ask_human("keep", f"Keep {x}?", schema={"enum": ["yes", "no"]})  # the coroutine, not the answer
    guarantee("kept", answer == "yes" or x == 1)
    return x


async def _keep_forgot_await():
    x = sample("x", Bernoulli(0.5))
    answer = ask_human("keep", f"Keep {x}?", schema={"enum": ["yes", "no"]})  # no await
    factor("kept", 0.0 if answer == "yes" else -1.0)  # (before the fix: always -1, silently)
    return x


def test_ask_human_in_a_plain_program_says_to_use_ask_human_sync(tmp_path):
    """Before the fix nobody was asked: `answer` was a coroutine object, the run "finished" with
    every particle whose x was False killed, and Python warned "never awaited" at exit."""
    with pytest.raises(AsyncInPlainProgramError, match=r"ask_human 'keep'.*plain `def` program.*ask_human_sync"):
        policies.SMC(num_particles=10, seed=0, checkpoint=tmp_path).run(_keep_plain)


def test_ask_human_without_await_in_an_async_program_is_named():
    with pytest.raises(UnawaitedSampleError, match=r"ask_human 'keep': the awaitable `ask_human` returned was never "
                                                   r"awaited, so nobody was asked .*write `await ask_human\('keep', \.\.\.\)`"):
        policies.SMC(num_particles=10, seed=0, answers={"keep": "yes"}).run(_keep_forgot_await)


def test_a_malformed_approval_answer_says_what_an_approval_answer_is(tmp_path):
    """jsonschema's own message for the approval schema (a oneOf) is only "'yes' is not valid under
    any of the given schemas"; the refusal now says what fits."""
    calls: list[str] = []
    agent = deleting_agent('{"path": "/etc/x"}', True, calls)
    policy = policies.SMC(num_particles=2, seed=0, checkpoint=tmp_path)
    assert policy.run(cleaning(agent)).status == "waiting"
    with pytest.raises(InvalidAnswerError, match=r"answer to 'approve:delete' .* an approval is answered true, false "
                                                 r"or \{\"approved\": false, \"reason\": \"...\"\}"):
        policy.resume(tmp_path, cleaning(agent), answers={"approve:delete": "yes"})
    assert calls == []


# -- one question name asked in a loop ------------------------------------------------------------------
async def _reviewed_loop():
    total = 0
    for t in range(3):
        x = sample(f"x{t}", Bernoulli(0.5))
        ok = await ask_human("review", f"Keep {x}?", schema=bool, site=f"review{t}")
        factor(f"f{t}", 0.0 if ok or x else -1.0)
        total += int(x)
    return total


def test_one_question_name_asked_at_many_sites_is_answered_once_by_name(tmp_path):
    """A particle asks each site once, and the site was the name: a loop had to name its questions
    review0, review1, ... and answer each. `site=` keeps one name for all of them."""
    policy = policies.SMC(num_particles=30, seed=0, ess_threshold=0.9)
    waiting = policy.model_copy(update={"checkpoint": tmp_path}).run(_reviewed_loop)
    assert waiting.status == "waiting" and {q.name for q in waiting.pending} == {"review"}
    done = policy.resume(tmp_path, _reviewed_loop, answers={"review": False})
    assert done.status == "finished"  # the later sites were answered by the name, without pausing again
    reference = policy.model_copy(update={"answers": {"review": False}}).run(_reviewed_loop)
    assert [(p.id, p.value, p.log_weight) for p in done.particles] == \
           [(p.id, p.value, p.log_weight) for p in reference.particles]
    assert [e.address for e in reference.particles[0].trace.events if e.type == "sample" and "review" in e.address] \
        == ["review0", "review1", "review2"]
    with pytest.raises(PrimitiveUsageError, match="ask_human 'review': site must be a non-empty string"):
        policies.Forward(num_particles=1, seed=0).run(_bad_site)


async def _bad_site():
    return await ask_human("review", "?", site="")
