"""Agents hosted by Ray actors: a pool of actors per role, never one per particle.

    from agents import Agent
    from agents.ray_hosting import RayHosting

    critic = Agent(name="critic", system="Rate 1-10.", backend=OpenAICompatible(...),
                   hosting=RayHosting(replicas=2, max_concurrency=8, num_cpus=1))
    # equivalently: Agent(..., hosting="ray", replicas=2, max_concurrency=8, resources={"num_cpus": 1})

    policies.SMC(num_particles=1000, runtime="ray", seed=0).run(program)     # the program is unchanged

`agents.hosting.client_for` is the single switch point: an agent whose `hosting` is a `RayHosting`,
"ray", or "auto" while Ray is initialised in the calling process gets a `RayAgentClient`.

- Pools: a role is served by `replicas` actors (`agents.agent_actor.AgentActor`), each an async actor
  with `max_concurrency` requests running at once; the agent's concurrency limit is
  replicas × max_concurrency. The actor holds the backend; a request (`AgentCall`) carries the
  messages, settings and the seed derived from the particle's stream and site address, so the
  particle's state stays in its trace and any replica serves any particle.
- Backpressure: each process that calls an agent (the driver under runtime="local", every segment
  worker under runtime="ray") keeps at most the agent's concurrency limit of requests outstanding (a
  semaphore per agent and event loop); further particles wait in their own coroutine, so a
  population of thousands never floods Ray's queues, and the actors' max_concurrency bounds what the
  backend sees at once. Requests go to the replica with the fewest outstanding (ties in turn).
- Batching: the requests a process issues in one turn of its event loop (a step's particles reach
  their calls together) leave for each replica as one Ray call of up to `max_batch` requests, so
  Ray's per-call cost (about a millisecond of CPU) is paid per batch; each request still gets its
  own reply or its own error. The replies of a batch return together, when its slowest request is
  done; `max_batch=1` sends one Ray call per request.
- Cache affinity: a request goes to the replica its prompt and reply-so-far hash to
  (`prefix_affinity`), so siblings after resampling (same prefix, other seeds) meet the same
  server's prefix cache; a replica that has max_concurrency more requests outstanding than the
  least busy one is passed over for the least busy (and retries after an actor failure go there).
- Placement: `num_cpus` (default 0: the actor reserves no core, like the segment workers; give a
  model-serving actor 1 or more), `num_gpus`, custom `resources` (e.g. {"llm_node": 1} to pin a pool
  to nodes that advertise it) and `scheduling_strategy` ("SPREAD" by default: replicas over nodes).
- Faults: actors are created with `max_restarts`, and calls are retried by Ray (`max_task_retries`)
  and again by the client on `RayActorError`/`ActorUnavailableError` (`call_retries`, with backoff).
  The retried request carries the same seed, so a seeded run is unchanged by a crashed actor.
  An error raised by the backend itself (e.g. `BackendError`) comes back as that error.
- Where: every completion records `served_by` (node id, actor id, replica, pid, and `role`: the
  agent that made the call, even when roles share a pool), which the sample event's info keeps, so
  the global trace shows where each call ran and for whom. The envelope carries the W3C
  `traceparent` of an active OpenTelemetry context, and inside an instrumented run the span id of
  the call itself (see `agents.agent_actor`).
- Lifetime and identity: actors are named `plp-agent:<pool>:<fingerprint>:<replica>` in the current
  Ray namespace and detached: the first process that needs them creates them (`get_if_exists`) and
  every process of the job shares them; they live until `shutdown_agent_pools()` or until the Ray
  instance ends (a local instance that a policy started ends with the run). The pool name is the
  agent's name (or `RayHosting.name`); the fingerprint covers the backend's type and identity and
  the hosting settings. Agents with the same name and fingerprint share one pool (served by the
  backend of the agent that created it): give distinct roles distinct names.
- Journal: requests go through the calling process's run cache (`agents.cache.run_cache`), as for
  a local agent, so the response journal of a checkpointed run records Ray-served calls too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.agent_actor import AgentActor, AgentCall, trace_carrier
from agents.backends.base import Completion, GenerationRequest
from agents.cache import run_cache
from swarm.errors import SwarmError

if TYPE_CHECKING:
    from agents.agent import Agent

ACTOR_PREFIX = "plp-agent:"


class AgentHostingError(SwarmError, RuntimeError):
    """An agent's Ray actors could not be placed, or died for good (after restarts and retries)."""


class RayHosting(BaseModel):
    """Where and how an agent's pool of Ray actors runs (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(1, ge=1)
    max_concurrency: int = Field(8, ge=1)
    """Requests running at once in each actor."""
    num_cpus: float = Field(0.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each actor asks for, e.g. {"llm_node": 1}."""
    scheduling_strategy: Literal["DEFAULT", "SPREAD"] = "SPREAD"
    max_restarts: int = Field(4, ge=-1)
    """Restarts of a crashed actor (-1: unlimited)."""
    max_task_retries: int = Field(4, ge=-1)
    """Ray's retries of a call whose actor died (-1: unlimited)."""
    call_retries: int = Field(4, ge=0)
    """The client's own retries on RayActorError/ActorUnavailableError, with exponential backoff."""
    retry_backoff_s: float = Field(0.2, ge=0)
    max_batch: int | None = Field(None, ge=1)
    """Requests sent together in one Ray call (default: max_concurrency; 1: one call per request)."""
    name: str | None = None
    """The pool's name (default: the agent's name)."""
    ready_timeout_s: float = Field(120.0, gt=0)
    local_fallback: bool = False
    """True: use the pool only when Ray is initialised in the calling process, and run in process
    otherwise (what `Agent(hosting="auto")` does with the default pool). Not part of the pool's
    identity: the same pool serves callers with either setting."""

    @property
    def concurrency_limit(self) -> int:
        """Requests in flight at once for the whole pool (and per calling process)."""
        return self.replicas * self.max_concurrency


def fingerprint(agent: "Agent", hosting: RayHosting) -> str:
    """A short hash of what makes a pool: the backend's type and identity and the hosting settings."""
    backend = agent.backend
    kind = "default" if backend is None else f"{type(backend).__module__}.{type(backend).__qualname__}"
    identity = "llama_cpp:default" if backend is None else backend.identity()
    text = json.dumps({"backend": kind, "identity": identity, "hosting": hosting.model_dump()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


_actor_class: Any = None


def _remote_actor_class() -> Any:
    global _actor_class
    if _actor_class is None:
        import ray

        _actor_class = ray.remote(AgentActor)
    return _actor_class


def _ray_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean 'the actor is gone or restarting': worth a retry."""
    from ray import exceptions

    kinds = [exceptions.RayActorError]
    for name in ("ActorUnavailableError", "ActorDiedError"):
        if hasattr(exceptions, name):
            kinds.append(getattr(exceptions, name))
    return tuple(kinds)


class AgentPool:
    """One role's actors as seen from one process: handles, outstanding counts, the backpressure gate."""

    def __init__(self, agent: "Agent", hosting: RayHosting) -> None:
        self.role = agent.name
        self.hosting = hosting
        self.fingerprint = fingerprint(agent, hosting)
        self.name = f"{ACTOR_PREFIX}{hosting.name or agent.name}:{self.fingerprint}"
        self.identity = f"ray:{self.name}"
        """The response-cache identity of this pool's backend."""
        self._backend = agent.backend
        self.handles: list[Any] = []
        self.info: list[dict[str, Any]] = []
        """describe() of each replica (node id, actor id, pid), filled when the pool is first used."""
        self.outstanding = [0] * hosting.replicas
        self.max_outstanding = 0
        """The most requests this process ever had outstanding to the pool at once."""
        self.calls = 0
        self.batches = 0
        """Ray calls made (a batch carries up to `max_batch` requests)."""
        self.retries = 0
        self._turn = 0
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict] = weakref.WeakKeyDictionary()
        self._sending: set[asyncio.Task] = set()
        self._placing: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

    # -- actors ---------------------------------------------------------------------------------
    def actor_names(self) -> list[str]:
        return [f"{self.name}:{i}" for i in range(self.hosting.replicas)]

    def ensure_actors(self) -> list[Any]:
        """Create (or find) the replicas; returns their handles (not yet known to be placed)."""
        if not self.handles:
            h = self.hosting
            options: dict[str, Any] = {
                "get_if_exists": True, "lifetime": "detached", "max_restarts": h.max_restarts,
                "max_task_retries": h.max_task_retries, "max_concurrency": h.max_concurrency,
                "num_cpus": h.num_cpus, "num_gpus": h.num_gpus, "scheduling_strategy": h.scheduling_strategy}
            if h.resources:
                options["resources"] = dict(h.resources)
            cls = _remote_actor_class()
            self.handles = [cls.options(name=name, **options).remote(self.role, self._backend, i, self.fingerprint,
                                                                     h.max_concurrency)
                            for i, name in enumerate(self.actor_names())]
        return self.handles

    async def ready(self) -> list[dict[str, Any]]:
        """Wait until every replica is placed and answers; returns their descriptions. Concurrent
        first callers share one wait (so they go on together, and their requests batch well)."""
        if self.info:
            return self.info
        loop = asyncio.get_running_loop()
        waiting = self._placing.get(loop)
        if waiting is None:
            waiting = self._placing[loop] = loop.create_task(self._describe())
        try:
            self.info = list(await asyncio.shield(waiting))
        finally:
            if waiting.done():
                self._placing.pop(loop, None)
        return self.info

    async def _describe(self) -> list[dict[str, Any]]:
        handles = self.ensure_actors()
        try:
            return await asyncio.wait_for(asyncio.gather(*(a.describe.remote() for a in handles)),
                                          self.hosting.ready_timeout_s)
        except asyncio.TimeoutError:
            import ray

            raise AgentHostingError(
                f"agent {self.role!r}: {len(handles)} actors asking for num_cpus={self.hosting.num_cpus}, "
                f"num_gpus={self.hosting.num_gpus}, resources={self.hosting.resources} were not placed within "
                f"{self.hosting.ready_timeout_s:g} s; the cluster has {ray.available_resources()} available") from None

    async def stats(self) -> list[dict[str, int]]:
        """Per replica: calls served, in flight now, most ever in flight (measured in the actor)."""
        return list(await asyncio.gather(*(a.stats.remote() for a in self.ensure_actors())))

    # -- calls ----------------------------------------------------------------------------------
    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(self.hosting.concurrency_limit)
        return gate

    def _pick(self, affinity: int | None = None) -> int:
        """The replica for a request: its prefix's replica (`affinity`, see `prefix_affinity`) while
        that one has fewer than max_concurrency requests more outstanding than the least busy one;
        otherwise the replica with the fewest outstanding requests from this process (ties in turn)."""
        n = len(self.outstanding)
        self._turn = (self._turn + 1) % n
        order = [(self._turn + k) % n for k in range(n)]
        least = min(order, key=lambda i: self.outstanding[i])
        if affinity is not None:
            home = affinity % n
            if self.outstanding[home] < self.outstanding[least] + self.hosting.max_concurrency:
                return home
        return least

    async def call(self, request: GenerationRequest, role: str | None = None) -> Completion:
        """Send one request of agent `role` (default: the pool's first role) to a replica (waiting
        for a slot first); retry if the actor dies."""
        async with self._gate():
            await self.ready()
            envelope = AgentCall(agent=role or self.role, request=request, carrier=trace_carrier())
            retryable = _ray_errors()
            attempt = 0
            affinity = prefix_affinity(request)
            while True:
                replica = self._pick(affinity if attempt == 0 else None)
                self.outstanding[replica] += 1
                self.max_outstanding = max(self.max_outstanding, sum(self.outstanding))
                try:
                    reply = await self._submit(replica, envelope)
                except retryable as exc:
                    if attempt >= self.hosting.call_retries:
                        raise AgentHostingError(
                            f"agent {self.role!r}: replica {replica} failed {attempt + 1} times "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
                    attempt += 1
                    self.retries += 1
                    await asyncio.sleep(self.hosting.retry_backoff_s * 2 ** (attempt - 1))
                    continue
                finally:
                    self.outstanding[replica] -= 1
                self.calls += 1
                return reply.completion.model_copy(update={"served_by": reply.served_by})

    def _submit(self, replica: int, envelope: AgentCall) -> "asyncio.Future[Any]":
        """Queue a request for `replica`; the requests queued in one turn of the event loop leave
        together as one `complete_batch` call (at most `max_batch` a call)."""
        loop = asyncio.get_running_loop()
        queues = self._queues.get(loop)
        if queues is None:
            queues = self._queues[loop] = {}
        future = loop.create_future()
        queue = queues.setdefault(replica, [])
        queue.append((envelope, future))
        if len(queue) == 1:
            loop.call_soon(self._flush, loop, replica)
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop, replica: int) -> None:
        queue = self._queues[loop].pop(replica, [])
        size = self.hosting.max_batch or self.hosting.max_concurrency
        for k in range(0, len(queue), size):
            task = loop.create_task(self._send(replica, queue[k:k + size]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, replica: int, batch: list[tuple[AgentCall, "asyncio.Future[Any]"]]) -> None:
        """One Ray call for the batch; each waiting request gets its reply or its own error."""
        from swarm.remote_errors import RemoteError, rebuild_error

        self.batches += 1
        try:
            replies = await self.handles[replica].complete_batch.remote([envelope for envelope, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - every request of the batch sees the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies):
            if future.done():
                continue
            if isinstance(reply, RemoteError):
                future.set_exception(rebuild_error(reply))
            else:
                future.set_result(reply)


def prefix_affinity(request: GenerationRequest) -> int:
    """A hash of the request's prompt and reply so far (not its seed): siblings after resampling
    share it, so they go to the same replica and hit its server's prefix cache (vLLM's automatic
    prefix caching, llama.cpp's slot cache); distinct prefixes spread over the replicas."""
    head = request.prompt if request.messages is None else "\x1e".join(f"{m.role}:{m.content}" for m in request.messages)
    digest = hashlib.blake2b(f"{head}\x1f{request.assistant_prefix}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class RayAgentClient:
    """The `Client` of an agent hosted on Ray: the run's response cache in front of the pool. `role`
    is the calling agent's name (several roles may share a pool)."""

    def __init__(self, pool: AgentPool, role: str | None = None) -> None:
        self.pool = pool
        self.role = role or pool.role

    async def complete(self, request: GenerationRequest) -> Completion:
        return await run_cache().journaled(self.pool.identity, request, lambda: self.pool.call(request, self.role))


# -- the per-process registry -------------------------------------------------------------------
_POOLS: dict[tuple[str, str], AgentPool] = {}


def _session() -> str:
    """Identifies the Ray instance this process is connected to (handles die with it)."""
    import ray

    context = ray.get_runtime_context()
    return f"{getattr(context, 'gcs_address', '')}|{context.get_job_id()}"


def pool_for(agent: "Agent") -> AgentPool:
    """The pool serving `agent` (created in this process's registry on first use)."""
    import ray

    if not ray.is_initialized():
        raise AgentHostingError(f"agent {agent.name!r} is hosted on Ray, but Ray is not initialised in this "
                                "process; run the policy with runtime='ray' or call ray.init() first")
    hosting = agent.ray_hosting()
    key = (_session(), f"{hosting.name or agent.name}:{fingerprint(agent, hosting)}")
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = AgentPool(agent, hosting)
    return pool


def ray_client_for(agent: "Agent") -> RayAgentClient:
    return RayAgentClient(pool_for(agent), agent.name)


def hosted_actor_names() -> list[str]:
    """Names of the agent actors alive in the current namespace."""
    import ray

    return sorted(n for n in ray.util.list_named_actors() if isinstance(n, str) and n.startswith(ACTOR_PREFIX))


def shutdown_agent_pools() -> int:
    """Kill every agent actor of the current namespace (no restart); returns how many."""
    import ray

    killed = 0
    if ray.is_initialized():
        for name in hosted_actor_names():
            try:
                ray.kill(ray.get_actor(name), no_restart=True)
                killed += 1
            except ValueError:  # gone meanwhile
                pass
    _POOLS.clear()
    return killed
