"""The serving layer in process (no HTTP): answers against exact posteriors, program arguments,
the request's OpenTelemetry trace, the hard deadline, a client that leaves."""

from __future__ import annotations

import asyncio
import json
import math
import time

import numpy as np
import pytest

import policies
from agents.serving import ChatService, ServeConfig
from agents.serving.answers import choose, posterior, render
from agents.serving.arguments import ProgramArguments, ProgramSignatureError
from agents.serving.chunks import stream_chunks
from agents.serving.errors import BudgetExceeded, ServeError
from agents.serving.protocol import ChatCompletionRequest
from agents.serving.tracing import RequestTracing
from observability.exporters import instrument
from swarm import Categorical, factor, sample
from tests.serve_fixtures import program as sentence_program

EXACT = {"a": 0.5, "b": 0.3 * math.e, "c": 0.2 * math.exp(0.5)}
Z = sum(EXACT.values())
P = {k: v / Z for k, v in EXACT.items()}


def abc():
    x = sample("x", Categorical(["a", "b", "c"], probs=[0.5, 0.3, 0.2]))
    factor("likes", {"a": 0.0, "b": 1.0, "c": 0.5}[x])
    return x


def request(**fields) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


# -- answers -----------------------------------------------------------------------------------------
def test_mode_answers_are_the_exact_posteriors_most_probable():
    result = policies.Enumerate().run(abc)
    assert posterior(result) == pytest.approx(P, abs=1e-12)
    answers, distinct = choose(result, 2, "mode", lambda: np.random.default_rng(0))
    assert [a.content for a in answers] == ["b", "a"] and distinct == 3  # P = 0.49, 0.30, 0.20
    assert [a.probability for a in answers] == pytest.approx([P["b"], P["a"]], abs=1e-12)
    assert len(choose(result, 5, "mode", lambda: np.random.default_rng(0))[0]) == 3  # only three distinct answers


def test_drawn_answers_follow_the_posterior_without_replacement():
    """8000 draws of (first, second) with n=2 against P(a, b) = p_a·p_b / (1 − p_a). Each frequency is
    within 5 binomial standard errors of its probability (a false alarm has probability < 1e-5 per
    cell; the draws are seeded, so the outcome is the same on every machine)."""
    result = policies.Enumerate().run(abc)
    draws = 8000
    pairs: dict[tuple[str, str], int] = {}
    for seed in range(draws):
        answers, _ = choose(result, 2, "draw", lambda: np.random.default_rng(seed))
        pair = (answers[0].content, answers[1].content)
        pairs[pair] = pairs.get(pair, 0) + 1
    for a in P:
        for b in P:
            if a == b:
                assert (a, b) not in pairs
                continue
            p = P[a] * P[b] / (1 - P[a])
            se = math.sqrt(p * (1 - p) / draws)
            assert abs(pairs.get((a, b), 0) / draws - p) < 5 * se, (a, b)


def test_a_run_stopped_before_its_particles_finished_has_no_answer():
    def long():
        for t in range(4):
            factor(f"f{t}", 0.0)
        return 1

    result = policies.SMC(num_particles=5, seed=0, max_steps=2).run(long)
    with pytest.raises(BudgetExceeded, match="max_steps limit before its particles finished"):
        posterior(result)
    assert render({"a": [1, None]}) == '{"a": [1, null]}' and render("text") == "text"


# -- arguments ---------------------------------------------------------------------------------------
def test_program_arguments_come_from_defaults_sampling_fields_and_the_request():
    def chat(messages, temperature=1.0, style="plain", *, depth):
        return messages

    args = ProgramArguments(chat, defaults={"depth": 2})
    req = ChatCompletionRequest.model_validate_json(request(temperature=0.5, top_p=0.9, user="u1",
                                                            swarm={"arguments": {"style": "terse"}}))
    kwargs, ignored = args.bind(req)
    assert kwargs["temperature"] == 0.5 and kwargs["style"] == "terse" and kwargs["depth"] == 2
    assert [m.content for m in kwargs["messages"]] == ["hi"] and ignored == ["top_p", "user"]
    with pytest.raises(ServeError, match="missing program argument 'depth'"):
        ProgramArguments(chat).bind(req)
    with pytest.raises(ProgramSignatureError, match="'messages'.*'prompt'"):
        ProgramArguments(lambda topic: topic)
    with pytest.raises(ProgramSignatureError, match="no parameter 'colour'"):
        ProgramArguments(chat, defaults={"colour": 1, "depth": 1})
    single = ProgramArguments(lambda prompt: prompt)
    turns = ChatCompletionRequest.model_validate_json(json.dumps({"model": "m", "messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "one"}]},
        {"role": "assistant", "content": "x"}, {"role": "user", "content": "two"}]}))
    assert single.bind(turns)[0] == {"prompt": "two"}


# -- the request's trace -----------------------------------------------------------------------------
def test_without_an_exporter_request_spans_are_id_only():
    """No provider: nothing is recorded, yet every response names a real trace id: the caller's under
    a traceparent (its sampled flag kept), a fresh one per request otherwise; a run span made by an
    OTel listener of the policy is still the request span's child."""
    inst = instrument("memory", register=False, background=False)
    policy = policies.SMC(num_particles=4, listeners=[inst.listener])
    service = ChatService(sentence_program, policy, ServeConfig(model_name="m"))
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    run = service.prepare(request(seed=1), {"Traceparent": f"00-{caller}-00f067aa0ba902b7-01"})
    assert not run.span.span.is_recording()
    response = asyncio.run(service.complete(run))
    assert response.swarm.trace_id == caller and run.span.span.get_span_context().trace_flags.sampled
    fresh = {service.prepare(request(seed=i), {}).span.trace_id for i in range(20)}
    assert len(fresh) == 20 and all(len(t) == 32 and int(t, 16) != 0 for t in fresh)
    inst.force_flush()
    (run_span,) = [s for s in inst.memory_exporter.get_finished_spans() if s.name == "plp.run SMC"]
    assert run_span.context.trace_id == int(caller, 16)
    assert run_span.parent.span_id == run.span.span.get_span_context().span_id
    assert not [s for s in inst.memory_exporter.get_finished_spans() if s.name.startswith("swarm.chat")]
    inst.shutdown()


def test_each_request_is_one_trace_request_span_over_run_span():
    """The caller's traceparent → the request span → the run span → step spans, one trace id, which
    the response reports; the streamed request is a trace of its own."""
    inst = instrument("memory", register=False, background=False)
    policy = policies.SMC(num_particles=6, listeners=[inst.listener])
    service = ChatService(sentence_program, policy, ServeConfig(model_name="m"), tracing=RequestTracing(inst.provider))
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    run = service.prepare(request(seed=1), {"traceparent": f"00-{caller}-00f067aa0ba902b7-01"})
    response = asyncio.run(service.complete(run))
    streamed = service.prepare(request(seed=2, stream=True), {})

    async def consume():
        return [data async for data in stream_chunks(service, streamed)]

    chunks = asyncio.run(consume())
    inst.force_flush()
    spans = inst.memory_exporter.get_finished_spans()
    by_trace: dict[int, list] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    assert response.swarm.trace_id == caller and set(by_trace) == {int(caller, 16), int(streamed.span.trace_id, 16)}
    for trace_id, trace_spans in by_trace.items():
        (req,) = [s for s in trace_spans if s.name == "swarm.chat m"]
        (run_span,) = [s for s in trace_spans if s.name == "plp.run SMC"]
        assert run_span.parent.span_id == req.context.span_id
        assert any(s.name.startswith("plp.step") and s.parent.span_id == run_span.context.span_id for s in trace_spans)
        assert req.attributes["plp.run_id"] == run_span.attributes["plp.run_id"]
        assert req.status.is_ok
    (first,) = [s for s in by_trace[int(caller, 16)] if s.name == "swarm.chat m"]
    assert first.parent.span_id == 0x00F067AA0BA902B7 and first.attributes["gen_ai.usage.output_tokens"] > 0
    assert json.loads(chunks[-2])["swarm"]["trace_id"] == streamed.span.trace_id and chunks[-1] == "[DONE]"
    inst.shutdown()


def test_a_step_running_past_the_deadline_is_cancelled():
    service = ChatService(sentence_program, policies.SMC(num_particles=3),
                          ServeConfig(model_name="m", timeout_s=0.2, grace_s=0.0))
    run = service.prepare(request(swarm={"arguments": {"delay": 30.0}}), {})

    async def main():
        with pytest.raises(ServeError) as late:
            await service.complete(run)
        return late.value, [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    error, left = asyncio.run(main())
    assert (error.status, error.code) == (504, "timeout") and left == []


def test_a_plain_request_whose_client_leaves_is_cancelled():
    """The ASGI app under a client that disconnects 0.2 s into a run of 8 × 30 s: the run is cancelled
    at once, the response is 499 (for the access log; nobody reads it), and no task is left."""
    from agents.serving.app import build_app

    app = build_app(ChatService(sentence_program, policies.SMC(num_particles=3), ServeConfig(model_name="m")))
    body = request(swarm={"arguments": {"delay": 30.0}})
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(0.2)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def main():
        started = time.perf_counter()
        await app(scope, receive, send)
        return time.perf_counter() - started, [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    elapsed, left = asyncio.run(main())
    assert elapsed < 5.0 and left == [] and sent[0]["status"] == 499


def test_a_responses_api_request_is_traced_as_one_under_its_route():
    """/v1/responses: the request span is `swarm.responses <model>` with http.route /v1/responses,
    over the same run span (it was named swarm.chat with the chat route)."""
    from agents.serving.responses_api import parse_responses_request, response_object

    inst = instrument("memory", register=False, background=False)
    policy = policies.SMC(num_particles=6, listeners=[inst.listener])
    service = ChatService(sentence_program, policy, ServeConfig(model_name="m"), tracing=RequestTracing(inst.provider))
    body = json.dumps({"model": "m", "input": "Write a sentence.", "seed": 1}).encode()
    asked = []
    run = service.prepare(body, {}, parse=lambda b: asked.append(parse_responses_request(b)[0]) or
                          parse_responses_request(b)[1], route="/v1/responses")
    answer = response_object(run, asked[0], "completed", asyncio.run(service.complete(run)))
    inst.force_flush()
    spans = inst.memory_exporter.get_finished_spans()
    (req,) = [s for s in spans if s.name == "swarm.responses m"]
    (run_span,) = [s for s in spans if s.name == "plp.run SMC"]
    assert req.attributes["http.route"] == "/v1/responses" and run_span.parent.span_id == req.context.span_id
    assert answer["swarm"]["trace_id"] == format(req.context.trace_id, "032x") and answer["output"][0]["content"]
    inst.shutdown()
