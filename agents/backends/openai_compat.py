"""`OpenAICompatible`: any OpenAI-compatible endpoint (llama.cpp server, vLLM, OpenAI, …) through the
official async `openai` client, with explicit retries, a concurrency limit and token accounting.

What the log-probabilities mean (read this before trusting weights). Servers report *raw model*
log-probabilities (temperature 1, no truncation): llama.cpp's server always, vLLM by default. From
those numbers alone the proposal q is known exactly only when
- temperature == 1 and top_p == 1: q = p, `token_logprobs` = `base_token_logprobs` = reported;
- temperature == 0: q is a point mass (base.py), `token_logprobs` = 0.0, base = reported.
**PROPOSAL_LOGPROBS_INEXACT**: at any other temperature or top_p < 1, `token_logprobs` hold the raw
model's values (an approximation of log q, not log q); `base_token_logprobs` hold the same values,
which *are* log p. The same holds with a `response_format`, which servers enforce with a grammar
(the proposal is then the constrained distribution; llama.cpp's completions endpoint ignores it).
See `proposal_logprobs_exact(request)`. All this assumes the server adds no
sampler of its own: llama.cpp's server applies top_k=40, min_p=0.05 and repeat_penalty=1.1 unless
told otherwise (then even greedy differs from the raw argmax): pass `extra_body=
LLAMA_CPP_PLAIN_SAMPLING` (`VLLM_PLAIN_SAMPLING` for vLLM). For a server that reports processed
(proposal) log-probabilities use `reported_logprobs="proposal"`: token ones exact, base ones known
only at temperature 1 and top_p 1.

Conventions shared with `LlamaCpp`, so both backends give comparable numbers: `"".join(tokens) ==
text`; a token reported beyond the returned text (llama.cpp reports the token that matched a stop
string, then trims the text) keeps its log-probability, its text piece trimmed. Servers do not
report an end-of-sequence token, so (unlike `LlamaCpp`) its probability is missing.

Chunks (`settings.unit`, finish_reason "unit"): "token" → max_tokens=1; "line" → stop=["\\n"], the
reported newline token put back into the chunk (as `LlamaCpp` keeps it); "word" → up to 8 tokens
with top logprobs, cut before the first whitespace-led token after content; `stop_log_prob` (and
`base_stop_log_prob`) = log of the whitespace-led mass at the cut, *approximated* by its share of
the reported top-k mass (end-of-sequence is not counted as a boundary: servers do not report it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
import urllib.parse
from typing import Any, Literal, NamedTuple

import openai
from pydantic import SecretStr

from agents.backends.base import (
    Backend, BackendError, Completion, GenerationRequest, GenerationSettings, ToolCall, Usage,
)
from agents.constraints.report import ConstraintReport
from agents.secrets import MASK, redact, register_secret

log = logging.getLogger(__name__)

WORD_LOOKAHEAD_TOKENS = 8  # unit="word": tokens requested, cut at the first word boundary
WORD_TOP_LOGPROBS = 5  # unit="word": at least this many top logprobs, for the boundary mass

LLAMA_CPP_PLAIN_SAMPLING = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}
"""`extra_body` for llama.cpp servers: turn off the samplers it applies by default (top_k=40,
min_p=0.05, repeat_penalty=1.1), so the proposal is plain temperature/top-p sampling."""
VLLM_PLAIN_SAMPLING = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}
"""`extra_body` for vLLM, which may take sampling defaults from the model's generation_config."""

_Tok = tuple[str, float, dict[str, float]]  # (token text, log-prob, top alternatives)


class OpenAICompletion(Completion):
    """A `Completion` that also carries the base-model mass of the chunk's stopping event (the same
    field and meaning as `LlamaCppCompletion.base_stop_log_prob`)."""

    base_stop_log_prob: float | None = None

    @property
    def base_log_prob(self) -> float | None:
        """log p(chunk) under the base model at temperature 1, including the stopping event."""
        if self.base_token_logprobs is None:
            return None
        return math.fsum([*self.base_token_logprobs, self.base_stop_log_prob or 0.0])


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

    `top_logprobs`: alternatives to request per token (0 = none). `n_supported`: the server honours
    `n` (llama.cpp does not). `reported_logprobs`: "raw" (model at T=1) or "proposal" (after
    temperature/top-p). `require_logprobs`: a non-empty reply without logprobs is a `BackendError`.
    `extra_body`: server-specific fields sent with every request, e.g. `LLAMA_CPP_PLAIN_SAMPLING`.
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 mode: Literal["chat", "completions"] = "chat", timeout: float = 60.0, max_retries: int = 4,
                 backoff_base: float = 0.25, backoff_max: float = 8.0, max_concurrency: int = 16,
                 top_logprobs: int = 0, n_supported: bool = False,
                 reported_logprobs: Literal["raw", "proposal"] = "raw", require_logprobs: bool = True,
                 retry_seed: int = 0, extra_body: dict[str, Any] | None = None,
                 constraints: Literal["llama.cpp", "vllm"] | None = None) -> None:
        _check(mode in ("chat", "completions"), "mode", mode, "must be 'chat' or 'completions'")
        _check(reported_logprobs in ("raw", "proposal"), "reported_logprobs", reported_logprobs,
               "must be 'raw' or 'proposal'")
        _check(timeout > 0, "timeout", timeout, "must be > 0")
        _check(max_retries >= 0, "max_retries", max_retries, "must be >= 0")
        _check(max_concurrency >= 1, "max_concurrency", max_concurrency, "must be >= 1")
        _check(top_logprobs >= 0, "top_logprobs", top_logprobs, "must be >= 0")
        self.base_url, self.model, self.mode = base_url.rstrip("/"), model, mode
        self._api_key = SecretStr(api_key or "EMPTY")
        register_secret(self._api_key)  # masked in traces, spans and error messages from now on
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.backoff_base, self.backoff_max = float(backoff_base), float(backoff_max)
        self.max_concurrency, self.top_logprobs = int(max_concurrency), int(top_logprobs)
        self.n_supported, self.reported_logprobs = n_supported, reported_logprobs
        self.require_logprobs, self.extra_body = require_logprobs, dict(extra_body or {})
        _check(constraints in (None, "llama.cpp", "vllm"), "constraints", constraints, "must be None, 'llama.cpp' or 'vllm'")
        self.constraints = constraints
        self._rng = random.Random(retry_seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self.calls = self.input_tokens = self.output_tokens = self.retries = self.errors = 0

    # ---- identity and display (never the key) ----------------------------------------------
    def __repr__(self) -> str:
        return (f"OpenAICompatible(base_url={_safe_url(self.base_url)!r}, model={self.model!r}, "
                f"mode={self.mode!r}, api_key='***')")

    __str__ = __repr__

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (e.g. sent to a Ray actor): the loop-bound client and semaphore are re-made."""
        return {**self.__dict__, "_loop": None, "_client": None, "_semaphore": None}

    def identity(self) -> str:
        return f"{self.name}:{self.model}@{_safe_url(self.base_url)}/{self.mode}"

    def stats(self) -> dict[str, int]:
        """Token accounting: completions returned, tokens in/out as the server reported them,
        retried attempts, and calls that ended in a `BackendError`."""
        return {"calls": self.calls, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "retries": self.retries, "errors": self.errors}

    def proposal_logprobs_exact(self, request: GenerationRequest | GenerationSettings) -> bool:
        """Whether `token_logprobs` are exactly log q for this request (see the module docstring)."""
        s = request.settings if isinstance(request, GenerationRequest) else request
        constrained = isinstance(request, GenerationRequest) and (request.response_format is not None
                                                                  or request.constraint is not None)
        if s.temperature == 0 or self.reported_logprobs == "proposal":
            return True
        return s.temperature == 1 and s.top_p == 1 and not constrained

    # ---- public calls -----------------------------------------------------------------------
    async def complete(self, request: GenerationRequest) -> Completion:
        return (await self._generate(request, n=1))[0]

    async def complete_n(self, request: GenerationRequest, n: int) -> list[Completion]:
        """`n` completions. Servers such as llama.cpp ignore `n`, so unless `n_supported` this sends
        `n` parallel requests with seeds seed, seed+1, … (all unseeded when `request.seed` is None)."""
        _check(n >= 1, "n", n, "must be >= 1")
        if self.n_supported:
            return await self._generate(request, n=n)
        seeds = [None if request.seed is None else request.seed + i for i in range(n)]
        reqs = [request.model_copy(update={"seed": s}) for s in seeds]
        return list(await asyncio.gather(*(self.complete(r) for r in reqs)))

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        with contextlib.suppress(RuntimeError):  # a client made on another, closed loop: nothing to do
            if client is not None:
                await client.close()

    # ---- one generation ---------------------------------------------------------------------
    async def _generate(self, request: GenerationRequest, n: int) -> list[Completion]:
        started = time.perf_counter()
        kind, kwargs = self._request_kwargs(request)
        if n > 1:
            kwargs["n"] = n
        try:
            response = await self._send(kind, kwargs)
            choices = sorted(response.choices, key=lambda c: c.index)
            if not choices:
                raise BackendError(f"{self._where(kind)} returned no choices", retryable=False)
            out = [self._completion(kind, c, request) for c in choices]
        except BackendError:
            self.errors += 1
            raise
        usage = getattr(response, "usage", None)
        n_in = int(getattr(usage, "prompt_tokens", 0) or 0)
        n_out = int(getattr(usage, "completion_tokens", 0) or 0) or sum(len(c.tokens) for c in out)
        latency, model = time.perf_counter() - started, getattr(response, "model", None) or self.model
        for i, c in enumerate(out):  # with n > 1 the prompt is counted once, on the first choice
            n = n_out if len(out) == 1 else len(c.tokens)
            c.usage, c.latency_s, c.model = Usage(input_tokens=n_in if i == 0 else 0, output_tokens=n), latency, model
        self.calls += len(out)
        self.input_tokens += n_in
        self.output_tokens += n_out
        return out

    def _request_kwargs(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        s = request.settings
        kwargs: dict[str, Any] = {"model": self.model, "temperature": s.temperature, "top_p": s.top_p,
                                  "max_tokens": s.max_tokens}
        stop = list(s.stop)
        top_k = self.top_logprobs
        if s.unit == "token":
            kwargs["max_tokens"] = 1
        elif s.unit == "line":
            stop.append("\n")
        elif s.unit == "word":
            kwargs["max_tokens"] = min(WORD_LOOKAHEAD_TOKENS, s.max_tokens)
            top_k = max(top_k, WORD_TOP_LOGPROBS)
        if stop:
            kwargs["stop"] = stop
        if request.seed is not None:
            kwargs["seed"] = request.seed
        kwargs["extra_body"] = dict(self.extra_body)
        if request.constraint is not None:
            self._constraint_fields(request, kwargs)
        if self.mode == "completions":
            return "completions", self._completions_kwargs(request, kwargs, top_k)
        return "chat", self._chat_kwargs(request, kwargs, top_k)

    def _constraint_fields(self, request: GenerationRequest, kwargs: dict[str, Any]) -> None:
        """Ask the server to enforce `request.constraint` (its guided decoding); the weight correction
        is then unavailable (servers do not report the allowed mass), recorded as such.
        llama.cpp server: `grammar` (GBNF) and `json_schema`; vLLM: `guided_regex`, `guided_json`,
        `guided_grammar`. Anything else (character sets, predicates, potentials) is refused."""
        c, where = request.constraint, self.constraints
        kind = getattr(c, "kind", None)
        spec = json.loads(c.source) if kind else None
        fields: dict[str, Any] | None = None
        if where == "vllm" and kind in ("regex", "json_schema", "grammar"):
            fields = {{"regex": "guided_regex", "json_schema": "guided_json", "grammar": "guided_grammar"}[kind]: spec}
        elif where == "llama.cpp" and kind == "json_schema":
            fields = {"json_schema": spec}
        elif where == "llama.cpp" and kind == "grammar" and "::=" in spec:
            fields = {"grammar": spec}
        if fields is None:
            raise ValueError(f"{self!r} cannot enforce the constraint {c.describe()} "
                               f"(constraints={where!r}: llama.cpp servers take GBNF grammars and JSON schemas, "
                               "vLLM regex, JSON schemas and grammars); use LlamaCpp in process, or a guarantee")
        kwargs["extra_body"].update(fields)

    def _completions_kwargs(self, request: GenerationRequest, kwargs: dict[str, Any], top_k: int) -> dict[str, Any]:
        if request.prompt is None:
            raise ValueError("OpenAICompatible(mode='completions') needs GenerationRequest.prompt; got "
                             "'messages' (use mode='chat', or render the chat template yourself)")
        if request.tools:
            raise ValueError("GenerationRequest.tools needs OpenAICompatible(mode='chat')")
        kwargs["prompt"] = request.prompt + request.assistant_prefix
        kwargs["logprobs"] = top_k
        if request.response_format is not None:
            kwargs["extra_body"]["response_format"] = request.response_format
        return kwargs

    def _chat_kwargs(self, request: GenerationRequest, kwargs: dict[str, Any], top_k: int) -> dict[str, Any]:
        if request.messages is not None:
            messages = [m.model_dump(exclude_none=True) for m in request.messages]
        else:
            messages = [{"role": "user", "content": request.prompt}]
        if request.assistant_prefix:
            # vLLM-style continuation of a partial assistant reply; servers that ignore these two
            # fields (llama.cpp) start a fresh assistant turn after the prefix instead.
            messages.append({"role": "assistant", "content": request.assistant_prefix})
            kwargs["extra_body"].update(continue_final_message=True, add_generation_prompt=False)
        kwargs["messages"] = messages
        kwargs["logprobs"] = True
        kwargs["top_logprobs"] = top_k  # always: llama.cpp returns no chat logprobs without it
        if request.tools:
            kwargs["tools"] = request.tools
        if request.response_format is not None:
            kwargs["response_format"] = request.response_format
        return kwargs

    # ---- transport: retries, backoff, concurrency --------------------------------------------
    def _resources(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        """The client and semaphore for the running event loop (re-created if the loop changed,
        e.g. across `asyncio.run` calls: both are bound to the loop they were first used on)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None or self._semaphore is None:
            self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key.get_secret_value(),
                                              max_retries=0, timeout=self.timeout)
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        return self._client, self._semaphore

    async def _send(self, kind: str, kwargs: dict[str, Any]) -> Any:
        client, semaphore = self._resources()
        create = client.chat.completions.create if kind == "chat" else client.completions.create
        failure: _Failure | None = None
        for attempt in range(self.max_retries + 1):
            if failure is not None:
                self.retries += 1
                delay = self._backoff(attempt - 1, failure.retry_after)
                log.warning("%s: %s; retry %d/%d in %.2fs", self._where(kind), failure.message,
                            attempt, self.max_retries, delay)
                await asyncio.sleep(delay)
            async with semaphore:
                try:
                    return await create(**kwargs)
                except openai.OpenAIError as exc:
                    failure = self._classify(exc)
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

    def _classify(self, exc: openai.OpenAIError) -> _Failure:
        if isinstance(exc, openai.APITimeoutError):
            return _Failure(f"request timed out after {self.timeout:g}s", status=None, retryable=True)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return _Failure(f"connection error ({type(cause).__name__}: {self._redact(str(cause))})",
                            status=None, retryable=True)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            text = self._redact(_server_error_text(exc))
            return _Failure(f"HTTP {status}: {text}", status=status, retryable=status == 429 or status >= 500,
                            retry_after=_retry_after(exc))
        return _Failure(f"{type(exc).__name__}: {self._redact(str(exc))}", status=None, retryable=False)

    def _redact(self, text: str) -> str:
        """The key masked as "***", also URL-quoted or JSON-escaped (then every registered secret)."""
        key = self._api_key.get_secret_value()
        if key and key != "EMPTY":
            text = redact(text, secrets=[key]).replace(MASK, "***")
        return redact(text)

    def _where(self, kind: str) -> str:
        path = "/chat/completions" if kind == "chat" else "/completions"
        return f"{_safe_url(self.base_url)}{path} (model {self.model!r})"

    # ---- responses → Completion --------------------------------------------------------------
    def _completion(self, kind: str, choice: Any, request: GenerationRequest) -> OpenAICompletion:
        if kind == "chat":
            text, toks = choice.message.content or "", _chat_tokens(choice)
            tool_calls = [ToolCall(id=t.id, name=t.function.name, arguments=t.function.arguments or "")
                          for t in (choice.message.tool_calls or []) if getattr(t, "function", None)]
        else:
            text, toks, tool_calls = choice.text or "", _completion_tokens(choice), []
        if toks is None:
            if text and self.require_logprobs:
                raise BackendError(f"{self._where(kind)} returned no logprobs for a non-empty completion; "
                                   "weights need them (pass require_logprobs=False to accept this)")
            toks = []
        unit, finish, stop_lp = request.settings.unit, choice.finish_reason, 0.0
        pieces, text, newline = _align(toks, text, unit == "line")
        if unit == "word":
            k, stop_lp = _cut_word(toks, pieces)
            if k is not None:
                toks, pieces, text, finish = toks[:k], pieces[:k], "".join(pieces[:k]), "unit"
        elif newline or (unit == "token" and finish == "length"):
            finish = "unit"
        token_lps, base_lps, stop_q, stop_p = self._logprob_fields(request.settings, [lp for _, lp, _ in toks], stop_lp)
        report = None if request.constraint is None else ConstraintReport(
            description=request.constraint.describe(), weights="unavailable", complete=request.constraint.complete(text) > 0)
        return OpenAICompletion(text=text, tokens=pieces, token_logprobs=token_lps, base_token_logprobs=base_lps,
                                stop_log_prob=stop_q, base_stop_log_prob=stop_p, finish_reason=finish,
                                backend=self.name, tool_calls=tool_calls, constraint=report)

    def _logprob_fields(self, s: GenerationSettings, reported: list[float], stop: float
                        ) -> tuple[list[float], list[float] | None, float, float | None]:
        """(token_logprobs, base_token_logprobs, stop_log_prob, base_stop_log_prob) per the rules of
        the module docstring."""
        untempered = s.temperature == 1 and s.top_p == 1
        if self.reported_logprobs == "proposal":
            return reported, (list(reported) if untempered else None), stop, (stop if untempered else None)
        if s.temperature == 0:  # greedy: the proposal is a point mass
            return [0.0] * len(reported), reported, 0.0, stop
        return reported, list(reported), stop, stop  # exact only when untempered: PROPOSAL_LOGPROBS_INEXACT


# ---- helpers ------------------------------------------------------------------------------------
def _check(ok: bool, field: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"OpenAICompatible: {field}={value!r} {rule}")


def _safe_url(url: str) -> str:
    """The URL without any user:password part."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def _server_error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        return str(err)
    return str(body) if body else exc.message


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        return float(exc.response.headers["retry-after"])
    except (AttributeError, KeyError, ValueError):
        return None


def _chat_tokens(choice: Any) -> list[_Tok] | None:
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if content is None:
        return None
    return [(t.token, float(t.logprob), {a.token: float(a.logprob) for a in (t.top_logprobs or [])})
            for t in content]


def _completion_tokens(choice: Any) -> list[_Tok] | None:
    lp = getattr(choice, "logprobs", None)
    if lp is None or lp.tokens is None or lp.token_logprobs is None:
        return None
    tops = lp.top_logprobs or [None] * len(lp.tokens)
    out = []
    for i, (tok, val, top) in enumerate(zip(lp.tokens, lp.token_logprobs, tops)):
        if val is None:
            raise BackendError(f"server reported a null logprob for token {i} ({tok!r})", retryable=False)
        out.append((tok, float(val), {k: float(v) for k, v in (top or {}).items()}))
    return out


def _align(toks: list[_Tok], text: str, line: bool) -> tuple[list[str], str, bool]:
    """Token text pieces that join to the (possibly extended) text, and whether a line ended.

    Tokens reported beyond `text` (a stop string the server trimmed) get trimmed pieces; for
    unit="line", a reported newline token is put back into the chunk (text up to the end of the
    token holding the newline). Pieces that do not spell out the text (byte-level tokens) are kept
    as they are."""
    pieces = [t for t, _, _ in toks]
    joined = "".join(pieces)
    if len(joined) <= len(text) or not joined.startswith(text):
        return pieces, text, False
    newline = line and "\n" in joined[len(text):]
    if newline:
        nl, end = joined.index("\n", len(text)), 0
        for piece in pieces:
            end += len(piece)
            if end > nl:
                break
        text = joined[:end]
    out, used = [], 0
    for piece in pieces:
        out.append(piece[:max(0, len(text) - used)])
        used += len(out[-1])
    return out, text, newline


def _cut_word(toks: list[_Tok], pieces: list[str]) -> tuple[int | None, float]:
    """Index of the first whitespace-led token after some content (None: no cut), and the log of the
    whitespace-led mass there, estimated as its share of the reported top-k mass (the drawn token
    included): log Σ_{top-k, whitespace-led} p − log Σ_{top-k} p, i.e. the unseen tail is assumed to
    split in the same proportion. (Σ over the whitespace-led top-k alone, a lower bound, was off by
    0.67 nats on SmolLM2 with top-20, where the mass is spread over many word-initial tokens.)"""
    seen_content = False
    for i, ((tok, lp, top), piece) in enumerate(zip(toks, pieces)):
        if seen_content and tok[:1].isspace():
            top = {**top, tok: lp}
            boundary = [v for t, v in top.items() if t[:1].isspace()]
            return i, min(0.0, _logsumexp(boundary) - _logsumexp(list(top.values())))
        seen_content = seen_content or bool(piece.strip())
    return None, 0.0


def _logsumexp(values: list[float]) -> float:
    m = max(values)
    if m == -math.inf:
        return m
    return m + math.log(math.fsum(math.exp(v - m) for v in values))
