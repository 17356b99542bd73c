"""Probes of structured output: what the trace records and what a reply is read as."""

import policies
from pydantic import BaseModel

from agents import Agent, Scripted


class Verdict(BaseModel):
    verdict: str


def test_the_reply_recorded_is_the_one_accepted_after_a_retry():
    agent = Agent(name="j", backend=Scripted(["not json", '{"verdict": "yes"}']), output_schema=Verdict)

    async def program():
        return await agent.ask("judge")

    particle = policies.Importance(num_particles=1, seed=0).run(program).particles[0]
    replies = [e.content for e in particle.trace.events if e.type == "interact" and e.address == "j#0/reply"]
    assert particle.value == Verdict(verdict="yes")
    assert replies == ['{"verdict": "yes"}']  # was "not json": the trace's reply disagreed with the value
