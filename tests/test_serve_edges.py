"""`swarm serve` at its edges, as a demanding user of the OpenAI API drives it: a real server on
127.0.0.1 (a subprocess, behind an API key), the official `openai` client and raw HTTP (aiohttp).

The served program is the TEST DOUBLE sentence writer of `tests/serve_fixtures.py` (no model).
Each test here is the regression test of a bug found by probing the server.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest

from tests.serve_fixtures import REPO, keyed_server, run_server

pytestmark = pytest.mark.server

MODEL = "serve_fixtures:program"
KEY = "sk-serve-edges-0123456789abcdef"
TARGET = str(REPO / "tests" / "serve_fixtures.py")
HI = [{"role": "user", "content": "Write a sentence."}]
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server():
    """One server for the module: 12 particles, an API key, the access log on (the default)."""
    with keyed_server("SERVE_EDGES_KEY", KEY) as served:
        yield served


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0], api_key=KEY, max_retries=0, timeout=60)


def http(server, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one raw request (`body`: bytes as they are, else JSON)."""

    async def go():
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        async with aiohttp.ClientSession() as session:
            async with session.request(method, server[0].removesuffix("/v1") + path, data=data,
                                       headers={**AUTH, **(headers or {})}) as response:
                return response.status, dict(response.headers), await response.read()

    return asyncio.run(go())


def test_the_access_log_works_behind_an_api_key(client, server):
    """With a key, the log's secret masking must not break uvicorn's access lines (it made every
    one a '--- Logging error ---' traceback: the masking dropped the arguments the line is built from)."""
    client.chat.completions.create(model=MODEL, messages=HI, seed=1)
    http(server, "GET", f"/v1/models?key={KEY}")
    log = server[1].read_text()
    assert "Logging error" not in log and "Traceback" not in log
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in log
    assert '"GET /v1/models?key=********** HTTP/1.1" 200' in log and KEY not in log


def test_every_streamed_choice_is_introduced_with_the_assistant_role(client):
    """n > 1 streamed: OpenAI opens each choice with a `delta.role`; only choice 0 had one, so the
    openai client assembled choices 1.. with role None."""
    with client.chat.completions.stream(model=MODEL, messages=HI, n=3, seed=1) as stream:
        final = stream.get_final_completion()
    assert len(final.choices) == 3
    assert [c.message.role for c in final.choices] == ["assistant"] * 3


def test_null_n_and_stream_mean_their_defaults(client, server):
    """OpenAI takes `"n": null` and `"stream": null` as the defaults (clients that send every field
    do); they were 400s. So is `"swarm": null` now."""
    status, _, body = http(server, "POST", "/v1/chat/completions",
                           {"model": MODEL, "messages": HI, "seed": 1, "n": None, "stream": None, "swarm": None})
    response = json.loads(body)
    assert status == 200, response
    assert len(response["choices"]) == 1 and response["object"] == "chat.completion"


def test_a_wrong_method_is_a_405_that_names_the_allowed_ones(server):
    """HTTP requires `Allow` on a 405; the error object had neither it nor a code."""
    status, headers, body = http(server, "GET", "/v1/chat/completions")
    assert status == 405 and headers["Allow"] == "POST"
    error = json.loads(body)["error"]
    assert error["code"] == "method_not_allowed" and "GET /v1/chat/completions" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    status, headers, _ = http(server, "POST", "/v1/models", {})
    assert status == 405 and "GET" in headers["Allow"]


def test_a_model_can_be_retrieved_by_id(client):
    """`client.models.retrieve(id)` (GET /v1/models/{id}) was a 404 for the served model too."""
    card = client.models.retrieve(MODEL)
    assert (card.id, card.object) == (MODEL, "model") and card == client.models.list().data[0]
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-4o")
    assert missing.value.body["code"] == "model_not_found" and missing.value.body["param"] == "model"
    unauthorized = openai.OpenAI(base_url=client.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        unauthorized.models.retrieve(MODEL)


def bad_request(client, messages) -> dict:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=messages)
    return {**bad.value.body, "message": bad.value.message}


def test_malformed_content_is_a_400_naming_the_content_field(client):
    """The content union's errors named an internal branch (`messages.0.content.str`) and, for an
    image part, said only 'Input should be a valid string'; a user message without content passed."""
    image = bad_request(client, [{"role": "user", "content": [{"type": "text", "text": "Look:"},
                                                               {"type": "image_url", "image_url": {"url": "x"}}]}])
    assert image["param"] == "messages.0.content" and image["code"] == "invalid_messages"
    assert "part 1" in image["message"] and "'image_url'" in image["message"] and "text parts" in image["message"]
    number = bad_request(client, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": 5}])
    assert number["param"] == "messages.1.content" and "a string or a list of text parts" in number["message"]
    missing = bad_request(client, [{"role": "user"}])
    assert missing["param"] == "messages.0.content" and "a user message needs content" in missing["message"]
    no_text = bad_request(client, [{"role": "user", "content": [{"type": "text"}]}])
    assert no_text["param"] == "messages.0.content" and "part 0" in no_text["message"]
    parts = [{"type": "text", "text": "Write a "}, {"type": "text", "text": "sentence."}]
    joined = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": parts}], seed=3)
    assert joined.choices[0].message.content == client.chat.completions.create(
        model=MODEL, messages=HI, seed=3).choices[0].message.content
    tool_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    history = [*HI, {"role": "assistant", "content": None, "tool_calls": [tool_call]},
               {"role": "tool", "tool_call_id": "c1", "content": "done"}]
    assert client.chat.completions.create(model=MODEL, messages=history, seed=3).choices


def test_a_program_argument_of_the_wrong_type_is_a_400_naming_it(client):
    """`swarm.arguments` are checked against the program's annotations (`max_words: int`): a wrong
    type was a TypeError in every particle, answered as 422 'no answer satisfies the constraints'."""
    for arguments, name, expected in (({"max_words": "many"}, "max_words", "int"),
                                      ({"letter": ["e"]}, "letter", "str")):
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model=MODEL, messages=HI, extra_body={"swarm": {"arguments": arguments}})
        assert bad.value.body["param"] == f"swarm.arguments.{name}" and bad.value.body["code"] == "invalid_argument"
        assert f"{name}: {expected}" in bad.value.message
    fine = client.chat.completions.create(model=MODEL, messages=HI, seed=3,
                                          extra_body={"swarm": {"arguments": {"max_words": 8, "delay": 0}}})
    assert fine.choices[0].message.content


def test_a_body_over_the_limit_is_a_413_before_it_is_read(client, server):
    """Bodies had no limit: a 100 MB message was read, parsed and run (20 s, 450 MB of memory).
    Over `MAX_BODY_BYTES` it is a 413, by its Content-Length or, chunked, as it arrives."""
    from agents.serving.app import MAX_BODY_BYTES

    huge = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * MAX_BODY_BYTES}]}).encode()
    status, headers, body = http(server, "POST", "/v1/chat/completions", huge)
    error = json.loads(body)["error"]
    assert status == 413 and error["code"] == "request_too_large" and str(MAX_BODY_BYTES) in error["message"]

    async def chunked():
        async def pieces():
            for i in range(0, len(huge), 1 << 20):
                yield huge[i:i + (1 << 20)]

        async with aiohttp.ClientSession() as session:
            async with session.post(server[0] + "/chat/completions", data=pieces(), headers=AUTH) as response:
                return response.status, await response.json()

    status, response = asyncio.run(chunked())
    assert status == 413 and response["error"]["code"] == "request_too_large"
    assert client.chat.completions.create(model=MODEL, messages=HI, seed=1).choices  # the server goes on


def test_fields_of_the_wrong_json_type_are_400s_not_coerced(server):
    """As in OpenAI's API, a field of the wrong JSON type is a 400 naming it: `"stream": "yes"`
    started a stream and `"n": "2"` gave two answers (pydantic's lax coercion)."""
    wrong = {"stream": "yes", "n": "2", "seed": "7", "temperature": "0.5", "max_tokens": 10.0,
             "stream_options": {"include_usage": "yes"}, "swarm": {"max_llm_calls": "9"}}
    for field, value in wrong.items():
        status, _, body = http(server, "POST", "/v1/chat/completions", {"model": MODEL, "messages": HI, field: value})
        error = json.loads(body)["error"]
        assert (status, error["code"]) == (400, "invalid_request"), (field, error)
        assert error["param"].split(".")[0] == field, (field, error)
    status, _, body = http(server, "POST", "/v1/chat/completions",  # an integer is a number, though
                           {"model": MODEL, "messages": HI, "temperature": 1, "top_p": 1, "seed": 1})
    assert status == 200, body


def test_ignored_fields_name_what_the_client_sent(client):
    """`max_completion_tokens` alone, to a program without a `max_tokens` parameter, was listed
    back as the ignored field `max_tokens`, which the client never sent."""
    response = client.chat.completions.create(model=MODEL, messages=HI, seed=1, max_completion_tokens=50, user="u")
    assert response.swarm["ignored_fields"] == ["max_completion_tokens", "user"]
    both = client.chat.completions.create(model=MODEL, messages=HI, seed=1, max_completion_tokens=50, max_tokens=50)
    assert both.swarm["ignored_fields"] == ["max_completion_tokens", "max_tokens"]


def test_a_negative_seed_draws_answers(client):
    """OpenAI's seed may be negative; with `answer="draw"` it was a 500 (numpy refuses negative
    seeds). The draw is seeded like the run's own random choices, so it is reproducible."""
    draws = [client.chat.completions.create(model=MODEL, messages=HI, seed=-5, n=2,
                                            extra_body={"swarm": {"answer": "draw"}}) for _ in range(2)]
    assert [c.message.content for c in draws[0].choices] == [c.message.content for c in draws[1].choices]
    assert len(draws[0].choices) == 2 and draws[0].swarm["answer"] == "draw"


def test_an_unexpected_failure_is_still_an_openai_error_object():
    """A reply that cannot be encoded (a lone surrogate) failed outside the handlers' error
    mapping: a text/plain 'Internal Server Error' the openai client cannot read. Any unexpected
    exception is now a 500 `internal_error` object, logged with its traceback, and the connection
    stays usable (the client's next request on it is answered, not cut)."""
    with run_server(f"{TARGET}:lone_surrogate") as (url, _, log):
        broken = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        for _ in range(3):  # one keep-alive connection
            with pytest.raises(openai.InternalServerError) as failed:
                broken.chat.completions.create(model="serve_fixtures:lone_surrogate", messages=HI)
            assert failed.value.body["code"] == "internal_error" and failed.value.body["type"] == "server_error"
        with pytest.raises(openai.APIError) as streamed:
            list(broken.chat.completions.create(model="serve_fixtures:lone_surrogate", messages=HI, stream=True))
        assert "internal server error" in streamed.value.message
        assert "UnicodeEncodeError" in log.read_text()


def test_the_api_key_is_masked_in_logged_tracebacks():
    """The server's own error log (`agents.serving`, and any logger without a handler) went to
    Python's last-resort handler, which masks nothing: a traceback quoting the key printed it."""
    with run_server(f"{TARGET}:unrenderable", "--api-key-env", "SERVE_EDGES_KEY",
                    env={"SERVE_EDGES_KEY": KEY}) as (url, _, log):
        broken = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=60)
        with pytest.raises(openai.InternalServerError):
            broken.chat.completions.create(model="serve_fixtures:unrenderable", messages=HI)
        text = log.read_text()
    assert "ValueError: cannot render with key **********" in text and "request failed" in text
    assert KEY not in text and KEY[8:] not in text


def test_a_program_that_asks_a_person_is_a_422_naming_the_question(tmp_path):
    """Before: the run paused (nobody can answer inside a request) and the server answered it as a
    finished run, content null with probability 1 and log Z 0, leaving a plp-swarm-paused-*
    directory per request. Now a 422 names the question and how to answer it up front, streamed or
    not, and the pause's temporary directory is removed."""
    from pathlib import Path

    with run_server(f"{TARGET}:asks_a_person", env={"TMPDIR": str(tmp_path)}) as (url, _, _):  # its temp dirs
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(openai.UnprocessableEntityError) as plain:
            client.chat.completions.create(model="serve_fixtures:asks_a_person", messages=HI)
        assert plain.value.body["code"] == "waiting_for_a_person"
        assert "the run waits for a person: 'ok' (id " in plain.value.message and "'Is this fine?'" in plain.value.message
        assert "answers={'ok': ...}" in plain.value.message
        with pytest.raises(openai.APIError, match="the run waits for a person"):
            list(client.chat.completions.create(model="serve_fixtures:asks_a_person", messages=HI, stream=True))
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith("plp-swarm-paused-")]
