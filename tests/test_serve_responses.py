"""`POST /v1/responses` end to end: a real `swarm serve` on 127.0.0.1 and the official `openai`
client's Responses API (`client.responses.create`, `stream=True` and the `client.responses.stream`
helper). The run behind it is the chat completion's: the same request gives the same answer, log Ẑ
and usage; the served program and its TEST DOUBLE backend are tests/serve_fixtures.py's."""

from __future__ import annotations

import re

import openai
import pytest

from tests.serve_fixtures import REPO, run_server, satisfies_guarantee

pytestmark = pytest.mark.server

MODEL = "serve_fixtures:program"
TARGET = str(REPO / "tests" / "serve_fixtures.py")
HI = [{"role": "user", "content": "Write a sentence."}]


@pytest.fixture(scope="module")
def client():
    with run_server(TARGET, "--stream-text", "committed", "--arg", "letter=c") as (url, _, _):
        yield openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)


def test_a_response_is_the_chat_completions_answer_with_its_usage_and_run(client):
    for seed in (1, 4):
        chat = client.chat.completions.create(model=MODEL, messages=HI, seed=seed)
        response = client.responses.create(model=MODEL, input=HI[0]["content"], extra_body={"seed": seed})
        assert response.status == "completed" and response.id.startswith("resp_")
        assert response.output_text == chat.choices[0].message.content and satisfies_guarantee(response.output_text, "c")
        (item,) = response.output
        assert item.type == "message" and item.role == "assistant" and item.content[0].type == "output_text"
        assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == \
            (chat.usage.prompt_tokens, chat.usage.completion_tokens, chat.usage.total_tokens)
        run = response.model_extra["swarm"]
        assert run["log_evidence"] == pytest.approx(chat.swarm["log_evidence"], abs=1e-12)
        assert re.fullmatch(r"[0-9a-f]{32}", run["trace_id"]) and run["trace_id"] != chat.swarm["trace_id"]
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Write a "}, {"type": "input_text", "text": "sentence."}]}]
    assert client.responses.create(model=MODEL, input=items, instructions="Be brief.",
                                   extra_body={"seed": 4}).output_text == response.output_text


def test_a_streamed_response_sends_openais_events_and_the_same_answer(client):
    plain = client.responses.create(model=MODEL, input="Write a sentence.", extra_body={"seed": 4})
    events = list(client.responses.create(model=MODEL, input="Write a sentence.", stream=True, extra_body={"seed": 4}))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    steps = [e.response.model_extra["swarm"] for e in events[2:] if e.type == "response.in_progress"]
    assert [s["step"] for s in steps] == list(range(1, plain.model_extra["swarm"]["steps"] + 1))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == events[-4].text == plain.output_text == "A dog runs far."
    first_step = kinds.index("response.in_progress", 2)
    assert kinds.index("response.output_text.delta") < kinds.index("response.in_progress", first_step + 1)  # text committed early
    assert events[-1].response.output_text == plain.output_text and events[-1].response.usage.total_tokens > 0
    with client.responses.stream(model=MODEL, input="Write a sentence.", extra_body={"seed": 4}) as stream:
        final = stream.get_final_response()
    assert final.output_text == plain.output_text and final.status == "completed"


def test_what_the_responses_api_cannot_serve_is_a_400_naming_it(client):
    cases = [
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": "4"}]}, "input.0.type", "'function_call_output'"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input.0.content.0",
         "'input_image'"),
        ({"input": [{"role": "robot", "content": "hi"}]}, "input.0.role", "'robot'"),
        ({"input": []}, "input", "at least one message"),
        ({"input": "hi", "tools": [{"type": "function", "name": "f"}]}, "tools", "not supported"),
        ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id", "not supported"),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens", "greater than 0"),
        ({"input": "hi", "swarm": {"arguments": {"colour": 1}}}, "swarm.arguments.colour", "unknown program argument"),
        ({"input": "hi", "messages": [{"role": "user", "content": "other"}]}, "messages", "gives 'input'"),
        ({"input": "hi", "n": 2}, "n", "a chat-completions field"),
    ]
    for fields, param, words in cases:
        with pytest.raises(openai.BadRequestError) as bad:
            client.responses.create(model=MODEL, **{k: v for k, v in fields.items() if k in ("input", "tools")},
                                    extra_body={k: v for k, v in fields.items() if k not in ("input", "tools")})
        assert bad.value.body["param"] == param and words in bad.value.message, (fields, bad.value.body)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="gpt-4o", input="hi")
    assert missing.value.body["code"] == "model_not_found"
    ignored = client.responses.create(model=MODEL, input="hi", metadata={"k": "v"}, store=False, extra_body={"seed": 1})
    assert ignored.model_extra["swarm"]["ignored_fields"] == ["metadata", "store"] and ignored.metadata == {"k": "v"}


def test_a_run_without_an_answer_fails_the_response_plainly_and_in_the_stream(client):
    """Every sentence has an "a": no particle survives. Plain: a 422 error object; streamed (the
    status line was sent already): an `error` event, then `response.failed` with the same error."""
    no_a = {"seed": 1, "swarm": {"arguments": {"letter": "a"}}}
    with pytest.raises(openai.UnprocessableEntityError) as failed:
        client.responses.create(model=MODEL, input="Write a sentence.", extra_body=no_a)
    assert failed.value.body["code"] == "no_surviving_particles"
    events = list(client.responses.create(model=MODEL, input="Write a sentence.", stream=True, extra_body=no_a))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2].code == "no_surviving_particles" and events[-1].response.status == "failed"
    assert events[-1].response.error.code == "no_surviving_particles"
