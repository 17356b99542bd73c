"""The Ray actor that hosts one replica of an agent's role, and the envelope its requests travel in.

The actor holds the backend (the model, or a client of an endpoint) and nothing about particles:
an `AgentCall` carries everything one generation needs (the request with its messages, settings and
the seed derived from the particle's random stream and site address), so any replica can serve any
particle, a restarted replica serves the same requests with the same results, and particle state
stays in the trace. An `AgentReply` returns the completion with where it ran and for whom (`served_by`: node, actor,
replica, pid, and `role`, the agent that made the call, which is not always the one whose
backend the pool holds: distinct roles may share a pool, e.g. `RayHosting(name="smollm2")`).
Requests arrive one per Ray call (`complete`) or batched (`complete_batch`); either way at most
`max_concurrency` of them reach the backend at once.

Tracing: when the caller has an active OpenTelemetry context, the envelope carries its W3C
`traceparent` (`trace_carrier`); the actor extracts it and runs the call inside a child span
(`plp.agent.generate`, a no-op unless a tracer provider is set in the actor's process) and reports
the trace id and parent span id it joined (`served_by["trace_id"]`, `["parent_span_id"]`), so
spans of a distributed run join one trace. Inside an instrumented run the current context is the
run's (observability.otel attaches it while the run goes on), marked by the W3C tracestate entry
`plp` (`RUN_TRACESTATE_KEY`): each call then gets a span id of its own, which the actor's span
joins and the completion reports, and the listener builds the call's `chat` span with that id, so
the actor's span nests under the LLM call that caused it. The core (`swarm`) stays free of these
imports; without `opentelemetry` installed nothing is injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field

from agents.backends import default_backend
from agents.backends.base import Backend, Completion, GenerationRequest
from swarm.remote_errors import RemoteError, capture_error


class AgentCall(BaseModel):
    """The request envelope: what one generation needs, nothing about the particle's history."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    """The name of the agent (role) that made the call; several roles may share one pool."""
    request: GenerationRequest
    carrier: dict[str, str] = Field(default_factory=dict)
    """W3C trace context (`traceparent`, `tracestate`) of the caller, when one is active."""


class AgentReply(BaseModel):
    completion: Completion
    served_by: dict[str, Any]


RUN_TRACESTATE_KEY = "plp"
RUN_SCOPE_TRACE_KEY = "otel.run_context"
"""`run_scope()` key of the run's W3C context (JSON of its headers), put there by the OTel listener
when a run starts: the run scope's plain values travel with the program to Ray segment workers,
where no OpenTelemetry span is current, so the calls made there still join the run's trace."""
"""The W3C tracestate key on a plp run's context: calls made under it get a span id of their own."""


def trace_carrier() -> dict[str, str]:
    """The caller's OpenTelemetry context as W3C headers ({} when none is active or OTel is absent).
    Under a plp run's context (tracestate `plp`) the `traceparent` names a new span id for this call:
    the call's `chat` span, which the run's listener builds later with the id the actor reports."""
    try:
        from opentelemetry import propagate, trace
    except ImportError:  # pragma: no cover - opentelemetry-api is a dependency
        return {}
    carrier: dict[str, str] = {}
    current = trace.get_current_span().get_span_context()
    if not current.is_valid:  # a segment worker: the run's context travelled in the run scope
        current = _run_scope_context(trace, propagate)
    if current.is_valid and current.trace_state.get(RUN_TRACESTATE_KEY) is not None:
        call = trace.SpanContext(current.trace_id, random.getrandbits(64) or 1, False, current.trace_flags,
                                 current.trace_state)
        propagate.inject(carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(call)))
    else:
        propagate.inject(carrier)
    return carrier


def _run_scope_context(trace: Any, propagate: Any) -> Any:
    """The span context of the run whose particle executes here, from the run scope (or invalid)."""
    import json

    from swarm.effects import current_run_scope

    scope = current_run_scope()   # outside a run nothing is read: a finished run leaves no context behind
    headers = scope.get(RUN_SCOPE_TRACE_KEY) if scope is not None else None
    if not headers:
        return trace.INVALID_SPAN_CONTEXT
    return trace.get_current_span(propagate.extract(json.loads(headers))).get_span_context()


@contextlib.contextmanager
def child_span(carrier: dict[str, str], name: str, attributes: dict[str, Any]) -> Iterator[dict[str, str] | None]:
    """Run the body in a span whose parent is the caller's context; yields the trace id and parent
    span id it joined ({"trace_id", "parent_span_id"} in hex), or None without a valid context."""
    if not carrier:
        yield None
        return
    try:
        from opentelemetry import propagate, trace
    except ImportError:  # pragma: no cover
        yield None
        return
    context = propagate.extract(carrier)
    parent = trace.get_current_span(context).get_span_context()
    joined = {"trace_id": format(parent.trace_id, "032x"), "parent_span_id": format(parent.span_id, "016x")} \
        if parent.is_valid else None
    tracer = trace.get_tracer("plp-swarm.agents")
    with tracer.start_as_current_span(name, context=context, attributes=attributes):
        yield joined


class AgentActor:
    """One replica of a role (a plain class; `agents.ray_hosting` wraps it with `ray.remote`)."""

    def __init__(self, role: str, backend: Backend | None, replica: int, fingerprint: str,
                 max_concurrency: int = 8) -> None:
        self.role = role
        self.replica = replica
        self.fingerprint = fingerprint
        self._backend = backend
        self.max_concurrency = max_concurrency
        self.served = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._slots: asyncio.Semaphore | None = None
        import ray

        context = ray.get_runtime_context()
        self.node_id = context.get_node_id()
        self.actor_id = context.get_actor_id()

    @property
    def backend(self) -> Backend:
        if self._backend is None:  # the embedded default model, loaded in the actor's process
            self._backend = default_backend()
        return self._backend

    def describe(self) -> dict[str, Any]:
        """Who and where: role, replica, fingerprint, node id, actor id, process id."""
        return {"role": self.role, "replica": self.replica, "fingerprint": self.fingerprint,
                "node_id": self.node_id, "actor_id": self.actor_id, "pid": os.getpid()}

    def stats(self) -> dict[str, Any]:
        """Calls served, in flight now, and the most ever in flight at once (backpressure tests); the
        backend's own `stats()` under "backend" when it has them (e.g. LlamaCpp's batch widths)."""
        out: dict[str, Any] = {"served": self.served, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight}
        if callable(getattr(self._backend, "stats", None)):
            out["backend"] = self._backend.stats()
        return out

    async def complete_batch(self, calls: list[AgentCall]) -> list[AgentReply | RemoteError]:
        """Serve several requests (one Ray call, so Ray's per-call cost is paid once); each reply is
        an `AgentReply` or, when the backend raised, the error as a `RemoteError`."""
        return list(await asyncio.gather(*(self._complete_or_error(call) for call in calls)))

    async def _complete_or_error(self, call: AgentCall) -> AgentReply | RemoteError:
        try:
            return await self.complete(call)
        except Exception as exc:  # noqa: BLE001 - goes back to the caller as its own error
            return capture_error(exc, f"agent {self.role!r} replica {self.replica} (pid {os.getpid()})")

    async def complete(self, call: AgentCall) -> AgentReply:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        async with self._slots:  # at most max_concurrency requests reach the backend at once
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                attributes = {"gen_ai.agent.name": call.agent, "plp.agent.replica": self.replica}
                with child_span(call.carrier, "plp.agent.generate", attributes) as joined:
                    completion = await self.backend.complete(call.request)
            finally:
                self.in_flight -= 1
        self.served += 1
        served_by = {"node_id": self.node_id, "actor_id": self.actor_id, "replica": self.replica,
                     "pid": os.getpid(), "role": call.agent, **(joined or {})}
        return AgentReply(completion=completion, served_by=served_by)

    async def aclose(self) -> None:
        if self._backend is not None:
            await self._backend.aclose()
