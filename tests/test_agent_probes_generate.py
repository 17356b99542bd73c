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
