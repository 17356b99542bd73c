"""The ASGI app: `ChatService` behind Starlette, streams as server-sent events (sse-starlette).

    GET  /v1/models              the one served model
    GET  /v1/models/{model}      its card (another id: 404 model_not_found)
    POST /v1/chat/completions    a run of the program per request (JSON, or SSE with stream=true)
    POST /v1/responses           the same, in OpenAI's Responses API (`agents.serving.responses_api`)
    GET  /health                 {"status": "ok"} (no API key needed)

Why Starlette and sse-starlette (bench/serve_overhead.py measures both choices): FastAPI's request
parsing, dependency injection and response models would only wrap what `ChatService` does itself
(it must answer every validation problem as an OpenAI 400, not FastAPI's 422), and cost ~10% more
per request; sse-starlette costs ~0.1 ms per event over a bare StreamingResponse and gives what a
long run needs: keep-alive pings while a step computes (proxies drop silent connections), the
client's disconnect cancelling the run, and open streams closed when the server stops.

A plain (non-stream) request whose client disconnects is cancelled too: once it has run for
`WATCH_AFTER_S`, a watcher reads the ASGI channel while the run goes, so an abandoned request stops
using the shared backend (a shorter one just finishes: watching costs a task per request).

A request body over `MAX_BODY_BYTES` is a 413 (by its Content-Length, or while a chunked one
arrives), so a huge body costs neither the memory nor the time to parse and run it.

API key: with `api_key` set, every /v1 request needs `Authorization: Bearer <key>`, compared in
constant time; the key is a `Secret` (masked in every log line, span and error message).
"""

from __future__ import annotations

from swarm.errors import SwarmError

import asyncio
import functools
import hmac
import json
from typing import Any, Awaitable, Callable

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agents.secrets import Secret
from agents.serving.chunks import stream_chunks
from agents.serving.errors import ServeError, internal_error
from agents.serving.responses_api import (ResponsesRequest, parse_responses_request, response_object,
                                          stream_response_events)
from agents.serving.protocol import ChatCompletion
from agents.serving.service import ChatService, PreparedRun

PING_S = 15.0
WATCH_AFTER_S = 1.0
"""A plain request still running after this long starts watching for its client's disconnect."""
TRACE_HEADER = "x-swarm-trace-id"
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}
MAX_BODY_BYTES = 16 << 20
"""The largest request body accepted (16 MiB: millions of tokens of text)."""


def error_response(error: ServeError, headers: dict[str, str] | None = None) -> Response:
    return Response(error.response().model_dump_json(), status_code=error.status, media_type="application/json",
                    headers={**error.headers(), **(headers or {})})


def build_app(service: ChatService, *, api_key: Secret | None = None, lifespan: Any = None) -> Starlette:
    """The Starlette app serving `service` (optionally behind an API key; `lifespan`: Starlette's
    start-up/shut-down context)."""
    expected = api_key.get_secret_value().encode() if api_key is not None else None

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)

    unauthorized = ServeError(401, "missing or incorrect API key (send it as 'Authorization: Bearer <key>')",
                              code="invalid_api_key")

    async def models(request: Request) -> Response:
        if not authorized(request):
            return error_response(unauthorized)
        return Response(service.models().model_dump_json(), media_type="application/json")

    async def model(request: Request) -> Response:
        if not authorized(request):
            return error_response(unauthorized)
        try:
            card = service.model(request.path_params["model"])
        except ServeError as exc:
            return error_response(exc)
        return Response(card.model_dump_json(), media_type="application/json")

    async def run_request(request: Request, parse: Callable[[bytes], Any] | None,
                          stream: Callable[[PreparedRun], Any], body: Callable[[PreparedRun, ChatCompletion], str]
                          ) -> Response:
        """One run per request: validated by `parse` (None: a chat request), streamed as the events
        `stream` makes, or answered with `body`."""
        if not authorized(request):
            return error_response(unauthorized)
        try:
            run = service.prepare(await read_body(request), request.headers, parse=parse, route=request.scope["path"])
        except ServeError as exc:
            return error_response(exc)
        headers = {TRACE_HEADER: run.span.trace_id}
        if run.request.stream:
            return EventSourceResponse(stream(run), ping=PING_S, sep="\n", headers=headers)
        try:
            response = await _unless_disconnected(request, service.complete(run))
        except ServeError as exc:
            return error_response(exc, headers)
        except ClientDisconnected:
            return Response(status_code=499)  # nobody reads it: "client closed request", for the access log
        return Response(body(run, response), media_type="application/json", headers=headers)

    async def chat(request: Request) -> Response:
        return await run_request(request, None, lambda run: stream_chunks(service, run),
                                 lambda run, response: response.model_dump_json())

    async def responses(request: Request) -> Response:
        """POST /v1/responses: the same run, read and answered in the Responses API's shapes."""
        asked: list[ResponsesRequest] = []

        def parse(body: bytes) -> Any:
            responses_request, chat_request = parse_responses_request(body)
            asked.append(responses_request)
            return chat_request

        return await run_request(request, parse, lambda run: stream_response_events(service, run, asked[0]),
                                 lambda run, response: json.dumps(response_object(run, asked[0], "completed", response)))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": service.config.model_name})

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's routing errors (404, 405 with its `Allow` header) as OpenAI error objects."""
        assert isinstance(exc, HTTPException)
        error = ServeError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                           code=HTTP_ERROR_CODES.get(exc.status_code))
        return error_response(error, dict(exc.headers or {}))

    routes = [Route("/v1/models", openai_errors(models), methods=["GET"]),
              Route("/v1/models/{model:path}", openai_errors(model), methods=["GET"]),
              Route("/v1/chat/completions", openai_errors(chat), methods=["POST"]),
              Route("/v1/responses", openai_errors(responses), methods=["POST"]),
              Route("/health", health, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)


def openai_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """`handler`, with any exception it did not map (a bug) answered as a 500 `internal_error`
    object and logged with its traceback. Answered here, not by Starlette's error middleware, whose
    response is text/plain and which re-raises, so that uvicorn closes the client's keep-alive
    connection under its next request."""

    @functools.wraps(handler)
    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return error_response(internal_error(exc))

    return answer


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, or a 413 `ServeError` as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ServeError:
    return ServeError(413, f"the request body is over this server's limit of {limit} bytes", code="request_too_large")


class ClientDisconnected(SwarmError):
    """The client went away before its answer was ready (its run was cancelled)."""


async def _unless_disconnected(request: Request, work: Any) -> Any:
    """Await `work` in this task; if the client disconnects first, cancel it and raise
    `ClientDisconnected`. Only a request still running after `WATCH_AFTER_S` starts a watcher task
    (it cancels this one from a done callback): most requests end sooner and pay for one timer, not
    a task, and an abandoned long run still stops within about that long."""
    task = asyncio.current_task()
    assert task is not None
    left, watchers = False, []

    def on_disconnect(watcher: asyncio.Future) -> None:
        nonlocal left
        if not watcher.cancelled() and watcher.exception() is None:
            left = True
            task.cancel()

    def watch() -> None:
        watcher = asyncio.ensure_future(_disconnected(request))
        watcher.add_done_callback(on_disconnect)
        watchers.append(watcher)

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, watch)
    try:
        return await work
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:  # cancelled by the watcher only, not by the server
            raise ClientDisconnected() from None
        raise
    finally:
        timer.cancel()
        for watcher in watchers:
            watcher.remove_done_callback(on_disconnect)
            watcher.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
