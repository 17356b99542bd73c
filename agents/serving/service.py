"""`ChatService`: one chat request = one run of the served program under the served policy.

The service is independent of the HTTP framework (agents.serving.app puts it behind Starlette):

    run = service.prepare(body, headers)          # 4xx here: bad JSON, fields, arguments, budget
    response = await service.complete(run)        # or: async for data in service.chunks(run): ...

Every request runs through `policy.stream` (policies.streaming), the plain response by reading the
stream to its end. Each request gets a copy of the policy with its own budget and seed (the
request's `seed`, else a fresh one), so concurrent requests are independent runs that share the
program's agents and their backends (one embedded model, one HTTP pool).

Budget and time: the request's `swarm.max_tokens` / `max_llm_calls` / `timeout_s` (each at most
the server's) become the run's `Budget`, which the policy checks between steps and stops cleanly
on; a stop before the population finished is a 400 `budget_exceeded`. A step still running
`grace_s` after `timeout_s` is cancelled (504 `timeout`).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Literal, Mapping, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.serving.answers import choose
from agents.serving.arguments import ProgramArguments, check_supported
from agents.serving.errors import ServeError, bad_request, from_run_error
from agents.serving.protocol import (ChatCompletion, ChatCompletionRequest, Choice, ModelCard, ModelList,
                                     ResponseMessage, RunInfo, Usage, finite)
from agents.serving.tracing import RequestSpan, RequestTracing
from policies.base import Budget, Policy
from policies.pausing import cannot_wait
from policies.streaming import RunEnd, RunStream


class ServeConfig(BaseModel):
    """What the server enforces and defaults to (per request limits are upper bounds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = Field(min_length=1)
    answer: Literal["mode", "draw"] = "mode"
    max_tokens: int | None = Field(None, gt=0)
    max_llm_calls: int | None = Field(None, gt=0)
    timeout_s: float = Field(300.0, gt=0)
    grace_s: float = Field(10.0, ge=0)
    """How long after `timeout_s` a step may still finish before the run is cancelled."""
    stream_text: Literal["committed", "final"] = "final"
    """"committed": stream the text every live particle shares as it settles (the program must
    return exactly the text its LLM calls generated); "final": content only once the run ended."""


@dataclass
class PreparedRun:
    """A validated request, ready to run."""

    id: str
    created: int
    request: ChatCompletionRequest
    kwargs: dict[str, Any]
    ignored: list[str]
    policy: Policy
    answer: Literal["mode", "draw"]
    timeout_s: float
    span: RequestSpan
    started: float = field(default_factory=time.perf_counter)


class ChatService:
    def __init__(self, program: Callable[..., Any], policy: Policy, config: ServeConfig, *,
                 defaults: dict[str, Any] | None = None, tracing: RequestTracing | None = None) -> None:
        self.program = program
        self.policy = policy
        self.config = config
        self.arguments = ProgramArguments(program, defaults)
        self.tracing = tracing or RequestTracing()
        self.created = int(time.time())

    def models(self) -> ModelList:
        return ModelList(data=[self.model(self.config.model_name)])

    def model(self, model_id: str) -> ModelCard:
        """The served model's card; another id is a 404 `model_not_found`."""
        if model_id != self.config.model_name:
            raise self._unknown_model(model_id)
        return ModelCard(id=self.config.model_name, created=self.created)

    def _unknown_model(self, model_id: str) -> ServeError:
        return ServeError(404, f"model {model_id!r} does not exist; this server serves "
                               f"{self.config.model_name!r} (GET /v1/models)", param="model", code="model_not_found")

    # -- validation --------------------------------------------------------------------------------
    def prepare(self, body: bytes, headers: Mapping[str, str],
                parse: Callable[[bytes], ChatCompletionRequest] | None = None,
                route: str = "/v1/chat/completions") -> PreparedRun:
        """Validate a request body (a chat request; `parse` reads another API's body, at `route`,
        as the chat request it means); the request span starts here (a rejected request is traced too)."""
        span = self.tracing.start(self.config.model_name, headers, route)
        try:
            request = (parse or parse_request)(body)
            if request.model != self.config.model_name:
                raise self._unknown_model(request.model)
            check_supported(request)
            kwargs, ignored = self.arguments.bind(request)
            budget, timeout_s = self._budget(request)
            policy = self.policy.model_copy(update={"seed": request.seed, "budget": budget})
        except ServeError as exc:
            span.end(exc, exc.message)
            raise
        span.set({"gen_ai.request.model": request.model, "gen_ai.request.choice.count": request.n,
                  "gen_ai.request.seed": request.seed, "plp.stream": request.stream})
        if self.tracing.capture_content:
            span.set({"input.value": request.messages[-1].to_chat_message().content})
        return PreparedRun(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), request=request,
                           kwargs=kwargs, ignored=ignored, policy=policy, span=span, timeout_s=timeout_s,
                           answer=request.swarm.answer or self.config.answer)

    def _budget(self, request: ChatCompletionRequest) -> tuple[Budget, float]:
        asked = request.swarm
        limits = {"max_tokens": (asked.max_tokens, self.config.max_tokens),
                  "max_llm_calls": (asked.max_llm_calls, self.config.max_llm_calls),
                  "timeout_s": (asked.timeout_s, self.config.timeout_s)}
        chosen: dict[str, Any] = {}
        for name, (wanted, limit) in limits.items():
            if wanted is not None and limit is not None and wanted > limit:
                raise bad_request(f"swarm.{name} = {wanted} is over this server's limit of {limit}",
                                  param=f"swarm.{name}", code="budget_over_limit")
            chosen[name] = wanted if wanted is not None else limit
        budget = Budget(max_tokens=chosen["max_tokens"], max_llm_calls=chosen["max_llm_calls"],
                        max_seconds=chosen["timeout_s"])
        return budget, chosen["timeout_s"]

    # -- running -----------------------------------------------------------------------------------
    def _deadline(self, run: PreparedRun) -> float:
        return asyncio.get_running_loop().time() + run.timeout_s + self.config.grace_s

    def _late(self, run: PreparedRun) -> ServeError:
        return ServeError(504, f"the run was still going {run.timeout_s + self.config.grace_s:g} s after it started "
                               "and was cancelled", type="server_error", code="timeout")

    async def events(self, run: PreparedRun) -> AsyncIterator[Any]:
        """The run's stream events (with texts); the run is cancelled when this generator is closed
        or the hard deadline (timeout_s + grace_s) passes."""
        stream = RunStream(run.policy, self.program, (), run.kwargs).events()
        deadline, first = self._deadline(run), True
        try:
            while True:
                timer = asyncio.timeout_at(deadline)
                try:
                    async with timer:
                        if first:  # the run's task is created now: under the request span
                            with run.span.current():
                                event = await stream.__anext__()
                        else:
                            event = await stream.__anext__()
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    if timer.expired():
                        raise self._late(run) from exc
                    raise
                first = False
                yield event
        finally:
            await stream.aclose()

    async def complete(self, run: PreparedRun) -> ChatCompletion:
        """Run to the end and answer (raises `ServeError`): the stream's `result()`, which makes no
        per-step events (a plain response shows none)."""
        timer = asyncio.timeout_at(self._deadline(run))
        try:
            try:
                async with timer:
                    with run.span.current():  # the run starts under the request span
                        end = await RunStream(run.policy, self.program, (), run.kwargs).result()
            except TimeoutError as exc:
                if timer.expired():
                    raise self._late(run) from exc
                raise
            response = self.response(run, end)
        except ServeError as exc:
            run.span.end(exc, exc.message)
            raise
        except Exception as exc:
            error = from_run_error(exc)
            run.span.end(exc, error.message)
            raise error from exc
        except BaseException as exc:  # cancelled: the client went away or the server is stopping
            run.span.end(exc, "cancelled")
            raise
        self.finish_span(run, response)
        return response

    def response(self, run: PreparedRun, end: RunEnd) -> ChatCompletion:
        """The answers (mode or draws) and the run's metadata."""
        result = end.result
        if result.status == "waiting":  # nobody can answer a person's question inside a request
            raise ServeError(422, cannot_wait(result, run.policy), code="waiting_for_a_person")
        weights = result.normalized_weights if result.particles else np.zeros(0)
        answers, distinct = choose(result, run.request.n, run.answer, weights=weights,  # draws: reproducible
                                   rng=lambda: draw_rng(result.seed))  # given the seed
        if not answers:
            raise ServeError(422, "no answer: the run's final population has no particle with weight > 0",
                             code="no_surviving_particles")
        d = result.diagnostics
        ess = 1.0 / float(np.dot(weights, weights)) if len(weights) else 0.0  # Kong's 1/Σ w̄²
        completion = min(end.output_tokens, d.tokens)
        info = RunInfo(run_id=end.run_id, trace_id=run.span.trace_id, policy=result.policy,
                       num_particles=len(result.particles), log_evidence=finite(result.log_evidence),
                       ess=ess, min_ess=min(d.ess_per_step, default=ess), steps=len(d.steps), llm_calls=d.llm_calls,
                       answer=run.answer, probabilities=[a.probability for a in answers], distinct_answers=distinct,
                       stopped_by=d.stopped_by, wall_time_s=time.perf_counter() - run.started, ignored_fields=run.ignored)
        return ChatCompletion(id=run.id, created=run.created, model=run.request.model,
                              choices=[Choice(index=i, message=ResponseMessage(content=a.content))
                                       for i, a in enumerate(answers)],
                              usage=Usage(prompt_tokens=d.tokens - completion, completion_tokens=completion,
                                          total_tokens=d.tokens),
                              swarm=info)

    def finish_span(self, run: PreparedRun, response: ChatCompletion) -> None:
        info = response.swarm
        run.span.set({"gen_ai.response.id": response.id, "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
                      "gen_ai.usage.output_tokens": response.usage.completion_tokens, "plp.run_id": info.run_id,
                      "plp.log_evidence": info.log_evidence if info.log_evidence is not None else -math.inf,
                      "plp.ess": info.ess, "plp.answer": info.answer,
                      "plp.answer_probabilities": info.probabilities})
        if self.tracing.capture_content:
            run.span.set({"output.value": response.choices[0].message.content})
        run.span.end()


class StreamWriter(Protocol):
    """How one API shapes a streamed run into server-sent events (`chunks.ChunkWriter` for chat
    completions, `responses_api.ResponseEvents` for the Responses API)."""

    def opening(self) -> list[Any]: ...
    def on_event(self, event: Any) -> list[Any]: ...
    def closing(self, response: ChatCompletion) -> list[Any]: ...
    def failure(self, error: ServeError) -> list[Any]: ...


async def stream_run(service: ChatService, run: PreparedRun, writer: StreamWriter) -> AsyncIterator[Any]:
    """The server-sent events of a streamed run, as `writer` shapes them: its opening, the events of
    each run event, then its closing with the answer, or its failure (an error after the stream
    began cannot change the status line already sent)."""
    for item in writer.opening():
        yield item
    try:
        async for event in service.events(run):
            if isinstance(event, RunEnd):
                response = service.response(run, event)
                closing = writer.closing(response)
                service.finish_span(run, response)  # before the last event: a client that read it finds the span
                for item in closing:
                    yield item
                return
            for item in writer.on_event(event):
                yield item
    except Exception as exc:
        error = from_run_error(exc)
        run.span.end(exc, error.message)
        for item in writer.failure(error):
            yield item
    except BaseException as exc:  # the client went away (the run is cancelled) or the server stops
        run.span.end(exc, "cancelled")
        raise


def draw_rng(seed: int | None) -> np.random.Generator:
    """The generator of a run's answer draws, from its seed (any int: OpenAI's may be negative,
    numpy's may not, so it is masked to 63 bits as the policy's own generators are)."""
    return np.random.default_rng([(seed or 0) & (2**63 - 1), 0xA45])


def parse_request(body: bytes) -> ChatCompletionRequest:
    """The request from JSON; every problem is a 400 naming the field."""
    try:
        return ChatCompletionRequest.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        if first["type"] == "json_invalid":
            raise bad_request(f"the request body is not valid JSON: {first['msg']}", code="invalid_json") from None
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        code = "invalid_messages" if where.startswith("messages") else "invalid_request"
        raise bad_request(f"{where or 'body'}: {first['msg']}{more}", param=where or None, code=code) from None
