"""Probes of structured output: what the trace records and what a reply is read as."""

import policies
from pydantic import BaseModel, RootModel

from agents import Agent, Scripted
from agents.structured import parse_output, schema_instructions


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


def test_braces_in_prose_before_the_object_do_not_hide_it():
    obj, problem = parse_output('Use the {verdict} field: {"verdict": "yes"}', Verdict)
    assert (obj, problem) == (Verdict(verdict="yes"), None)  # was: "key must be a string" from "{verdict}"


def test_an_example_object_before_the_answer_does_not_hide_it():
    assert parse_output('Like {"x": 1}. Answer: {"verdict": "no"}', Verdict) == (Verdict(verdict="no"), None)


def test_a_json_object_that_does_not_match_is_the_problem_reported():
    obj, problem = parse_output('{oops} {"verdict": 3}', Verdict)
    assert obj is None and problem == "the JSON does not match Verdict: verdict: Input should be a valid string"
    assert parse_output("no json here", Verdict) == (None, "the reply contains no JSON object")


class Numbers(RootModel[list[int]]):
    pass


def test_a_root_model_schema_reads_a_json_list():
    assert parse_output("Here: [1, 2]", Numbers) == (Numbers([1, 2]), None)  # was: "contains no JSON object"
    assert "single JSON value" in schema_instructions(Numbers)
    assert parse_output("none", Numbers) == (None, "the reply contains no JSON value")
    assert parse_output("7", RootModel[int]) == (RootModel[int](7), None)


def test_a_generic_schema_is_named_as_openai_allows_in_response_format():
    from typing import Generic, TypeVar

    from agents.structured import response_format

    T = TypeVar("T")

    class Page(BaseModel, Generic[T]):
        items: list[T]

    assert response_format(Page[int])["json_schema"]["name"] == "Page_int"  # was "Page[int]": a 400
    assert response_format(Numbers)["json_schema"]["name"] == "Numbers"


def test_an_output_schema_without_a_json_schema_is_refused_by_the_agent():
    import pytest
    from pydantic import ConfigDict, ValidationError

    class Opaque:
        pass

    class Holder(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        thing: Opaque

    with pytest.raises(ValidationError, match=r"output_schema\n.*Holder has no JSON schema to show the model"):
        Agent(name="a", output_schema=Holder)  # was accepted; every ask then killed its particle


def test_an_object_nested_in_the_reply_is_not_read_as_the_answer():
    """A reply that echoes the schema holds {"answer": ...} inside "properties": not an answer
    (SmolLM2 wrote exactly this)."""
    class Answer(BaseModel):
        answer: str

    echoed = '{"properties": {"answer": "answer"}}, {"title": "x"}'
    obj, problem = parse_output(echoed, Answer)
    assert obj is None and problem.startswith("the JSON does not match Answer: answer: Field required")
