"""Where an agent's generations are computed: a client per agent per run.

`client_for(agent)` is the single switch point. It returns the client the current run uses for
`agent`: a `LocalClient` around the agent's backend in this process, or — when the agent is hosted
on Ray (`Agent(hosting=RayHosting(...))`, `hosting="ray"`, or "auto" with Ray initialised) — a
client that sends the request to the agent's pool of Ray actors (see `agents.ray_hosting`). Both go
through the run's response cache, which journals every completed call into the run's checkpoint
directory when the run checkpoints (`swarm.checkpoint`), so a resumed run repeats no call.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

from agents.backends.base import Backend, Completion, GenerationRequest
from agents.cache import ResponseCache, request_key
from swarm.checkpoint import CHECKPOINT_DIR_KEY, RESPONSE_JOURNAL, active_checkpoint
from swarm.runtime import run_scope

if TYPE_CHECKING:
    from agents.agent import Agent


class Client(Protocol):
    async def complete(self, request: GenerationRequest) -> Completion: ...


class LocalClient:
    """Calls a backend in this process, through a response cache."""

    def __init__(self, backend: Backend, cache: ResponseCache) -> None:
        self.backend = backend
        self.cache = cache

    async def complete(self, request: GenerationRequest) -> Completion:
        key = request_key(self.backend.identity(), request)
        return await self.cache.get_or_call(key, lambda: self.backend.complete(request))


_default_backend: Backend | None = None


def default_backend() -> Backend:
    """The embedded default: SmolLM2-135M-Instruct through in-process llama.cpp (one per process)."""
    global _default_backend
    if _default_backend is None:
        from agents.backends.llama_cpp import LlamaCpp

        _default_backend = LlamaCpp()
    return _default_backend


_JOURNALED: "OrderedDict[tuple[str, str], ResponseCache]" = OrderedDict()
"""In processes that run other processes' particles (Ray segment workers): the journaled cache of
each recent checkpointed run, by (checkpoint directory, run id)."""


def run_cache() -> ResponseCache:
    """The response cache of the current run (one per policy run; process-wide outside runs),
    journaled to the run's checkpoint directory when it has one (`swarm.checkpoint`)."""
    scope = run_scope()
    directory = scope.get(CHECKPOINT_DIR_KEY)
    if directory is None and (active := active_checkpoint()) is not None:
        return _journaled_cache(*active)  # a segment of a checkpointed run, in a worker process
    cache = scope.get("agents.cache")
    if cache is None:
        journal = os.path.join(directory, RESPONSE_JOURNAL) if directory else None
        cache = scope["agents.cache"] = ResponseCache(journal=journal)
    return cache


def _journaled_cache(directory: str, run_id: str, keep: int = 4) -> ResponseCache:
    cache = _JOURNALED.get((directory, run_id))
    if cache is None:
        cache = _JOURNALED[(directory, run_id)] = ResponseCache(journal=os.path.join(directory, RESPONSE_JOURNAL))
        while len(_JOURNALED) > keep:
            _JOURNALED.popitem(last=False)[1].close()
    _JOURNALED.move_to_end((directory, run_id))
    return cache


def client_for(agent: "Agent") -> Client:
    if agent.hosted_on_ray():
        from agents.ray_hosting import ray_client_for

        return ray_client_for(agent)
    return LocalClient(agent.backend or default_backend(), run_cache())


def completion_info(agent: "Agent", request: GenerationRequest, completion: Completion, started_ns: int,
                    backend_name: str) -> dict[str, Any]:
    """The metadata a generation's sample event carries (read by budgets and span exporters)."""
    return {
        "agent": agent.name,
        "backend": completion.backend or backend_name,
        "model": completion.model,
        "usage": {"input_tokens": completion.usage.input_tokens, "output_tokens": completion.usage.output_tokens},
        "latency_s": completion.latency_s or (time.time_ns() - started_ns) / 1e9,
        "started_at_ns": started_ns,
        "ended_at_ns": time.time_ns(),
        "seed": request.seed,
        "temperature": request.settings.temperature,
        "unit": request.settings.unit,
        "finish_reason": completion.finish_reason,
        "tokens": list(completion.tokens),
        "token_logprobs": list(completion.token_logprobs),
        "base_token_logprobs": None if completion.base_token_logprobs is None else list(completion.base_token_logprobs),
        "log_prob": completion.log_prob,
        "base_log_prob": completion.base_log_prob,
        "prompt": [m.model_dump(exclude_none=True) for m in request.messages] if request.messages is not None
        else request.prompt,
        "assistant_prefix": request.assistant_prefix,
        "completion": completion.text,
        **({"served_by": dict(completion.served_by)} if completion.served_by else {}),
        **({"kv_cache": kv} if (kv := getattr(completion, "kv_cache", None)) else {}),
    }
