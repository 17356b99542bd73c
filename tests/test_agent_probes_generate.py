"""Probes of `Agent.generate`'s arguments: what would be silently dropped is refused, naming it."""

import pytest

from agents import Agent, InvalidGenerationRequest, Scripted

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("extra, named", [({"prompt": "What now?"}, "prompt"), ({"history": HI}, "history")])
def test_messages_with_a_prompt_or_history_beside_them_is_refused_naming_it(extra, named):
    agent = Agent(name="a", backend=Scripted(["ok"]))
    with pytest.raises(InvalidGenerationRequest, match=f"agent 'a': generate\\(\\) got messages and {named}"):
        agent.generate(messages=HI, **extra)  # the prompt / history used to be dropped unread


def test_messages_alone_is_the_whole_chat():
    agent = Agent(name="a", system="sys", backend=Scripted(["ok"]))
    assert [m.content for m in agent.generate(messages=HI).request.messages] == ["hi"]


def test_a_single_tool_given_for_the_list_says_to_put_it_in_one():
    from pydantic import ValidationError

    from agents import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    with pytest.raises(ValidationError, match=r"tools must be a list of tools, got the single Tool 'add': "
                                              r"write tools=\[add\]") as caught:
        Agent(name="a", tools=add)  # was six errors about tuples ('name', 'add'), ('description', '') ...
    assert caught.value.error_count() == 1


def test_a_chat_sent_to_a_completions_endpoint_stops_the_run():
    """A chat (what ask always sends) to OpenAICompatible(mode='completions'): a ValueError killed
    only the particles that asked, so a branch that asked looked impossible."""
    import policies
    from agents import OpenAICompatible
    from swarm import Bernoulli, sample

    agent = Agent(name="a", backend=OpenAICompatible("http://127.0.0.1:9/v1", "m", mode="completions"))

    async def program():
        x = sample("x", Bernoulli(0.5))
        if x:
            await agent.ask("hi")
        return x

    with pytest.raises(InvalidGenerationRequest, match="mode='completions'\\) needs GenerationRequest.prompt"):
        policies.SMC(num_particles=8, seed=0).run(program)


def test_a_positional_agent_argument_says_to_use_keywords():
    with pytest.raises(TypeError, match=r"Agent takes keyword arguments only, e.g. Agent\(name='writer', system=...\)"):
        Agent("writer")  # was "BaseModel.__init__() takes 1 positional argument but 2 were given"


def test_a_bad_history_message_is_named_by_its_place_in_the_history():
    agent = Agent(name="a", system="You answer.", backend=Scripted(["ok"]))
    history = [{"role": "user", "content": "fine"}, {"role": "bot", "content": "hi"}]
    with pytest.raises(InvalidGenerationRequest, match=r"agent 'a': history\[1\]: messages\.2\.role='bot'"):
        agent.generate("next", history=history)  # was "messages.2.role" alone, shifted by the system prompt


def test_an_openai_history_with_a_tool_calling_assistant_message_is_read():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": "c1", "content": "done"}]
    messages = Agent(name="a", backend=Scripted(["ok"])).generate("next", history=history).request.messages
    assert messages[1].content == "" and messages[1].tool_calls == [call]  # was "content=None: a valid string"
    with pytest.raises(InvalidGenerationRequest, match="content=None"):
        Agent(name="a", backend=Scripted(["ok"])).generate("next", history=[{"role": "user", "content": None}])
