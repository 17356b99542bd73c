"""`swarm serve` end to end: a real server on 127.0.0.1 (a subprocess), the official `openai` client.

The served program runs over a TEST DOUBLE backend (`tests/serve_fixtures.py`), so each answer can be
checked exactly: the same program under the same policy and seed, run in this process, must give
the same posterior; the server must answer its mode (and top-2 for n=2), with the same log Ẑ.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess

import openai
import pytest

import policies
from agents import ChatMessage
from tests.serve_fixtures import REPO, keyed_server, program, run_server, satisfies_guarantee, swarm_command

pytestmark = pytest.mark.server

MODEL = "serve_fixtures:program"
KEY = "sk-serve-test-0123456789abcdef"
TARGET = str(REPO / "tests" / "serve_fixtures.py")
HI = [{"role": "user", "content": "Write a sentence."}]


@pytest.fixture(scope="module")
def server():
    """One server for the module: 12 particles, 4000 tokens per request at most, an API key."""
    with keyed_server("SERVE_TEST_KEY", KEY) as served:
        yield served


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0], api_key=KEY, max_retries=0, timeout=60)


def in_process(seed: int, n: int = 1) -> tuple[list[str], float]:
    """The top-n answers and log Ẑ of the same run in this process (SMC, 12 particles, seed)."""
    result = policies.SMC(num_particles=12, seed=seed).run(program, [ChatMessage(role="user", content=HI[0]["content"])])
    marginal = sorted(result.marginal().items(), key=lambda kv: (-kv[1], kv[0]))
    return [value for value, _ in marginal[:n]], result.log_evidence


def test_models_and_a_plain_completion_answer_the_posterior_mode(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    for seed in (1, 2, 3):
        response = client.chat.completions.create(model=MODEL, messages=HI, seed=seed)
        content = response.choices[0].message.content
        expected, log_z = in_process(seed)
        assert content == expected[0] and satisfies_guarantee(content)
        info = response.swarm
        assert info["log_evidence"] == pytest.approx(log_z, abs=1e-12)
        assert re.fullmatch(r"[0-9a-f]{32}", info["trace_id"]) and int(info["trace_id"], 16) != 0
        assert re.fullmatch(r"[0-9a-f]{16}", info["run_id"]) and info["num_particles"] == 12
        usage = response.usage
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
        assert usage.completion_tokens == info["llm_calls"]  # the TEST DOUBLE writes one token a call


def test_n_returns_distinct_answers_by_posterior_probability(client):
    response = client.chat.completions.create(model=MODEL, messages=HI, seed=3, n=2)
    contents = [c.message.content for c in response.choices]
    assert [c.index for c in response.choices] == [0, 1]
    assert contents == in_process(3, n=2)[0] and len(set(contents)) == 2
    assert all(satisfies_guarantee(c) for c in contents)
    probabilities = response.swarm["probabilities"]
    assert probabilities[0] >= probabilities[1] > 0 and response.swarm["distinct_answers"] >= 2


def test_streaming_gives_the_same_answer_with_progress(client):
    plain = client.chat.completions.create(model=MODEL, messages=HI, seed=2)
    chunks = list(client.chat.completions.create(model=MODEL, messages=HI, seed=2, stream=True,
                                                 stream_options={"include_usage": True}))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == plain.choices[0].message.content
    steps = [c.swarm for c in chunks if c.swarm and c.swarm["event"] == "step"]
    assert [s["step"] for s in steps] == list(range(1, plain.swarm["steps"] + 1))
    assert all(s["alive"] <= s["num_particles"] == 12 for s in steps)
    end = chunks[-2].swarm
    assert end["event"] == "end" and chunks[-2].choices[0].finish_reason == "stop"
    assert re.fullmatch(r"[0-9a-f]{32}", end["trace_id"]) and end["trace_id"] != plain.swarm["trace_id"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens


def test_bad_requests_are_4xx_error_objects_naming_the_problem(client, server):
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=HI, extra_body={"swarm": {"arguments": {"colour": 1}}})
    assert "unknown program argument 'colour'" in bad.value.message and "letter, max_words, delay" in bad.value.message
    assert bad.value.body["param"] == "swarm.arguments.colour" and bad.value.body["code"] == "unknown_argument"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[{"role": "robot", "content": "hi"}])
    assert bad.value.body["param"] == "messages.0.role" and "'user'" in bad.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[])
    assert bad.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=HI, tools=[{"type": "function", "function": {"name": "f"}}])
    assert bad.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=HI, extra_body={"swarm": {"max_tokens": 99_999}})
    assert bad.value.body["code"] == "budget_over_limit" and "4000" in bad.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=HI)
    assert missing.value.body["code"] == "model_not_found" and MODEL in missing.value.message
    wrong_key = openai.OpenAI(base_url=server[0], api_key="sk-not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong_key.chat.completions.create(model=MODEL, messages=HI)


def test_a_request_over_its_budget_is_a_400_not_an_answer(client):
    with pytest.raises(openai.BadRequestError) as over:
        client.chat.completions.create(model=MODEL, messages=HI, seed=1, extra_body={"swarm": {"max_tokens": 30}})
    assert over.value.body["code"] == "budget_exceeded" and over.value.body["param"] == "swarm.max_tokens"
    assert "before its particles finished" in over.value.message
    with pytest.raises(openai.BadRequestError) as slow:  # 0.1 s a word, 0.25 s allowed
        client.chat.completions.create(model=MODEL, messages=HI, seed=1,
                                       extra_body={"swarm": {"timeout_s": 0.25, "arguments": {"delay": 0.1}}})
    assert slow.value.body["code"] == "budget_exceeded" and slow.value.body["param"] == "swarm.timeout_s"
    with pytest.raises(openai.APIError) as streamed:  # after the stream began: an error event, then the end
        list(client.chat.completions.create(model=MODEL, messages=HI, seed=1, stream=True,
                                            extra_body={"swarm": {"max_tokens": 30}}))
    assert "budget exceeded" in streamed.value.message


def test_concurrent_requests_are_independent_runs(client):
    """Eight requests at once on one server (one event loop, one backend): each answer and log Ẑ is
    exactly that of its own seed's run alone, so concurrent runs share nothing but the backend."""
    seeds = list(range(10, 18))
    with concurrent.futures.ThreadPoolExecutor(len(seeds)) as pool:
        responses = list(pool.map(lambda s: client.chat.completions.create(model=MODEL, messages=HI, seed=s), seeds))
    for seed, response in zip(seeds, responses):
        expected, log_z = in_process(seed)
        assert response.choices[0].message.content == expected[0]
        assert response.swarm["log_evidence"] == pytest.approx(log_z, abs=1e-12)
    assert len({r.swarm["run_id"] for r in responses}) == len(seeds)


def test_the_api_key_is_never_logged(client, server):
    client.chat.completions.create(model=MODEL, messages=HI, seed=5)
    log = server[1].read_text()
    assert "POST /v1/chat/completions" in log  # the access log is on, and it is this server's
    assert KEY not in log and KEY[8:] not in log


def test_what_cannot_be_served_is_refused_at_start_up():
    def serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*swarm_command(), "serve", *args, "--port", "0"], capture_output=True, text=True,
                              timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})

    nothing = serve()
    assert nothing.returncode == 1 and "needs a program (FILE.py[:program]) or --model embedded" in nothing.stderr
    no_conversation = serve(f"{TARGET}:reply")
    assert no_conversation.returncode == 1 and "needs a parameter named 'messages'" in no_conversation.stderr
    no_key = serve(TARGET, "--api-key-env", "SERVE_TEST_UNSET_KEY", env={"SERVE_TEST_UNSET_KEY": ""})
    assert no_key.returncode == 1 and "SERVE_TEST_UNSET_KEY" in no_key.stderr
    unmatchable = serve(TARGET, "--api-key-env", "SERVE_TEST_KEY", env={"SERVE_TEST_KEY": "clé-secrète"})
    assert unmatchable.returncode == 1 and "the key must be printable ASCII" in unmatchable.stderr
    assert "clé-secrète" not in unmatchable.stderr + unmatchable.stdout
    unknown_default = serve(TARGET, "--arg", "colour=red")
    assert unknown_default.returncode == 1 and "no parameter 'colour'" in unknown_default.stderr


def test_committed_streaming_sends_settled_text_early():
    """--stream-text committed: content arrives as the particles agree on it; it never changes.
    Without the letter "c" only "A dog runs far." survives, so the particles agree from step 2."""
    with run_server(TARGET, "--stream-text", "committed", "--arg", "letter=c") as (url, _, _):
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        plain = client.chat.completions.create(model=MODEL, messages=HI, seed=4)
        chunks = list(client.chat.completions.create(model=MODEL, messages=HI, seed=4, stream=True))
        mixed = list(client.chat.completions.create(model=MODEL, messages=HI, seed=4, stream=True,
                                                    extra_body={"swarm": {"arguments": {"letter": "e"}}}))
    early = "".join(c.choices[0].delta.content or "" for c in chunks
                    if c.choices and c.swarm and c.swarm["event"] == "step")
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == plain.choices[0].message.content == "A dog runs far."
    assert early and content.startswith(early)  # text was committed before the run ended
    assert "".join(c.choices[0].delta.content or "" for c in mixed if c.choices) == in_process(4)[0][0]


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    return [int(c) for c in open(path).read().split()] if os.path.exists(path) else []


def test_workers_share_one_port_and_stop_together():
    """--workers 2: two server processes behind one port, each answering exactly what the run of
    its request's seed gives alone; stopping the parent stops both (no orphan keeps the port)."""
    with run_server(TARGET, "--workers", "2") as (url, proc, _):
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        seeds = list(range(20, 28))
        with concurrent.futures.ThreadPoolExecutor(len(seeds)) as pool:
            responses = list(pool.map(lambda s: client.chat.completions.create(model=MODEL, messages=HI, seed=s), seeds))
        for seed, response in zip(seeds, responses):
            assert response.choices[0].message.content == in_process(seed)[0][0]
        workers = [p for p in _children(proc.pid) if "spawn_main" in open(f"/proc/{p}/cmdline").read()]
        assert len(workers) == 2, workers
    assert proc.returncode is not None
    assert not [p for p in workers if os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split()[2]]


def test_workers_are_refused_where_they_cannot_work():
    def serve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*swarm_command(), "serve", TARGET, *args, "--port", "0"], capture_output=True,
                              text=True, timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})

    none = serve("--workers", "0")
    assert none.returncode == 1 and "--workers must be at least 1, got 0" in none.stderr
    ray = serve("--workers", "2", "--runtime", "ray")
    assert ray.returncode == 1 and "--workers needs the local runtime" in ray.stderr
