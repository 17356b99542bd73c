"""A small, controllable OpenAI-compatible HTTP server for backend tests (stdlib only).

It serves `POST /v1/chat/completions`, `POST /v1/completions` and `GET /v1/models` with valid
OpenAI-shaped JSON (including logprobs) and follows a *fault script*, one action per request in
arrival order; once the script is used up every request gets `default` (normally "ok"):

    "ok"          a 200 with a completion
    "400", "429", "500", "503", …   that HTTP status with an OpenAI-style error body
    "drop"        read the request, then close the connection without any response
    "sleep:2.0"   wait 2.0 s (interruptible by `stop`), then answer "ok"
    "body:TEXT"   a 200 whose body is TEXT exactly (JSON of the wrong shape, or not JSON at all)

    with FaultServer(script=["500", "drop", "ok"]) as srv:
        client = OpenAICompatible(srv.base_url, "fake-model", ...)
        ...
        assert len(srv.requests) == 3

Every request is recorded (`requests`: path, parsed JSON body, action taken, authorization header)
and the server tracks the peak number of requests in flight (`max_in_flight`). The reply text is
`reply` (a string, or a function of the parsed request body); it is split into whitespace-led
tokens (`"Hello world"` → `["Hello", " world"]`), each with log-probability `token_logprob`, and
`top_logprobs` alternatives with lower log-probabilities when the request asks for them. `max_tokens`,
`n` and `stop` are honoured; as llama.cpp does, a stop string is cut from the text while the token
that completed it is still reported in the logprobs. `tool_calls`, `omit_logprobs` and
`echo_authorization` (error texts quote the Authorization header) script the rarer cases.
`tokenize` replaces the whitespace-led word tokenizer (e.g. 2-character pieces, for words longer
than a look-ahead); `continues_final_message=True` renders a final assistant message with
`continue_final_message` as an open turn (3 prompt tokens fewer than a closed turn plus a new
header), like vLLM; by default the field is ignored, like llama.cpp's servers. `stop_reason=True`
adds vLLM's `stop_reason` (the stop string that ended a choice, null otherwise) to every choice.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

from tests.local_http import LocalHTTPServer

_TOKEN_RE = re.compile(r"\s*\S+|\s+")


def split_tokens(text: str) -> list[str]:
    """Fake tokenizer: whitespace-led words, `"Hi there\\n"` → `["Hi", " there", "\\n"]`."""
    return _TOKEN_RE.findall(text)


def _alternatives(token: str, logprob: float, k: int) -> dict[str, float]:
    """`k` top-logprob entries: the chosen token, then alternatives with lower log-probabilities,
    alternately not whitespace-led (`"world#1"`) and whitespace-led (`" alt2"`)."""
    top = {token: logprob}
    for i in range(1, k):
        top[f"{token.strip()}#{i}" if i % 2 else f" alt{i}"] = logprob - float(i)
    return top


class _Handler(BaseHTTPRequestHandler):
    """Its server's `owner` is the `FaultServer` (tests/local_http.py)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the default stderr access log."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route GET {self.path}", "code": 404}})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        fault = self.server.owner
        action = fault.take_action(self.path, body, self.headers.get("Authorization"))
        with fault.in_flight():
            self._act(action, body)

    def _act(self, action: str, body: dict[str, Any]) -> None:
        fault = self.server.owner
        if action == "drop":
            self.close_connection = True
            return
        if action.startswith("sleep:"):
            fault.stopping.wait(float(action.split(":", 1)[1]))
            action = "ok"
        if action.startswith("body:"):  # a 200 whose body is these exact characters
            self._send_raw(200, action.split(":", 1)[1].encode())
            return
        if action.isdigit():
            status = int(action)
            message = f"fault script says {status}"
            if fault.echo_authorization:  # like a careless server: lets tests check redaction
                message += f" (you sent Authorization: {self.headers.get('Authorization')})"
            self._send_json(status, {"error": {"message": message, "type": "fault", "code": status}})
            return
        if action != "ok":
            raise ValueError(f"unknown fault action {action!r}")
        route = self.path.rstrip("/")
        if route == "/v1/chat/completions":
            self._send_json(200, fault.chat_response(body))
        elif route == "/v1/completions":
            self._send_json(200, fault.completion_response(body))
        else:
            self._send_json(404, {"error": {"message": f"no route POST {self.path}", "code": 404}})

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        self._send_raw(status, json.dumps(payload).encode())

    def _send_raw(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to do


class FaultServer:
    """A scripted OpenAI-compatible server on 127.0.0.1 (a free port), run in a background thread.

    Use as a context manager (or call `start()` / `stop()`); `base_url` ends in `/v1`.
    """

    def __init__(
        self,
        script: list[str] | None = None,
        *,
        default: str = "ok",
        reply: str | Callable[[dict[str, Any]], str] = "Hello world again",
        token_logprob: float = -0.5,
        model: str = "fake-model",
        tool_calls: list[dict[str, Any]] | None = None,
        omit_logprobs: bool = False,
        echo_authorization: bool = False,
        tokenize: Callable[[str], list[str]] | None = None,
        continues_final_message: bool = False,
        stop_reason: bool = False,
    ) -> None:
        self.script = list(script or [])
        self.default = default
        self.reply = reply
        self.token_logprob = token_logprob
        self.model = model
        self.tool_calls = tool_calls
        self.omit_logprobs = omit_logprobs
        self.echo_authorization = echo_authorization
        self.tokenize = tokenize or split_tokens
        self.continues_final_message = continues_final_message
        self.stop_reason = stop_reason
        self.requests: list[dict[str, Any]] = []
        self.max_in_flight = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._current = 0
        # a listen backlog of 128 (socketserver's default is 5): more concurrent connections than
        # that were refused by the kernel, a fault nobody scheduled
        self._http = LocalHTTPServer(_Handler, owner=self, name="fault-server", request_queue_size=128,
                                     poll_interval=0.02)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> "FaultServer":
        self._http.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # sleeping handlers wake up and answer
        self._http.stop()

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self._http.url("/v1")

    # ---- bookkeeping (called from handler threads) -----------------------------------------
    def take_action(self, path: str, body: dict[str, Any], authorization: str | None) -> str:
        """Record a request and return its scripted action (atomically: arrival order decides)."""
        with self._lock:
            index = len(self.requests)
            action = self.script[index] if index < len(self.script) else self.default
            self.requests.append({"path": path, "body": body, "action": action,
                                  "authorization": authorization, "time": time.monotonic()})
        return action

    def in_flight(self) -> "_InFlight":
        return _InFlight(self)

    def _enter(self) -> None:
        with self._lock:
            self._current += 1
            self.max_in_flight = max(self.max_in_flight, self._current)

    def _leave(self) -> None:
        with self._lock:
            self._current -= 1

    # ---- response bodies -------------------------------------------------------------------
    def _reply_text(self, body: dict[str, Any]) -> str:
        return self.reply(body) if callable(self.reply) else self.reply

    def _generate(self, body: dict[str, Any]) -> tuple[list[str], str, str, str | None]:
        """(reported tokens, returned text, finish_reason, the stop string that ended it), like
        llama.cpp: the text is cut before a stop string, while the tokens reported run up to the one
        that completed it."""
        tokens = self.tokenize(self._reply_text(body))
        max_tokens = body.get("max_tokens")
        finish, stopped_by = "stop", None
        if isinstance(max_tokens, int) and len(tokens) > max_tokens:
            tokens, finish = tokens[:max_tokens], "length"
        text = "".join(tokens)
        stops = body.get("stop") or []
        hits = [(text.find(x), x) for x in ([stops] if isinstance(stops, str) else stops) if x and x in text]
        if hits:
            cut, stop = min(hits)
            ends = [len("".join(tokens[:i + 1])) for i in range(len(tokens))]
            tokens = tokens[:next(i for i, e in enumerate(ends) if e >= cut + len(stop)) + 1]
            text, finish, stopped_by = text[:cut], "stop", stop
        return tokens, text, finish, stopped_by

    def _usage(self, body: dict[str, Any], n_out: int) -> dict[str, int]:
        n_in = len(split_tokens(json.dumps(body.get("messages") or body.get("prompt") or "")))
        if self.continues_final_message and body.get("continue_final_message"):
            n_in -= 3  # an open assistant turn: no end-of-turn, no new assistant header
        return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}

    def chat_response(self, body: dict[str, Any]) -> dict[str, Any]:
        choices = [self._chat_choice(body, i) for i in range(int(body.get("n") or 1))]
        return {
            "id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()),
            "model": self.model, "choices": choices,
            "usage": self._usage(body, len(self._generate(body)[0]) * len(choices)),
        }

    def _chat_choice(self, body: dict[str, Any], index: int) -> dict[str, Any]:
        tokens, text, finish, stopped_by = self._generate(body)
        k = int(body.get("top_logprobs") or 0)
        logprobs = None
        if body.get("logprobs") and not self.omit_logprobs:
            logprobs = {"content": [self._chat_logprob(tok, k) for tok in tokens]}
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if self.tool_calls:
            message["tool_calls"], finish = self.tool_calls, "tool_calls"
        choice = {"index": index, "finish_reason": finish, "logprobs": logprobs, "message": message}
        if self.stop_reason:
            choice["stop_reason"] = stopped_by
        return choice

    def _chat_logprob(self, tok: str, k: int) -> dict[str, Any]:
        top = _alternatives(tok, self.token_logprob, k) if k else {}
        return {"token": tok, "logprob": self.token_logprob, "bytes": list(tok.encode()),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top.items()]}

    def completion_response(self, body: dict[str, Any]) -> dict[str, Any]:
        choices = [self._completion_choice(body, i) for i in range(int(body.get("n") or 1))]
        return {
            "id": "cmpl-fault", "object": "text_completion", "created": int(time.time()),
            "model": self.model, "choices": choices,
            "usage": self._usage(body, len(self._generate(body)[0]) * len(choices)),
        }

    def _completion_choice(self, body: dict[str, Any], index: int) -> dict[str, Any]:
        tokens, text, finish, stopped_by = self._generate(body)
        k = body.get("logprobs")
        logprobs = None
        if k is not None and not self.omit_logprobs:
            offsets = [len("".join(tokens[:i])) for i in range(len(tokens))]
            logprobs = {
                "tokens": tokens, "token_logprobs": [self.token_logprob] * len(tokens),
                "top_logprobs": [_alternatives(t, self.token_logprob, int(k)) for t in tokens] if k else None,
                "text_offset": offsets,
            }
        choice = {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}
        if self.stop_reason:
            choice["stop_reason"] = stopped_by
        return choice


class _InFlight:
    """Context manager counting a request as in flight while its handler runs."""

    def __init__(self, fault: FaultServer) -> None:
        self._fault = fault

    def __enter__(self) -> None:
        self._fault._enter()

    def __exit__(self, *exc: object) -> None:
        self._fault._leave()
