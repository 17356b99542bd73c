"""Who serves an agent's generation requests: a client per agent per run.

`client_for(agent)` is the single switch point. It returns the client the current run uses for
`agent`: a `LocalClient` around the agent's backend in this process, or — when the agent is hosted
on Ray (`Agent(hosting=RayHosting(...))`, `hosting="ray"`, or "auto" with Ray initialised) — a
client that sends the request to the agent's pool of Ray actors (`agents.ray_hosting`). Both go
through the run's response cache (`agents.cache.run_cache`), which journals every completed call
into the run's checkpoint directory when the run checkpoints, so a resumed run repeats no call.
`completion_info` is what a completed call records in its sample event.

(These lived in `agents.hosting` with the run cache and the default backend, which now live with
the cache and the backends: that module only re-exports them, deprecated.)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from agents.backends import default_backend
from agents.backends.base import Backend, Completion, GenerationRequest
from agents.cache import ResponseCache, run_cache
from swarm.effects import run_scope

if TYPE_CHECKING:
    from agents.agent import Agent


class Client(Protocol):
    async def complete(self, request: GenerationRequest) -> Completion: ...


class LocalClient:
    """Calls a backend in this process, through the run's response journal when the run
    checkpoints (a resumed run must find its calls), else straight to the backend
    (`ResponseCache.journaled`)."""

    def __init__(self, backend: Backend, cache: ResponseCache) -> None:
        self.backend = backend
        self.cache = cache

    async def complete(self, request: GenerationRequest) -> Completion:
        return await self.cache.journaled(self.backend.identity(), request, lambda: self.backend.complete(request))


def client_for(agent: "Agent") -> Client:
    """The client for `agent` in the current run: its Ray pool's, or its backend's in this process
    (decided once per agent and run, kept in the run scope)."""
    scope = run_scope()
    key = ("agents.client", id(agent))
    client = scope.get(key)
    if client is None or client[0] is not agent:
        if agent.hosted_on_ray():
            from agents.ray_hosting import ray_client_for

            client = (agent, ray_client_for(agent))
        else:
            client = (agent, LocalClient(agent.backend or default_backend(), run_cache()))
        scope[key] = client
    return client[1]


def completion_info(agent: "Agent", request: GenerationRequest, completion: Completion, started_ns: int,
                    backend_name: str, log_prob: float | None = None) -> dict[str, Any]:
    """The metadata a generation's sample event carries (read by budgets and span exporters):
    agent, backend and model, usage, timing, seed and settings, the tokens with their proposal and
    base log-probabilities, the prompt, the completion; `log_q` (how exact log q is) and
    `tokens_generated` vs `tokens_kept` (a chunk's look-ahead is generated, not kept; kept is None
    when the backend returned no token pieces). `log_prob` is `completion.log_prob` when the caller
    has it already."""
    ended = time.time_ns()
    settings = request.settings
    usage = completion.usage
    tokens = completion.tokens
    base = completion.base_token_logprobs
    messages = request.messages
    info = {
        "agent": agent.name,
        "backend": completion.backend or backend_name,
        "model": completion.model,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        "latency_s": completion.latency_s or (ended - started_ns) / 1e9,
        "started_at_ns": started_ns,
        "ended_at_ns": ended,
        "seed": request.seed,
        "temperature": settings.temperature,
        "unit": settings.unit,
        "finish_reason": completion.finish_reason,
        "tokens": list(tokens),
        "token_logprobs": list(completion.token_logprobs),
        "base_token_logprobs": None if base is None else list(base),
        "log_prob": completion.log_prob if log_prob is None else log_prob,
        "base_log_prob": None if base is None else completion.base_log_prob,  # with a chunk's stopping event
        "prompt": request.prompt if messages is None else [_message_dict(m) for m in messages],
        "assistant_prefix": request.assistant_prefix,
        "completion": completion.text,
        "log_q": completion.log_q_quality,
        "tokens_generated": usage.output_tokens,
        "tokens_kept": len(tokens) if tokens or not completion.text else None,
    }
    if completion.served_by:
        info["served_by"] = dict(completion.served_by)
    kv_cache = completion.kv_cache if _reports_kv_cache(type(completion)) else None
    if kv_cache:
        info["kv_cache"] = kv_cache
    if completion.tool_calls:
        info["tool_calls"] = [c.model_dump() for c in completion.tool_calls]
    return info


_KV_CACHE_REPORTERS: dict[type, bool] = {}


def _reports_kv_cache(kind: type) -> bool:
    """Whether completions of this class have a `kv_cache` report (e.g. `LlamaCpp`'s), decided once
    per class: `getattr(completion, "kv_cache", None)` on a pydantic model without it raises and
    catches an AttributeError inside pydantic's `__getattr__`, ~2.5 µs on every call."""
    known = _KV_CACHE_REPORTERS.get(kind)
    if known is None:
        known = _KV_CACHE_REPORTERS[kind] = any("kv_cache" in vars(k) for k in kind.__mro__) or \
            "kv_cache" in getattr(kind, "model_fields", {})
    return known


def _message_dict(message: Any) -> dict[str, Any]:
    """`message.model_dump(exclude_none=True)` of a ChatMessage, without pydantic's serializer (it
    runs for every message of every prompt)."""
    out = {"role": message.role, "content": message.content}
    for name in ("name", "tool_call_id", "tool_calls"):
        value = getattr(message, name)
        if value is not None:
            out[name] = value
    return out
