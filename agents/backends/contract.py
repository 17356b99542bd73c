"""The contract every LLM backend keeps, as a check you can run against your own class.

    from agents.backends.contract import BackendClaims, check_backend

    check_backend(MyBackend(...))                                  # inside a running loop: await check_backend_async
    check_backend(MyBackend(...), BackendClaims(raw_prompts=False))  # a chat-only endpoint

What it checks (each a function below, raising `BackendContractViolation` with the check's name):

- **identity**: `identity()` is a non-empty string, the same on every call and after pickling (a
  backend travels to Ray actors by pickle, `picklable`);
- **shape**, for chat and raw-prompt requests: a `Completion` whose tokens join to its text, one
  log-probability per token (base ones too when reported), every log-probability finite and ≤ 0,
  `log_prob` their sum plus `stop_log_prob` ≤ 0, non-negative usage and latency, at most
  `max_tokens` tokens;
- **seeds** (`seeded`): the same request with the same seed gives the same completion, and eight
  seeds at temperature 1 do not all give the same one (a backend that ignored seeds would make
  every particle identical);
- **units**: `unit="token"` returns one token, `"word"` one word (no inner whitespace), `"line"`
  no newline before its last token (which may hold "\n\n");
- **concurrency**: requests awaited together give what they give one by one;
- **log-probabilities** (`honest_logprobs`): greedy decoding (temperature 0) reports log q = 0 and
  ignores the seed; at temperature 1 the base log-probabilities equal the proposal ones; and the
  reported log q is the probability the token was drawn with: over `draws` one-token draws at
  `temperature`, a token reported with probability q ≥ 0.05 appears K·q ± 5·√(K q (1 − q)) + 1
  times, and so does the rest of the vocabulary pooled; and the same token is always reported with
  the same log q (to 1e-3 nats: identical requests, identical distribution).

The 5-sigma bands make a false alarm rarer than 1e-4 per band for a backend that keeps its claims
(normal approximation, K·q ≥ 5), on any CPU. They catch a proposal/base mix-up, a log-probability
from the wrong position, and an unseeded sampler; they are too coarse for subtle truncation (a
server's default top-k/min-p filters): raise `draws` for that.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from agents.backends.base import Backend, ChatMessage, Completion, GenerationRequest, GenerationSettings
from swarm.errors import SwarmError
from swarm.remote_errors import pickler


class BackendContractViolation(SwarmError, AssertionError):
    """A backend broke its contract; the message names the check."""


@dataclass(frozen=True)
class BackendClaims:
    """What a backend promises (every claim defaults to what the built-in real backends keep)."""

    chat: bool = True
    raw_prompts: bool = True
    units: tuple[str, ...] = ("token", "word", "line")
    seeded: bool = True
    """Same request and seed → same completion; different seeds at temperature 1 → different draws."""
    honest_logprobs: bool = True
    """Reported log q is that of the distribution the tokens were drawn from (false for test doubles)."""
    temperature: float = 1.0
    """The temperature at which the sampling-frequency check runs (exact log q is claimed there)."""
    picklable: bool = True


def _fail(check: str, detail: str) -> BackendContractViolation:
    return BackendContractViolation(f"{check}: {detail}")


def _request(kind: str, prompt: str, *, seed: int | None = 1, **settings: Any) -> GenerationRequest:
    """A request that asks for log-probabilities (`log_q="required"`): the contract checks them, and
    HTTP backends skip them unless a weight needs them."""
    s = GenerationSettings(**{"max_tokens": 8, **settings})
    if kind == "chat":
        return GenerationRequest(messages=[ChatMessage(role="user", content=prompt)], settings=s, seed=seed,
                                 log_q="required")
    return GenerationRequest(prompt=prompt, settings=s, seed=seed, log_q="required")


def check_identity(backend: Backend, claims: BackendClaims) -> None:
    first = backend.identity()
    if not isinstance(first, str) or not first or backend.identity() != first:
        raise _fail("identity", f"identity() must be a stable non-empty string, got {first!r}")
    if claims.picklable:
        try:
            copy = pickler().loads(pickler().dumps(backend))
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            raise _fail("identity", f"the backend cannot be pickled (Ray actors receive it so): "
                        f"{type(exc).__name__}: {exc}") from exc
        if copy.identity() != first:
            raise _fail("identity", f"identity() changes through pickling: {first!r} → {copy.identity()!r}")


def check_shape(completion: Any, request: GenerationRequest, what: str) -> None:
    """A well-formed completion (see the module docstring)."""
    if not isinstance(completion, Completion):
        raise _fail("shape", f"{what}: complete() returned {type(completion).__name__}, not a Completion")
    c, n = completion, len(completion.token_logprobs)
    if c.tokens and "".join(c.tokens) != c.text:
        raise _fail("shape", f"{what}: tokens {c.tokens!r} do not join to the text {c.text!r}")
    if c.tokens and len(c.tokens) != n or c.base_token_logprobs is not None and len(c.base_token_logprobs) != n:
        raise _fail("shape", f"{what}: {len(c.tokens)} tokens, {n} log-probabilities, "
                    f"{None if c.base_token_logprobs is None else len(c.base_token_logprobs)} base ones")
    values = [*c.token_logprobs, *(c.base_token_logprobs or []), c.stop_log_prob]
    if not all(math.isfinite(v) and v <= 1e-9 for v in values) or c.log_prob > 1e-9:
        raise _fail("shape", f"{what}: log-probabilities must be finite and ≤ 0, got {values!r}")
    if min(c.usage.input_tokens, c.usage.output_tokens) < 0 or c.latency_s < 0:
        raise _fail("shape", f"{what}: negative usage or latency ({c.usage!r}, {c.latency_s!r})")
    if n > request.settings.max_tokens:
        raise _fail("shape", f"{what}: {n} tokens for max_tokens={request.settings.max_tokens}")


def _same(a: Completion, b: Completion, tol: float = 1e-6) -> bool:
    return a.text == b.text and len(a.token_logprobs) == len(b.token_logprobs) and all(
        abs(x - y) <= tol for x, y in zip(a.token_logprobs, b.token_logprobs))


async def check_seeds(backend: Backend, kind: str, prompt: str) -> None:
    one, again = [await backend.complete(_request(kind, prompt, seed=5)) for _ in range(2)]
    if not _same(one, again):
        raise _fail("seeds", f"the same {kind} request with seed 5 gave {one.text!r}, then {again.text!r}")
    texts = {(await backend.complete(_request(kind, prompt, seed=s))).text for s in range(100, 108)}
    if len(texts) < 2:
        raise _fail("seeds", f"eight seeds at temperature 1 all gave {texts.pop()!r}: the seed is ignored")


async def check_units(backend: Backend, kind: str, prompt: str, units: tuple[str, ...]) -> None:
    for unit in units:
        request = _request(kind, prompt, unit=unit, max_tokens=16)
        c = await backend.complete(request)
        check_shape(c, request, f"unit={unit!r}")
        if unit == "token" and len(c.token_logprobs) != 1:
            raise _fail("units", f"unit='token' returned {len(c.token_logprobs)} tokens ({c.text!r})")
        if unit == "word" and len(c.text.split()) > 1:
            raise _fail("units", f"unit='word' returned several words: {c.text!r}")
        if unit == "line" and "\n" in ("".join(c.tokens[:-1]) if c.tokens else c.text.rstrip("\n")):
            raise _fail("units", f"unit='line' returned several lines: {c.text!r}")


async def check_concurrency(backend: Backend, kind: str, prompt: str) -> None:
    requests = [_request(kind, prompt, seed=s) for s in range(20, 24)]
    together = await asyncio.gather(*(backend.complete(r) for r in requests))
    for request, c in zip(requests, together):
        alone = await backend.complete(request)
        if not _same(c, alone, tol=1e-4):
            raise _fail("concurrency", f"seed {request.seed}: {c.text!r} together, {alone.text!r} alone")


async def check_greedy_and_base(backend: Backend, kind: str, prompt: str) -> None:
    a, b = [await backend.complete(_request(kind, prompt, seed=s, temperature=0.0)) for s in (1, 2)]
    if a.text != b.text or any(v != 0.0 for v in a.token_logprobs):
        raise _fail("log-probabilities", f"greedy decoding must ignore the seed and report log q = 0, got "
                    f"{a.text!r} / {b.text!r}, log q {a.token_logprobs!r}")
    c = await backend.complete(_request(kind, prompt, seed=3))
    if c.base_token_logprobs is not None and any(
            abs(x - y) > 1e-6 for x, y in zip(c.token_logprobs, c.base_token_logprobs)):
        raise _fail("log-probabilities", "at temperature 1 the proposal is the base model, but token and base "
                    f"log-probabilities differ: {c.token_logprobs!r} vs {c.base_token_logprobs!r}")


async def check_frequencies(backend: Backend, kind: str, prompt: str, temperature: float, draws: int) -> None:
    """The reported log q against how often each token is drawn (see the module docstring)."""
    seen: dict[str, list[float]] = {}
    for s in range(1000, 1000 + draws):
        c = await backend.complete(_request(kind, prompt, seed=s, unit="token", max_tokens=1, temperature=temperature))
        key = c.tokens[0] if c.tokens else c.text
        seen.setdefault(key, []).append(c.token_logprobs[0])
    frequent = {k: v for k, v in seen.items() if math.exp(max(v)) >= 0.05}
    for token, logqs in frequent.items():
        if max(logqs) - min(logqs) > 1e-3:
            raise _fail("log-probabilities", f"token {token!r} was reported with log q from {min(logqs):.4f} "
                        f"to {max(logqs):.4f} for identical requests")
    bins = [(repr(t), len(v), math.exp(v[0])) for t, v in frequent.items()]
    rest = 1.0 - math.fsum(q for _, _, q in bins)
    bins.append(("the rest of the vocabulary", draws - sum(n for _, n, _ in bins), max(rest, 0.0)))
    for name, count, q in bins:
        band = 5.0 * math.sqrt(draws * q * (1.0 - q)) + 1.0
        if abs(count - draws * q) > band:
            raise _fail("log-probabilities", f"{name} was drawn {count} times in {draws} at temperature "
                        f"{temperature:g}, but its reported probability {q:.4f} predicts {draws * q:.1f} ± {band:.1f}")


async def check_backend_async(backend: Backend, claims: BackendClaims = BackendClaims(), *,
                              prompt: str = "One, two, three,", draws: int = 100) -> dict[str, str]:
    """Run every claimed check; returns {check: what was checked}. The backend is closed at the end.
    `draws` one-token completions measure sampling frequencies (0: skip that check)."""
    report: dict[str, str] = {}
    check_identity(backend, claims)
    report["identity"] = "stable" + (", survives pickling" if claims.picklable else "")
    kinds = [k for k, claimed in (("chat", claims.chat), ("raw", claims.raw_prompts)) if claimed]
    if not kinds:
        raise ValueError("BackendClaims: a backend must accept chat or raw-prompt requests")
    for kind in kinds:
        request = _request(kind, prompt)
        check_shape(await backend.complete(request), request, f"{kind} request")
        await check_units(backend, kind, prompt, claims.units)
        await check_concurrency(backend, kind, prompt)
        if claims.seeded:
            await check_seeds(backend, kind, prompt)
        if claims.honest_logprobs:
            await check_greedy_and_base(backend, kind, prompt)
        report[kind] = f"shape, units {claims.units}, concurrency" + (", seeds" if claims.seeded else "")
    if claims.honest_logprobs and draws > 0:
        await check_frequencies(backend, kinds[-1], prompt, claims.temperature, draws)
        report["log-probabilities"] = f"{draws} one-token draws at T={claims.temperature:g}"
    await backend.aclose()
    return report


def check_backend(backend: Backend, claims: BackendClaims = BackendClaims(), **options: Any) -> dict[str, str]:
    """`check_backend_async` for code outside an event loop."""
    return asyncio.run(check_backend_async(backend, claims, **options))
