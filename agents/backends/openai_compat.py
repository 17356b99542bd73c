"""`OpenAICompatible`: any OpenAI-compatible endpoint (llama.cpp server, vLLM, OpenAI, …) over a lean
keep-alive HTTP pool (`agents.backends.http_pool`), with explicit retries, a concurrency limit and
token accounting. Responses are parsed as dicts (`agents.backends.http_wire`), never as pydantic models;
bodies are encoded and decoded by orjson where it gives what the standard library gives
(`agents.json_codec`: ~7 µs less per request than the standard library's json, a tenth of the
transport's CPU at thousands of requests in flight; bench/latency_hiding.py).

Log-probabilities are requested only where something needs them (each one costs: llama-cpp-python's
server took 6.8x as long for the same 24-token completion with `logprobs: 0`):
- the request says `log_q="required"` (the site's weight needs log q and log p: `target="base"`, or
  a policy that scores traces by log q; see `agents.generation`);
- `logprobs="always"` on the backend (token log-probabilities in every trace);
- unit="line" on a server whose replies do not say *which* stop ended them (`stop_reason`, as vLLM
  does): the tokens tell a newline from an end of sequence.
A completion records `log_q_quality`: "exact", "estimated" or "absent" (not requested: log q = 0 is
a placeholder and `tokens` is empty).

What the log-probabilities mean (read this before trusting weights). Servers report *raw model*
log-probabilities (temperature 1, no truncation): llama.cpp's server always, vLLM by default. From
those numbers alone the proposal q is known exactly only when
- temperature == 1 and top_p == 1: q = p, `token_logprobs` = `base_token_logprobs` = reported;
- temperature == 0: q is a point mass (base.py), `token_logprobs` = 0.0, base = reported.
**PROPOSAL_LOGPROBS_INEXACT**: at any other temperature or top_p < 1, `token_logprobs` hold the raw
model's values (an approximation of log q, not log q: quality "estimated"); `base_token_logprobs`
hold the same values, which *are* log p. The same holds with a `response_format`, which servers
enforce with a grammar. See `proposal_logprobs_exact(request)`. All this assumes the server adds no
sampler of its own: llama.cpp's server applies top_k=40, min_p=0.05 and repeat_penalty=1.1 unless
told otherwise: pass `extra_body=LLAMA_CPP_PLAIN_SAMPLING` (`VLLM_PLAIN_SAMPLING` for vLLM). For a
server that reports processed (proposal) log-probabilities use `reported_logprobs="proposal"`.

Conventions shared with `LlamaCpp`: `"".join(tokens) == text`; a token reported beyond the returned
text (llama.cpp reports the token that matched a stop string, then trims the text) keeps its
log-probability, its text piece trimmed. Servers do not report an end-of-sequence token, so (unlike
`LlamaCpp`) its probability is missing.

Chunks (`settings.unit`, finish_reason "unit"): "token" → max_tokens=1; "line" → stop=["\\n"], the
newline put back into the chunk (as `LlamaCpp` keeps it); "word" → see `agents.backends.http_words`
(a short look-ahead, extended only when a word is longer; the same cut and the same proposal as
`LlamaCpp`). Chat continuation (`assistant_prefix` in chat mode): see `agents.backends.http_continuation`.
Several particles' identical requests (siblings after resampling) go out as one request with `n`
on servers that honour it: see `agents.backends.http_batching`.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import logging
import random
import time
import urllib.parse
from typing import Any, Literal, NamedTuple

from pydantic import SecretStr

from agents.backends import http_continuation, http_words
from agents.backends.base import Backend, BackendError, Completion, GenerationRequest, GenerationSettings
from agents.backends.http_batching import SiblingBatcher
from agents.backends.http_pool import HttpPool, HttpTransportError
from agents.backends.http_reply import OpenAICompletion, parse_choice
from agents.backends.http_wire import error_text
from agents.constraints.base import ConstraintError
from agents.generation import InvalidGenerationRequest
from agents.json_codec import dumps_exact, loads
from agents.secrets import MASK, redact, register_secret

log = logging.getLogger(__name__)

LLAMA_CPP_PLAIN_SAMPLING = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}
"""`extra_body` for llama.cpp servers: turn off the samplers it applies by default (top_k=40,
min_p=0.05, repeat_penalty=1.1), so the proposal is plain temperature/top-p sampling."""
VLLM_PLAIN_SAMPLING = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}
"""`extra_body` for vLLM, which may take sampling defaults from the model's generation_config."""

__all__ = ["OpenAICompatible", "OpenAICompletion", "LLAMA_CPP_PLAIN_SAMPLING", "VLLM_PLAIN_SAMPLING"]


class _Failure(NamedTuple):
    """What one failed attempt taught us, as text: no exception, request or header object (which
    may carry the api key) survives into the error we raise."""

    message: str
    status: int | None
    retryable: bool
    retry_after: float | None = None


class OpenAICompatible(Backend):
    """An OpenAI-compatible HTTP endpoint (see the module docstring for what logprobs mean).

    `mode="chat"` uses /chat/completions (the server applies the chat template; a `prompt` request
    is sent as one user message); `mode="completions"` uses /completions with a raw `prompt`.
    Retries (429, 5xx, connection errors, timeouts) use exponential backoff with jitter drawn from a
    generator seeded by `retry_seed`, so retry timing is reproducible; other 4xx fail at once. The
    api key is never shown in any repr, log line or error message.

    `max_concurrency`: requests in flight (= keep-alive connections) at once. `top_logprobs`:
    alternatives to request per token when logprobs are requested. `logprobs`: "auto" (only where
    needed, see above) or "always". `n_supported`: the server honours `n` (vLLM; llama.cpp does
    not), so identical requests sent together become one request. `reported_logprobs`: "raw" (model
    at T=1) or "proposal" (after temperature/top-p). `require_logprobs`: a non-empty reply without
    the logprobs we asked for is a `BackendError`. `extra_body`: server-specific fields sent with
    every request, e.g. `LLAMA_CPP_PLAIN_SAMPLING`. `continuation` and `chat_template`: how a
    partial assistant reply is continued in chat mode (`agents.backends.http_continuation`).
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 mode: Literal["chat", "completions"] = "chat", timeout: float = 60.0, max_retries: int = 4,
                 backoff_base: float = 0.25, backoff_max: float = 8.0, max_concurrency: int = 64,
                 top_logprobs: int = 0, logprobs: Literal["auto", "always"] = "auto", n_supported: bool = False,
                 reported_logprobs: Literal["raw", "proposal"] = "raw", require_logprobs: bool = True,
                 retry_seed: int = 0, extra_body: dict[str, Any] | None = None,
                 continuation: Literal["auto", "server", "client", "refuse"] = "auto",
                 chat_template: str | None = None, constraints: Literal["llama.cpp", "vllm"] | None = None) -> None:
        _check(mode in ("chat", "completions"), "mode", mode, "must be 'chat' or 'completions'")
        _check(reported_logprobs in ("raw", "proposal"), "reported_logprobs", reported_logprobs,
               "must be 'raw' or 'proposal'")
        _check(logprobs in ("auto", "always"), "logprobs", logprobs, "must be 'auto' or 'always'")
        _check(continuation in ("auto", "server", "client", "refuse"), "continuation", continuation,
               "must be 'auto', 'server', 'client' or 'refuse'")
        _check(continuation != "client" or chat_template is not None, "continuation", continuation,
               "needs chat_template= (the model's Jinja chat template) to render chats on the client")
        _check(timeout > 0, "timeout", timeout, "must be > 0")
        _check(max_retries >= 0, "max_retries", max_retries, "must be >= 0")
        _check(max_concurrency >= 1, "max_concurrency", max_concurrency, "must be >= 1")
        _check(top_logprobs >= 0, "top_logprobs", top_logprobs, "must be >= 0")
        parts = urllib.parse.urlsplit(base_url)
        _check(parts.scheme in ("http", "https") and bool(parts.hostname), "base_url", _safe_url(base_url),
               "must be an http:// or https:// URL such as http://127.0.0.1:8000/v1")
        self.base_url, self.model, self.mode = base_url.rstrip("/"), model, mode
        self._api_key = SecretStr(api_key or "EMPTY")
        register_secret(self._api_key)  # masked in traces, spans and error messages from now on
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.backoff_base, self.backoff_max = float(backoff_base), float(backoff_max)
        self.max_concurrency, self.top_logprobs, self.logprobs = int(max_concurrency), int(top_logprobs), logprobs
        self.n_supported, self.reported_logprobs = n_supported, reported_logprobs
        self.require_logprobs, self.extra_body = require_logprobs, dict(extra_body or {})
        self.continuation, self.chat_template = continuation, chat_template
        _check(constraints in (None, "llama.cpp", "vllm"), "constraints", constraints, "must be None, 'llama.cpp' or 'vllm'")
        self.constraints = constraints
        self.server_continues: bool | None = None
        """The probe's answer: does the server honour `continue_final_message` (None: not asked yet)."""
        self.reports_stop_reason: bool | None = None
        """Do replies carry `stop_reason` (which stop ended them)? Learnt from the first reply."""
        self._rng = random.Random(retry_seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: HttpPool | None = None
        self._batcher: SiblingBatcher | None = None
        self._probing: asyncio.Lock | None = None
        self.calls = self.input_tokens = self.output_tokens = self.retries = self.errors = self.requests = 0

    # ---- identity and display (never the key) ----------------------------------------------
    def __repr__(self) -> str:
        return (f"OpenAICompatible(base_url={_safe_url(self.base_url)!r}, model={self.model!r}, "
                f"mode={self.mode!r}, api_key='***')")

    __str__ = __repr__

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (e.g. sent to a Ray actor): the loop-bound pool, batcher and lock are re-made."""
        return {**self.__dict__, "_loop": None, "_pool": None, "_batcher": None, "_probing": None}

    def identity(self) -> str:
        return f"{self.name}:{self.model}@{_safe_url(self.base_url)}/{self.mode}"

    def stats(self) -> dict[str, int]:
        """Token accounting: completions returned, tokens in/out as the server reported them,
        retried attempts, calls that ended in a `BackendError`, HTTP requests sent."""
        return {"calls": self.calls, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "retries": self.retries, "errors": self.errors, "requests": self.requests}

    def proposal_logprobs_exact(self, request: GenerationRequest | GenerationSettings) -> bool:
        """Whether `token_logprobs` are exactly log q for this request (see the module docstring)."""
        s = request.settings if isinstance(request, GenerationRequest) else request
        constrained = isinstance(request, GenerationRequest) and (request.response_format is not None
                                                                  or request.constraint is not None)
        if s.temperature == 0 or self.reported_logprobs == "proposal":
            return True
        return s.temperature == 1 and s.top_p == 1 and not constrained

    def wants_logprobs(self, request: GenerationRequest) -> bool:
        """Whether this request asks the server for log-probabilities (see the module docstring)."""
        if request.log_q == "required" or self.logprobs == "always":
            return True
        return request.settings.unit == "line" and not self.reports_stop_reason

    # ---- public calls -----------------------------------------------------------------------
    async def complete(self, request: GenerationRequest) -> Completion:
        raw = self.mode == "completions"
        if not raw and request.assistant_prefix:
            request, raw = await http_continuation.route(self, request)
        if request.settings.unit == "word":
            return await http_words.generate_word(self, request, raw)
        if self.n_supported:
            return await self._resources()[1].submit(request, raw)
        return (await self.generate(request, raw=raw))[0]

    async def complete_n(self, request: GenerationRequest, n: int) -> list[Completion]:
        """`n` completions. Servers such as llama.cpp ignore `n`, so unless `n_supported` this sends
        `n` parallel requests with seeds seed, seed+1, … (all unseeded when `request.seed` is None)."""
        _check(n >= 1, "n", n, "must be >= 1")
        if self.n_supported and request.settings.unit != "word" and not (self.mode == "chat" and request.assistant_prefix):
            return await self.generate(request, n=n, raw=self.mode == "completions")
        seeds = [None if request.seed is None else request.seed + i for i in range(n)]
        reqs = [request.replaced(seed=s) for s in seeds]
        return list(await asyncio.gather(*(self.complete(r) for r in reqs)))

    async def aclose(self) -> None:
        pool, self._pool, self._loop, self._batcher = self._pool, None, None, None
        if pool is not None:
            try:
                await pool.close()
            except RuntimeError:  # a pool made on another, closed loop: nothing to do
                pass

    # ---- one HTTP request: n completions ------------------------------------------------------
    async def generate(self, request: GenerationRequest, n: int = 1, *, raw: bool, max_tokens: int | None = None,
                       in_word: bool = False) -> list[OpenAICompletion]:
        """One request for `n` choices, to /completions when `raw` (else /chat/completions);
        `max_tokens`/`in_word`: a word chunk's look-ahead (see `http_words`). Raises `BackendError`
        when the server fails for good."""
        started = time.perf_counter()
        want = self.wants_logprobs(request)
        kind, body = self._body(request, want, max_tokens, raw)
        if n > 1:
            body["n"] = n
        try:
            response = await self.post_json(kind, body)
            out, usage = self._parse_reply(kind, response, request, want, in_word)
        except BackendError:
            self.errors += 1
            raise
        self._account(response, usage, out, started)
        return out

    def _parse_reply(self, kind: str, response: dict[str, Any], request: GenerationRequest, want: bool,
                     in_word: bool) -> tuple[list[OpenAICompletion], tuple[int, int]]:
        """The completions of a reply's choices (by index) and its usage (prompt, completion tokens).
        A reply of the wrong shape (choices that are not objects, a text that is not a string, a
        usage that is not a number, ...) is a `BackendError` naming the server, not a crash."""
        try:
            choices = response.get("choices")
            if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
                raise TypeError(f"'choices' is {type(choices).__name__}, not a list of objects")
            field = "message" if kind == "chat" else "text"
            if not all(isinstance(c.get(field), dict if kind == "chat" else str) for c in choices):
                raise TypeError(f"a choice has no {field!r} {'object' if kind == 'chat' else 'string'}")
            choices = sorted(choices, key=lambda c: c.get("index") or 0)
            if not choices:
                raise BackendError(f"{self._where(kind)} returned no choices", retryable=False)
            if self.reports_stop_reason is None:
                self.reports_stop_reason = "stop_reason" in choices[0]
            out = [parse_choice(self, kind, c, request, want, in_word) for c in choices]
            usage = response.get("usage") or {}
            counts = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        except BackendError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise BackendError(f"{self._where(kind)} sent a reply that is not an OpenAI completion ({exc!r}): "
                               f"{self._redact(dumps_exact(response)[:200].decode(errors='replace'))}",
                               retryable=False) from None
        return out, counts

    def _constraint_fields(self, request: GenerationRequest) -> dict[str, Any]:
        """The server's guided-decoding fields enforcing `request.constraint`; the weight correction
        is then unavailable (servers do not report the allowed mass), recorded as such. llama.cpp
        server: `grammar` (GBNF) and `json_schema`; vLLM: `guided_regex`, `guided_json`,
        `guided_grammar`. Anything else (character sets, predicates, potentials) is refused with a
        `ConstraintError`, a SwarmError, so the run stops: as a plain ValueError it killed only the
        particles that asked, and a program whose other branch asked nothing returned a result."""
        c, where = request.constraint, self.constraints
        kind = getattr(c, "kind", None)
        spec = json.loads(c.source) if kind else None
        if where == "vllm" and kind in ("regex", "json_schema", "grammar"):
            return {{"regex": "guided_regex", "json_schema": "guided_json", "grammar": "guided_grammar"}[kind]: spec}
        if where == "llama.cpp" and kind == "json_schema":
            return {"json_schema": spec}
        if where == "llama.cpp" and kind == "grammar" and "::=" in spec:
            return {"grammar": spec}
        raise ConstraintError(f"{self!r} cannot enforce the constraint {c.describe()} "
                         f"(constraints={where!r}: llama.cpp servers take GBNF grammars and JSON schemas, "
                         "vLLM regex, JSON schemas and grammars); use LlamaCpp in process, or a guarantee")

    def _account(self, response: dict[str, Any], usage: tuple[int, int], out: list[OpenAICompletion],
                 started: float) -> None:
        n_in = usage[0]
        n_out = usage[1] or sum(len(c.tokens) for c in out)
        latency, model = time.perf_counter() - started, response.get("model") or self.model
        for i, c in enumerate(out):  # with n > 1 the prompt is counted once, on the first choice
            c.usage.input_tokens = n_in if i == 0 else 0
            c.usage.output_tokens = n_out if len(out) == 1 else (len(c.tokens) or n_out // len(out))
            c.latency_s, c.model = latency, model
        self.calls += len(out)
        self.input_tokens += n_in
        self.output_tokens += n_out

    def _body(self, request: GenerationRequest, want: bool, max_tokens: int | None,
              raw: bool) -> tuple[str, dict[str, Any]]:
        s = request.settings
        body: dict[str, Any] = {**self.extra_body, "model": self.model, "temperature": s.temperature,
                                "top_p": s.top_p, "max_tokens": max_tokens or s.max_tokens}
        stop = list(s.stop)
        if s.unit == "token":
            body["max_tokens"] = 1
        elif s.unit == "line":
            stop.append("\n")
        if stop:
            body["stop"] = stop
        if request.seed is not None:
            body["seed"] = request.seed
        if request.constraint is not None:
            body.update(self._constraint_fields(request))
        top_k = max(self.top_logprobs, http_words.WORD_TOP_LOGPROBS) if s.unit == "word" else self.top_logprobs
        if raw:
            return "completions", _completions_body(request, body, want, top_k)
        return "chat", _chat_body(request, body, want, top_k)

    # ---- transport: retries, backoff, concurrency --------------------------------------------
    def _resources(self) -> tuple[HttpPool, SiblingBatcher]:
        """The pool and batcher of the running event loop (re-made if the loop changed, e.g. across
        `asyncio.run` calls: both are bound to the loop they were first used on)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._pool is None or self._batcher is None:
            headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}
            self._pool = HttpPool(self.base_url, max_connections=self.max_concurrency, timeout=self.timeout,
                                  headers=headers)
            self._batcher = SiblingBatcher(self)
            self._probing = asyncio.Lock()
            self._loop = loop
        return self._pool, self._batcher

    def probe_lock(self) -> asyncio.Lock:
        self._resources()
        assert self._probing is not None
        return self._probing

    async def post_json(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to /chat/completions or /completions; retry what may pass on a second try."""
        pool = self._resources()[0]
        path = "/chat/completions" if kind == "chat" else "/completions"
        data = dumps_exact(body)
        failure: _Failure | None = None
        for attempt in range(self.max_retries + 1):
            if failure is not None:
                self.retries += 1
                delay = self._backoff(attempt - 1, failure.retry_after)
                log.warning("%s: %s; retry %d/%d in %.2fs", self._where(kind), failure.message,
                            attempt, self.max_retries, delay)
                await asyncio.sleep(delay)
            self.requests += 1
            try:
                reply = await pool.post(path, data)
            except HttpTransportError as exc:
                failure = self._transport_failure(exc)
                continue
            if reply.status == 200:
                try:
                    payload = loads(reply.body)
                except ValueError:
                    payload = None
                if isinstance(payload, dict):
                    return payload
                failure = _Failure(f"HTTP 200 with a body that is not a JSON object: "
                                   f"{self._redact(repr(reply.body[:200]))}", status=200, retryable=False)
                break
            failure = self._status_failure(reply.status, reply.body, reply.headers)
            if not failure.retryable:
                break
        assert failure is not None
        if not failure.retryable:
            raise BackendError(f"{self._where(kind)}: {failure.message} (not retried)",
                               status_code=failure.status, retryable=False)
        raise BackendError(f"{self._where(kind)} failed after {self.max_retries + 1} attempts; "
                           f"last cause: {failure.message}", status_code=failure.status, retryable=True)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with seeded 'equal jitter', at least the server's Retry-After (capped)."""
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** attempt)
        delay *= 0.5 + 0.5 * self._rng.random()
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def _transport_failure(self, exc: HttpTransportError) -> _Failure:
        if exc.timed_out:
            return _Failure(f"request timed out after {self.timeout:g}s", status=None, retryable=True)
        return _Failure(f"connection error ({self._redact(str(exc))})", status=None, retryable=True)

    def _status_failure(self, status: int, body: bytes, headers: dict[str, str]) -> _Failure:
        return _Failure(f"HTTP {status}: {self._redact(error_text(body))}", status=status,
                        retryable=status == 429 or status >= 500, retry_after=retry_after_s(headers.get("retry-after")))

    def _redact(self, text: str) -> str:
        """The key masked as "***", also URL-quoted or JSON-escaped (then every registered secret)."""
        key = self._api_key.get_secret_value()
        if key and key != "EMPTY":
            text = redact(text, secrets=[key]).replace(MASK, "***")
        return redact(text)

    def _where(self, kind: str) -> str:
        path = "/chat/completions" if kind == "chat" else "/completions"
        return f"{_safe_url(self.base_url)}{path} (model {self.model!r})"


# ---- request bodies -----------------------------------------------------------------------------
def _completions_body(request: GenerationRequest, body: dict[str, Any], want: bool, top_k: int) -> dict[str, Any]:
    """The /completions body; a chat or tools request is refused with `InvalidGenerationRequest`
    (a SwarmError: the run stops, where a ValueError killed only the particles that asked)."""
    if request.prompt is None:
        raise InvalidGenerationRequest("OpenAICompatible(mode='completions') needs GenerationRequest.prompt; got "
                                       "'messages' (use mode='chat', or render the chat template yourself)")
    if request.tools:
        raise InvalidGenerationRequest("GenerationRequest.tools needs OpenAICompatible(mode='chat')")
    body["prompt"] = request.prompt + request.assistant_prefix
    if want:
        body["logprobs"] = top_k
    if request.response_format is not None:
        body["response_format"] = request.response_format
    return body


def _chat_body(request: GenerationRequest, body: dict[str, Any], want: bool, top_k: int) -> dict[str, Any]:
    if request.messages is not None:
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
    else:
        messages = [{"role": "user", "content": request.prompt}]
    if request.assistant_prefix:  # continued, not restarted: http_continuation checked the server
        messages.append({"role": "assistant", "content": request.assistant_prefix})
        body.update(continue_final_message=True, add_generation_prompt=False)
    body["messages"] = messages
    if want:
        body["logprobs"] = True
        body["top_logprobs"] = top_k  # always: llama.cpp returns no chat logprobs without it
    if request.tools:
        body["tools"] = request.tools
    if request.response_format is not None:
        body["response_format"] = request.response_format
    return body


# ---- helpers ------------------------------------------------------------------------------------
def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds ("30") or an HTTP date ("Wed, 21 Oct
    2015 07:28:00 GMT", RFC 9110 §10.2.3; a date in the past is 0). None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _check(ok: bool, field: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"OpenAICompatible: {field}={value!r} {rule}")


def _safe_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")))
