"""The agent layer against the `Scripted` test double: what an agent call records, tools,
structured output, the response cache, and how generations behave under every policy."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from pydantic import BaseModel

import policies
import swarm
from agents import Agent, GenerationError, InvalidGenerationRequest, tool
from agents.backends.scripted import Scripted
from swarm import Bernoulli, factor, guarantee, sample
from tests.fake_backends import SeededEcho


def _writer_critic(backend_w, backend_c):
    writer = Agent(name="writer", system="You write.", backend=backend_w)
    critic = Agent(name="critic", system="You rate 1-10.", backend=backend_c)

    async def program(topic):
        draft = await writer.ask(f"Write about {topic}.")
        score = await critic.ask(draft, sender="writer")
        factor("critic", math.log(int(score) / 10))
        return draft

    return program


def test_an_ask_records_interacts_and_a_sample_with_logprobs():
    w = Scripted(["alpha beta", "gamma"])
    c = Scripted(lambda req: "7" if "alpha" in req.messages[-1].content else "3")
    r = policies.Importance(num_particles=6, seed=0).run(_writer_critic(w, c), "seas")
    trace = r.particles[0].trace
    kinds = [(e.type, e.address) for e in trace.events]
    assert kinds[0] == ("interact", "writer#0/request") and ("sample", "writer#0") in kinds
    assert ("sample", "critic#0") in kinds and kinds[-1][0] == "factor"
    gen = trace["writer#0"]
    assert gen.log_prob < 0 and gen.info["token_logprobs"] and gen.info["usage"]["output_tokens"] > 0
    assert gen.info["agent"] == "writer" and gen.info["backend"] == "scripted"
    msgs = trace.of_type("interact")
    assert (msgs[0].sender, msgs[0].receiver) == ("user", "writer")
    assert any(m.sender == "writer" and m.receiver == "critic" for m in msgs)
    # the weight is the critic's factor
    marg = r.marginal()
    assert set(marg) <= {"alpha beta", "gamma"}


def test_smc_over_agents_replays_without_calling_the_backend_again():
    w = Scripted(["alpha beta", "gamma"])
    c = Scripted(lambda req: "7" if "alpha" in req.messages[-1].content else "3")
    r = policies.SMC(num_particles=20, ess_threshold=1.0, seed=1).run(_writer_critic(w, c), "seas")
    # each particle lineage draws each site once: ≤ one writer call per initial particle, one critic
    # call per particle reaching the critic; replaying offspring must not call again
    assert w.calls == 20
    assert c.calls == 20
    assert r.diagnostics.llm_calls == 40 and r.diagnostics.tokens > 0


def test_enumerate_refuses_generations_with_a_clear_error():
    program = _writer_critic(Scripted(["x"]), Scripted(["5"]))
    with pytest.raises(swarm.EnumerationError, match="writer"):
        policies.Enumerate().run(program, "seas")


def test_generation_cannot_be_sampled_synchronously_or_scored():
    agent = Agent(name="a", backend=Scripted(["x"]))

    def program():
        return sample("g", agent.generate("hi"))

    with pytest.raises(swarm.AsyncInPlainProgramError, match="'g'.*async def"):
        policies.Importance(num_particles=1, seed=0).run(program)
    with pytest.raises(GenerationError):
        agent.generate("hi").log_prob("x")


def test_a_generation_sampled_without_await_stops_the_run_naming_the_site():
    """`text = sample(...)` without `await` in an async program: before, the particle's value was a
    coroutine object and the run "succeeded" with no LLM call; now the run stops naming the site,
    and the coroutine is closed (no "never awaited" RuntimeWarning)."""
    import gc
    import warnings

    backend = SeededEcho()
    calls: list = []
    backend.complete = _counting(backend.complete, calls)  # type: ignore[method-assign]
    agent = Agent(name="a", backend=backend)

    async def forgot_await():
        text = sample("draft", agent.generate("hi"))
        factor("f", 0.0)
        return text

    for policy in (policies.SMC(num_particles=4, seed=0), policies.Importance(num_particles=3, seed=0)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(swarm.UnawaitedSampleError, match="'draft'.*never awaited.*await sample\\('draft'"):
                policy.run(forgot_await)
            gc.collect()
        assert not [w for w in caught if "never awaited" in str(w.message)]
    assert calls == []

    async def awaits_later_and_concurrently():  # legal: created first, awaited after a factor; gathered
        pending = sample("first", agent.generate("one"))
        factor("f0", 0.0)
        first = await pending
        second, third = await asyncio.gather(sample("second", agent.generate("two")),
                                             sample("third", agent.generate("three")))
        factor("f1", 0.0)
        return first + second + third

    async def forgot_await_in_a_plate():  # a plate's scope: the handler stack, not the fused path
        async def replica():
            sample("vote", agent.generate("hi"))
            factor("f", 0.0)
        await swarm.plate("voters", 2, replica)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(swarm.UnawaitedSampleError, match=r"sample 'vote': .*never awaited"):
            policies.SMC(num_particles=2, seed=0).run(forgot_await_in_a_plate)
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]  # both replicas' coroutines closed

    async def returns_an_unawaited_ask():  # not a sample: the returned value is checked, under any stack
        factor("f", 0.0)
        return agent.ask("hi")

    with pytest.raises(swarm.UnawaitedSampleError, match="returned a coroutine object: an `await` is missing"):
        policies.SMC(num_particles=2, seed=0).run(returns_an_unawaited_ask)

    result = policies.SMC(num_particles=4, seed=0).run(awaits_later_and_concurrently)
    assert all(p.value.count("idea") == 3 for p in result.particles) and len(calls) == 12


def _counting(complete, calls):
    async def counted(request):
        calls.append(request.seed)
        return await complete(request)
    return counted


def test_a_plain_function_given_as_a_tool_is_refused_saying_to_decorate_it():
    from pydantic import ValidationError

    def lookup(city: str) -> str:
        return city

    with pytest.raises(ValidationError, match=r"tools\[1\] is the plain callable 'lookup': decorate it with `@agents.tool`"):
        Agent(name="a", backend=Scripted(["x"]), tools=[tool(lookup), lookup])
    assert [t.name for t in Agent(name="a", backend=Scripted(["x"]), tools=[tool(lookup)]).tools] == ["lookup"]


def test_generation_settings_given_to_agent_say_where_they_go():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"max_tokens, temperature: generation settings, not Agent fields; "
                                              r"give them as Agent\(settings=GenerationSettings\(max_tokens=..., "
                                              r"temperature=...\)\)"):
        Agent(name="a", backend=Scripted(["x"]), temperature=0.7, max_tokens=8)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Agent(name="a", backend=Scripted(["x"]), colour="blue")  # any other unknown field: pydantic's message


def test_tools_are_called_and_errors_come_back_as_results():
    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @tool
    def broken(x: str) -> str:
        """Always fails."""
        raise RuntimeError("kaput")

    replies = iter([
        '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>',
        '<tool_call>{"name": "broken", "arguments": {"x": "?"}}</tool_call>',
        "The answer is 5.",
    ])
    backend = Scripted(lambda req: next(replies))
    agent = Agent(name="solver", backend=backend, tools=[add, broken])

    async def program():
        return await agent.ask("What is 2 + 3?")

    r = policies.Forward(num_particles=1, seed=0).run(program)
    trace = r.particles[0].trace
    calls = [e for e in trace.of_type("interact") if e.kind == "tool_call"]
    results = [e for e in trace.of_type("interact") if e.kind == "tool_result"]
    assert [c.receiver for c in calls] == ["add", "broken"]
    assert results[0].content == "5" and results[1].content.startswith("error: RuntimeError: kaput")
    assert r.particles[0].value == "The answer is 5."
    assert "add" in backend.last_request.messages[0].content  # the text protocol is in the system prompt


def test_plain_function_tools_of_different_particles_run_at_once_in_worker_threads():
    """Two particles call a plain (blocking) tool that only returns once both are inside it (a
    barrier): in worker threads both get there; on the event loop's thread (`in_thread=False`, the
    control) the first call blocks the loop, the second never starts, and the barrier times out."""
    import threading

    def lookup_for(in_thread: bool, timeout_s: float):
        barrier = threading.Barrier(2, timeout=timeout_s)
        loop_threads: list[int] = []

        def lookup(city: str) -> str:
            """Weather of a city (blocks like an HTTP call)."""
            loop_threads.append(threading.get_ident())
            barrier.wait()
            return f"sunny in {city}"

        return tool(lookup, in_thread=in_thread), loop_threads

    def program_for(lookup):
        backend = Scripted(lambda req: "done." if req.messages[-1].role == "tool" else
                           '<tool_call>{"name": "lookup", "arguments": {"city": "Oslo"}}</tool_call>')
        agent = Agent(name="forecaster", backend=backend, tools=[lookup])

        async def program():
            reply = await agent.ask("Weather in Oslo?")
            factor("f", 0.0)
            return reply
        return program

    threaded, ran_on = lookup_for(in_thread=True, timeout_s=30)
    r = policies.SMC(num_particles=2, seed=0).run(program_for(threaded))
    results = [e.content for p in r.particles for e in p.trace.of_type("interact") if e.kind == "tool_result"]
    assert results == ["sunny in Oslo"] * 2
    assert threading.get_ident() not in ran_on

    inline, _ = lookup_for(in_thread=False, timeout_s=1)
    r = policies.SMC(num_particles=2, seed=0).run(program_for(inline))
    results = [e.content for p in r.particles for e in p.trace.of_type("interact") if e.kind == "tool_result"]
    assert results == ["error: BrokenBarrierError: "] * 2


def test_tool_with_bad_arguments_names_the_field():
    @tool
    def square(n: int) -> int:
        return n * n

    import asyncio

    out = asyncio.run(square.call({"n": "not a number"}))
    assert out.startswith("error: invalid arguments for square") and "'n'" in out


class Verdict(BaseModel):
    score: int
    reason: str


def test_structured_output_valid_object():
    agent = Agent(name="judge", backend=Scripted(['Sure: {"score": 8, "reason": "vivid"}']), output_schema=Verdict)

    async def program():
        v = await agent.ask("Rate it.")
        factor("score", float(v.score))
        return v.score

    r = policies.Importance(num_particles=3, seed=0).run(program)
    assert r.marginal() == {8: pytest.approx(1.0)}


def test_malformed_output_is_retried_then_rejects_the_particle():
    backend = Scripted(["not json at all", '{"score": "high"}', "still nothing"])
    agent = Agent(name="judge", backend=backend, output_schema=Verdict, max_output_retries=2)

    async def program():
        v = await agent.ask("Rate it.")
        factor("score", float(v.score))

    with pytest.raises(swarm.NoSurvivingParticles, match="judge#0/valid_output"):
        policies.Importance(num_particles=1, seed=0).run(program)
    assert backend.calls == 3  # first try + 2 retries


def test_malformed_then_fixed_output_succeeds_and_records_retries():
    backend = Scripted(["oops", '{"score": 4, "reason": "ok"}'])
    agent = Agent(name="judge", backend=backend, output_schema=Verdict)

    async def program():
        return (await agent.ask("Rate it.")).score

    r = policies.Forward(num_particles=1, seed=0).run(program)
    assert r.particles[0].value == 4
    assert "judge#0/retry1" in r.particles[0].trace


def test_cache_key_includes_the_seed_so_particles_are_independent():
    backend = Scripted(lambda req: f"seed {req.seed}")
    agent = Agent(name="a", backend=backend)

    async def program():
        return await agent.ask("hi")

    r = policies.Importance(num_particles=50, seed=0).run(program)
    assert len(set(r.values)) == 50 and backend.calls == 50


def test_temperature_and_base_target_weighting():
    backend = Scripted(["a b c"], logprob_per_token=-0.5)
    agent = Agent(name="a", backend=backend, target="base")

    async def program():
        return await sample("g", agent.generate("hi", temperature=0.5))

    r = policies.Importance(num_particles=2, seed=0).run(program)
    event = r.particles[0].trace["g"]
    assert event.target_log_prob is not None and event.info["temperature"] == 0.5


def test_agent_validation_names_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="name"):
        Agent(name="bad/name")
    with pytest.raises(InvalidGenerationRequest, match=r"agent 'a': settings\.max_tokens=0: Input should be greater"):
        Agent(name="a", backend=Scripted(["x"])).generate("hi", max_tokens=0)


def _asks(agent: Agent, bad: dict[str, Any]):
    """A program that makes the request `bad` on one branch only (x = True, about half the particles)."""
    async def program():
        x = sample("x", Bernoulli(0.5))
        if x:
            if "ask" in bad:
                await agent.ask(**bad["ask"])
            else:
                await sample("reply", agent.generate(**bad["generate"]))
        return x
    return program


BAD_REQUESTS = [
    ({"generate": {"prompt": "hi", "tempreature": 0.5}}, r"unknown generation setting 'tempreature'; the settings are"),
    ({"generate": {"prompt": "hi", "max_tokens": -1}}, r"settings\.max_tokens=-1: Input should be greater than 0"),
    ({"generate": {"prompt": "hi", "unit": "sentence"}}, r"settings\.unit='sentence': Input should be 'text', 'token'"),
    ({"generate": {"prompt": "hi", "history": [{"role": "usr", "content": "yo"}]}},
     r"messages\.0\.role='usr': Input should be 'system', 'user'"),
    ({"generate": {"prompt": "hi", "raw_prompt": "x"}}, r"generate\(\) got raw_prompt and prompt: .*give one or the other"),
    ({"generate": {}}, r"generate\(\) needs something to answer"),
    ({"ask": {"prompt": 42}}, r"ask\(\) needs a str prompt, got int 42"),
    ({"ask": {"prompt": "hi", "history": "previous chat"}}, r"history must be a list of ChatMessage .*got str"),
]


@pytest.mark.parametrize("bad, culprit", BAD_REQUESTS, ids=[b.split(":")[0][:30] for _, b in BAD_REQUESTS])
def test_a_bad_request_on_one_branch_aborts_the_run_naming_the_agent_and_field(bad, culprit):
    """Before, the pydantic ValidationError (or TypeError) was an ordinary exception: it killed the
    particles that took the branch and the run returned the others (marginal {False: 1.0}, no error);
    `raw_prompt` beside a chat prompt silently dropped the prompt, and a generation with nothing to
    answer was sent as an empty chat."""
    agent = Agent(name="w", backend=Scripted(["hello world"]))
    with pytest.raises(InvalidGenerationRequest, match=rf"agent 'w': .*{culprit}"):
        policies.SMC(num_particles=8, seed=0).run(_asks(agent, bad))


def test_the_requests_the_bad_ones_are_made_from_run():
    """The control for the test above: the same calls with the fault removed run on every branch."""
    agent = Agent(name="w", backend=Scripted(["hello world"]))
    for good in ({"generate": {"prompt": "hi", "temperature": 0.5, "unit": "word", "max_tokens": 3,
                               "history": [{"role": "user", "content": "yo"}]}},
                 {"generate": {"raw_prompt": "x"}}, {"ask": {"prompt": "hi", "history": []}}):
        result = policies.SMC(num_particles=8, seed=0).run(_asks(agent, good))
        assert set(result.marginal()) == {True, False}


def test_chunked_generation_resamples_between_words():
    """A sentence generated one word per step with a per-word guarantee: SMC keeps only particles
    whose every word satisfies the constraint, resampling between words."""
    sentence = "every good boy deserves fudge always"
    backend = Scripted(lambda req: sentence)
    agent = Agent(name="w", backend=backend)

    async def program():
        text = ""
        for i in range(4):
            word = await sample(f"word{i}", agent.generate("Say it.", prefix=text, unit="word"))
            text += word
            guarantee(f"short{i}", len(word.strip()) <= 8)
        return text

    r = policies.SMC(num_particles=4, seed=0).run(program)
    assert r.particles[0].value.split() == sentence.split()[:4]
    assert [s.step for s in r.diagnostics.steps] == [1, 2, 3, 4, 5]


def test_completion_info_records_a_kv_cache_report_only_when_the_completion_has_one():
    """`completion_info` asks each Completion class once whether it reports `kv_cache` (LlamaCpp's
    completions do, as a property); the report lands in the sample event's info, and a completion
    without one records none."""
    from agents.backends.base import Completion, GenerationRequest
    from agents.clients import completion_info

    class Cached(Completion):
        @property
        def kv_cache(self) -> dict[str, int]:
            return {"reused_tokens": 3, "prefilled_tokens": 1, "evictions": 0}

    agent = Agent(name="writer", backend=Scripted(["x"]))
    request = GenerationRequest(prompt="hi")
    plain = completion_info(agent, request, Completion(text="a"), 0, "scripted")
    cached = completion_info(agent, request, Cached(text="a"), 0, "scripted")
    assert "kv_cache" not in plain
    assert cached["kv_cache"] == {"reused_tokens": 3, "prefilled_tokens": 1, "evictions": 0}


def test_a_request_replaced_is_what_model_copy_gives_and_leaves_the_original_alone():
    from agents import constraints
    from agents.backends.base import ChatMessage, GenerationRequest, GenerationSettings

    chat = GenerationRequest(messages=[ChatMessage(role="user", content="hi")], assistant_prefix="The",
                             settings=GenerationSettings(max_tokens=4, temperature=0.7),
                             constraint=constraints.regex("[a-z]+"))
    raw = GenerationRequest(prompt="Q:", seed=1)
    for request, update in ((chat, {"seed": 7}), (chat, {"seed": 7, "log_q": "required"}), (raw, {"seed": None}),
                            (raw, {"prompt": "R:", "assistant_prefix": "x"}), (chat, {"messages": None, "prompt": "P"})):
        before = request.model_dump()
        fast, slow = request.replaced(**update), request.model_copy(update=update)
        assert type(fast) is type(slow) and fast == slow and fast.model_dump() == slow.model_dump()
        assert fast.model_fields_set == slow.model_fields_set and fast.model_dump_json() == slow.model_dump_json()
        assert request.model_dump() == before and fast is not request


def test_two_tools_of_one_name_are_refused_naming_both():
    """Before: the agent kept both and every call went to the first, silently."""
    from pydantic import ValidationError

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @tool(name="add")
    def add_one(a: int) -> int:
        """Add one."""
        return a + 1

    with pytest.raises(ValidationError, match=r"two tools are named 'add' \(function .*add and function .*add_one\): "
                                              r"the model could only call the first; rename one"):
        Agent(name="calc", tools=[add, add_one])


def test_a_call_to_a_tool_that_does_not_exist_tells_the_model_which_do():
    """The model's next turn can correct itself: the tool result lists the agent's tools."""
    @tool
    def lookup(word: str) -> str:
        """Look a word up."""
        return word.upper()

    replies = iter(['<tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>', "done"])
    agent = Agent(name="a", backend=Scripted(lambda request: next(replies)), tools=[lookup])

    async def program():
        return await agent.ask("go", name="turn")

    particle = policies.SMC(num_particles=1, seed=0).run(program).particles[0]
    (result,) = [e for e in particle.trace.events if e.address == "turn/call0/result" and e.type == "sample"]
    assert result.value == "error: no tool named 'search'; the tools are lookup"
