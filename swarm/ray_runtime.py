"""`RayRuntime`: particle segments run on a fixed pool of Ray actors, the *segment workers*.

- One pool of `num_workers` actors per runtime, created by `start()` and killed by `aclose()`:
  never an actor per particle. A step of N particles is one call per worker (or chunks of at most
  `chunk_size`); the coordinator reassembles the Segments in task order.
- The program (with its arguments, seed, β, policy handlers and the run scope's plain values) is put
  in the object store once per `SegmentRunner`; workers cache it under a token, so a step ships only
  the tasks. Each worker keeps, per runner, one run scope shared by its executions (e.g. the agents'
  response cache of that run: it never outlives the run's runner).
- Workers exchange deltas. A worker keeps its particles' executions alive between steps
  (`swarm.live`) and the recorded path of every particle it ran in the last step; it returns only the
  events each segment appended. The coordinator sends a task to the worker that ran the particle's
  `source` (its own stream, or its parent's after a resampling) while that worker has room: the
  first offspring continues the parent's execution there and the others replay the parent's path
  from the worker's own store, so no past event crosses the wire. Only an offspring placed on another
  worker (to balance the pool) is sent its prefix. Routing changes cost, never results: every draw
  is addressed by (seed, particle stream, site address).
- A `SwarmError` raised in a worker is re-raised in the driver as the same type with the same
  message; the remote traceback is attached as a note.

Programs and policy handlers are pickled with cloudpickle: functions of importable modules by
reference (workers import them: the repo root is put on the workers' PYTHONPATH), closures and
lambdas by value. On a remote cluster, ship the code with `init_kwargs={"runtime_env": ...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import sys
import uuid
import weakref
from collections import OrderedDict
from operator import attrgetter
from pathlib import Path
from typing import Any

import ray
import ray.cloudpickle as cloudpickle
from ray.exceptions import RayError, RayTaskError

from swarm.errors import SwarmError
from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.live import LiveExecutions
from swarm.gc_tuning import relaxed_gc
from swarm.remote_errors import capture_error, rebuild_error
from swarm.runtime_api import Runtime
from swarm.trace import ErrorEvent, FactorEvent, GuaranteeEvent, InteractEvent, SampleEvent, Trace

REPO_ROOT = str(Path(__file__).resolve().parents[1])
DEFAULT_WORKER_OPTIONS: dict[str, Any] = {"num_cpus": 0, "scheduling_strategy": "SPREAD", "max_restarts": 0}
"""Segment workers reserve no CPU, so pools never block each other or agent actors (the pool's size,
one worker per cluster CPU, bounds the load); SPREAD places them over the nodes. Pass
`worker_options={"num_cpus": 1}` to make each worker reserve a core."""


class SegmentWorkerError(SwarmError, RuntimeError):
    """The Ray side failed: a segment worker died, could not be placed, or raised a non-swarm error."""


# -- traces on the wire -------------------------------------------------------------------------
_EVENT_CLASSES = (SampleEvent, FactorEvent, GuaranteeEvent, InteractEvent, ErrorEvent)
_EVENT_FIELDS = tuple(tuple(f.name for f in dataclasses.fields(c) if f.name != "type") for c in _EVENT_CLASSES)
_EVENT_ROW = {cls: (tag, attrgetter(*names)) for tag, (cls, names) in enumerate(zip(_EVENT_CLASSES, _EVENT_FIELDS))}


def encode_trace(trace: Trace) -> list[tuple]:
    """A trace as rows (class tag, field values…). Strings are interned so that repeated addresses
    and distribution names are pickled once per message, not once per event."""
    rows = []
    for event in trace.events:
        tag, get = _EVENT_ROW[type(event)]
        rows.append((tag, *[sys.intern(v) if type(v) is str else v for v in get(event)]))
    return rows


def decode_trace(rows: list[tuple]) -> Trace:
    """The inverse of `encode_trace`."""
    return Trace(events=[_EVENT_CLASSES[row[0]](**dict(zip(_EVENT_FIELDS[row[0]], row[1:]))) for row in rows])


_SEGMENT_FIELDS = ("status", "value", "sync_count", "site", "started_ns", "ended_ns", "tokens", "llm_calls", "output_tokens",
                   "target_log_weight", "twist", "error", "continued")


def encode_segment(seg: Segment) -> tuple:
    """A segment as (its new events as rows, its other fields); its prefix never travels."""
    return (encode_trace(Trace(seg.events)), *(getattr(seg, name) for name in _SEGMENT_FIELDS))


def decode_segment(row: tuple) -> Segment:
    return Segment(events=decode_trace(row[0]).events, **dict(zip(_SEGMENT_FIELDS, row[1:])))


def encode_task(task: SegmentTask) -> tuple:
    """A task as it crosses the wire: its prefix (if sent) as event rows."""
    prefix = None if task.prefix is None else encode_trace(Trace(task.prefix_events()))
    return (task.stream, prefix, task.stop_at, task.continue_from, task.source, task.withheld)


def decode_task(row: tuple) -> SegmentTask:
    prefix = None if row[1] is None else decode_trace(row[1]).events
    return SegmentTask(row[0], prefix, row[2], row[3], row[4], row[5])


def register_serializers() -> None:
    """Make Ray pickle traces and segments as rows (about half the bytes and time of the default
    pickle). Needed in every process that *sends* them; decoding needs only this module importable."""
    ray.util.register_serializer(Trace, serializer=encode_trace, deserializer=decode_trace)
    ray.util.register_serializer(Segment, serializer=encode_segment, deserializer=decode_segment)
    ray.util.register_serializer(SegmentTask, serializer=encode_task, deserializer=decode_task)


# -- errors on the wire: swarm.remote_errors (Ray-free, shared with the agents' actors) --------------


def _unwrap_ray_error(exc: RayError) -> BaseException:
    """A Ray failure in the driver: a worker-side SwarmError as itself, anything else wrapped."""
    cause = getattr(exc, "cause", None) if isinstance(exc, RayTaskError) else None
    if isinstance(cause, SwarmError):
        return cause
    detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).splitlines()[0]
    return SegmentWorkerError(f"segment worker failed: {detail}")


# -- the worker side ----------------------------------------------------------------------------
class _Path:
    """A particle's recorded events as a persistent list: its source's path, then its own delta."""

    __slots__ = ("prev", "events")

    def __init__(self, prev: "_Path | None", events: list[Any]) -> None:
        self.prev = prev
        self.events = events

    def to_list(self) -> list[Any]:
        parts, node = [], self
        while node is not None:
            parts.append(node.events)
            node = node.prev
        return [event for part in reversed(parts) for event in part]


class WorkerExecutions(LiveExecutions):
    """The live executions of one runner in a worker, plus the recorded path of every particle it ran
    in the last step (so an offspring routed here is replayed without its past crossing the wire)."""

    def __init__(self, runner: SegmentRunner) -> None:
        super().__init__(runner)
        self.paths: dict[Any, _Path] = {}
        self.previous_paths: dict[Any, _Path] = {}

    def _begin(self, epoch: Any) -> None:
        if epoch != self.epoch:
            self.previous_paths, self.paths = self.paths, {}
        super()._begin(epoch)

    def missing(self, epoch: Any, tasks: list[SegmentTask]) -> list[int]:
        """The tasks whose past was left out but which this worker cannot rebuild: it holds neither
        the execution to continue nor the source's recorded path (e.g. after a resume)."""
        self._begin(epoch)
        return [i for i, t in enumerate(tasks) if t.withheld and not self._holds(t) and
                (t.source is None or t.source not in self.previous_paths)]

    def _holds(self, task: SegmentTask) -> bool:
        kept = self.previous.get(task.continue_from) if task.continue_from is not None else None
        return kept is not None and task.stop_at is not None and kept.stands_at(task.stop_at - 1)

    def _claim(self, task: SegmentTask) -> tuple[Any, bool]:
        if task.prefix is None and task.source is not None and not self._holds(task):
            path = self.previous_paths.get(task.source)
            if path is not None:
                task.prefix = path.to_list()
        return super()._claim(task)

    def _keep(self, task: SegmentTask, execution: Any, seg: Segment, continued: bool) -> Segment:
        if seg.status == "running" and task.source is not None:
            # the worker's record of the source when the driver left the past out (shared, not
            # copied), else the past the task was given (a resumed particle's ends with its partial
            # segment); a past known neither way is not recorded (no truncated path)
            if task.withheld:
                before = self.previous_paths.get(task.source)
            else:
                before = _Path(None, task.prefix_events()) if task.prefix is not None else None
            if before is not None:
                self.paths[task.stream] = _Path(before, seg.events)
        task.prefix = None  # the segment goes back without the past it was given
        return super()._keep(task, execution, seg, continued)


class SegmentWorker:
    """The actor that runs chunks of segments (a plain class; `RayRuntime` wraps it with Ray)."""

    def __init__(self, index: int, max_runners: int = 4) -> None:
        self.index = index
        self.max_runners = max_runners
        self.runners: OrderedDict[str, WorkerExecutions] = OrderedDict()
        self.done = {"tasks": 0, "continued": 0}
        """Counts of the runners already released (their runs are over)."""
        with contextlib.suppress(Exception):  # outside Ray (unit use) there is nothing to register
            register_serializers()

    def info(self) -> dict[str, Any]:
        """Where this worker runs: index, Ray node id, process id."""
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        return {"index": self.index, "node_id": node, "pid": os.getpid()}

    def stats(self) -> dict[str, int]:
        """Tasks run, tasks that continued a kept execution, executions held now."""
        hosted = list(self.runners.values())
        return {"runners": len(hosted), "tasks": self.done["tasks"] + sum(h.tasks for h in hosted),
                "continued": self.done["continued"] + sum(h.continued for h in hosted),
                "live": sum(len(h) for h in hosted)}

    async def run_chunk(self, token: str, boxed_state: list, epoch: int,
                        tasks: list[SegmentTask]) -> tuple[str, Any]:
        """Run `tasks` with the runner `token` (fetched from `boxed_state[0]`, an ObjectRef, the
        first time). Returns ("ok", segments), ("missing", [task indices]) or ("error", RemoteError)."""
        try:
            hosted = await self._hosted(token, boxed_state)
            missing = hosted.missing(epoch, tasks)
            if missing:
                return "missing", missing
            with relaxed_gc():
                return "ok", await hosted.advance(epoch, tasks)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the driver
            return "error", capture_error(exc, f"segment worker {self.index} (pid {os.getpid()})")

    async def release(self, token: str) -> None:
        hosted = self.runners.pop(token, None)
        if hosted is not None:
            self._retire(hosted)

    def _retire(self, hosted: WorkerExecutions) -> None:
        self.done["tasks"] += hosted.tasks
        self.done["continued"] += hosted.continued
        hosted.close()

    async def _hosted(self, token: str, boxed_state: list) -> WorkerExecutions:
        hosted = self.runners.get(token)
        if hosted is None:
            state = boxed_state[0]
            if isinstance(state, ray.ObjectRef):
                state = await state
            hosted = self.runners.get(token)  # another chunk may have loaded it meanwhile
            if hosted is None:
                hosted = self.runners[token] = WorkerExecutions(state)
                while len(self.runners) > self.max_runners:
                    self._retire(self.runners.popitem(last=False)[1])
        self.runners.move_to_end(token)
        return hosted


# -- routing ------------------------------------------------------------------------------------
def plan_chunks(tasks: list[SegmentTask], num_workers: int, homes: dict, chunk_size: int | None = None
                ) -> list[tuple[int, list[int]]]:
    """Assign task indices to workers, as (worker, indices) chunks.

    Every worker gets at most ⌈n / num_workers⌉ tasks. `homes` maps a stream to the worker that ran
    it last step. First, a task that may continue a kept execution goes to the worker holding it
    (`continue_from`); then a task whose past that worker holds goes there (`source`: the other
    offspring of a parent, replayed without their past crossing the wire); both while the worker has
    room. The others fill the workers in order. Each worker's share is then cut into chunks of at
    most `chunk_size` (default: one chunk per worker).
    """
    cap = math.ceil(len(tasks) / num_workers)
    shares: list[list[int]] = [[] for _ in range(num_workers)]
    placed = [False] * len(tasks)
    for key in ("continue_from", "source"):
        for i, task in enumerate(tasks):
            stream = getattr(task, key)
            home = homes.get(stream) if stream is not None and not placed[i] else None
            if home is not None and home < num_workers and len(shares[home]) < cap:
                shares[home].append(i)
                placed[i] = True
    worker = 0
    for i in (i for i in range(len(tasks)) if not placed[i]):
        while len(shares[worker]) >= cap:
            worker += 1
        shares[worker].append(i)
    for share in shares:
        share.sort()
    size = chunk_size or max(cap, 1)
    return [(w, share[k:k + size]) for w, share in enumerate(shares) for k in range(0, len(share), size)]


@dataclasses.dataclass
class _Shipped:
    """A runner as the workers know it."""

    token: str
    fingerprint: tuple
    ref: Any
    homes: dict = dataclasses.field(default_factory=dict)
    """stream → index of the worker that ran it last step (and keeps its execution and path)."""


@contextlib.contextmanager
def loopback_only():
    """Keep a Ray instance started on this machine on 127.0.0.1.

    Ray resolves `_node_ip_address="127.0.0.1"` to the machine's outward address (and its servers
    then listen on every interface) unless its cluster mode is off; switch it off while `ray.init`
    or `ray.cluster_utils.Cluster` starts the processes, which keep the loopback address.
    """
    from ray._private import ray_constants

    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _is_loopback(address: str) -> bool:
    """A new local instance, or a cluster on this machine's loopback address (the driver must then
    present itself as 127.0.0.1 too)."""
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return address == "local" or host in ("127.0.0.1", "localhost")


def default_runtime_env() -> dict[str, Any]:
    """Workers import this repo (and modules beside it, such as `tests`) from the driver's checkout."""
    path = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def local_init_kwargs(num_cpus: int | None = None, namespace: str = "plp-swarm") -> dict[str, Any]:
    """`ray.init` arguments for a new local instance: loopback only, no dashboard, quiet workers."""
    return {"address": "local", "num_cpus": num_cpus or max(1, min(os.cpu_count() or 1, 4)),
            "include_dashboard": False, "log_to_driver": False, "namespace": namespace,
            "runtime_env": default_runtime_env(), "_node_ip_address": "127.0.0.1"}


class RayRuntime(Runtime):
    """Run segments on a pool of Ray actors (see the module docstring).

    address: None starts a new local Ray instance (on 127.0.0.1), else `ray.init(address=...)`;
    when Ray is already initialised it is used as it is. `aclose` shuts down only what `start` began.
    num_workers: actors in the pool (default: the cluster's CPU count). chunk_size: the most tasks
    per call (default: one call per worker per step). worker_options: `.options(...)` of each actor
    (merged over DEFAULT_WORKER_OPTIONS; e.g. custom `resources` to pin workers to nodes).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_workers: int | None = None, chunk_size: int | None = None,
                 init_kwargs: dict[str, Any] | None = None, namespace: str = "plp-swarm", *,
                 worker_options: dict[str, Any] | None = None, ready_timeout_s: float = 120.0,
                 measure_traffic: bool = False) -> None:
        for label, value in (("num_workers", num_workers), ("chunk_size", chunk_size)):
            if value is not None and value < 1:
                raise ValueError(f"RayRuntime: {label} must be ≥ 1, got {value}")
        self.address = address
        self.num_workers = num_workers
        self.chunk_size = chunk_size
        self.init_kwargs = dict(init_kwargs or {})
        self.namespace = namespace
        self.worker_options = {**DEFAULT_WORKER_OPTIONS, **(worker_options or {})}
        self.ready_timeout_s = ready_timeout_s
        self.workers: list[Any] = []
        self.worker_info: list[dict[str, Any]] = []
        """Per worker: index, node_id, pid (filled by `start`)."""
        self.calls = 0
        """Remote chunk calls made so far (a step costs about `num_workers` of them)."""
        self.measure_traffic = measure_traffic
        self.traffic: list[dict[str, int]] = []
        """With `measure_traffic`: per step, the bytes of the tasks sent and of the segments received
        (pickled in the format Ray ships them in), for benchmarks."""
        self._owns_ray = False
        self._epoch = 0
        self._shipped: weakref.WeakKeyDictionary[SegmentRunner, _Shipped] = weakref.WeakKeyDictionary()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to (or start) Ray and create the segment workers. Idempotent."""
        if self.workers:
            return
        self._connect()
        register_serializers()
        count = self.num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor_class = ray.remote(SegmentWorker).options(**self.worker_options)
        self.workers = [actor_class.remote(i) for i in range(count)]
        try:
            self.worker_info = await asyncio.wait_for(
                asyncio.gather(*(w.info.remote() for w in self.workers)), self.ready_timeout_s)
        except asyncio.TimeoutError:
            await self.aclose()
            raise SegmentWorkerError(
                f"RayRuntime: {count} segment workers, each asking for {self.worker_options}, were not placed "
                f"within {self.ready_timeout_s:g} s; the cluster has {ray.available_resources() if ray.is_initialized() else '?'} "
                "available. Lower num_workers or change worker_options") from None

    def _connect(self) -> None:
        if ray.is_initialized():
            return
        if self.address is None:
            kwargs = {**local_init_kwargs(namespace=self.namespace), **self.init_kwargs}
        else:
            kwargs = {"address": self.address, "namespace": self.namespace, "log_to_driver": False,
                      "runtime_env": default_runtime_env(), **self.init_kwargs}
        with loopback_only() if _is_loopback(kwargs["address"]) else contextlib.nullcontext():
            ray.init(**kwargs)
        self._owns_ray = True

    async def aclose(self) -> None:
        """Kill the segment workers; shut Ray down if `start` started it."""
        workers, self.workers, self.worker_info = self.workers, [], []
        self._shipped = weakref.WeakKeyDictionary()
        if ray.is_initialized():
            for worker in workers:
                with contextlib.suppress(Exception):
                    ray.kill(worker, no_restart=True)
            if self._owns_ray:
                ray.shutdown()
        self._owns_ray = False

    async def worker_stats(self) -> list[dict[str, int]]:
        """Per worker: tasks run, tasks that continued a suspended execution, executions held."""
        return list(await asyncio.gather(*(w.stats.remote() for w in self.workers)))

    # -- running --------------------------------------------------------------------------------
    async def run_segments(self, runner: SegmentRunner, tasks: list[SegmentTask]) -> list[Segment]:
        """Run one step's tasks on the pool; results in task order (see the module docstring)."""
        if not tasks:
            return []
        if not self.workers:
            await self.start()
        shipped = self._ship(runner)
        self._epoch += 1
        plan = plan_chunks(tasks, len(self.workers), shipped.homes, self.chunk_size)
        if self.measure_traffic:
            self.traffic.append({"step": self._epoch, "sent": 0, "received": 0})
        outcomes = await asyncio.gather(*(self._run_chunk(shipped, worker, [tasks[i] for i in idx])
                                          for worker, idx in plan))
        return self._assemble(shipped, tasks, plan, outcomes)

    async def _run_chunk(self, shipped: _Shipped, worker: int, tasks: list[SegmentTask]) -> list[Segment]:
        """One chunk on one worker: pasts the worker holds are not sent; if it turns out not to hold
        some (a resumed run, a restarted worker), they are sent in a second call."""
        wire = [self._wire(task, worker, shipped.homes) for task in tasks]
        kind, payload = await self._call(shipped, worker, wire)
        if kind == "missing":
            for i in payload:
                wire[i] = self._wire(tasks[i], None, {})
            kind, payload = await self._call(shipped, worker, wire)
        if kind != "ok":
            raise rebuild_error(payload) if kind == "error" else SegmentWorkerError(
                f"segment worker {worker} still lacks the past of {len(payload)} particles after they were sent")
        return payload

    async def _call(self, shipped: _Shipped, worker: int, wire: list[SegmentTask]) -> tuple[str, Any]:
        self.calls += 1
        try:
            outcome = await self.workers[worker].run_chunk.remote(shipped.token, [shipped.ref], self._epoch, wire)
        except RayError as exc:
            raise _unwrap_ray_error(exc) from None
        if self.measure_traffic:
            record = self.traffic[-1]
            record["sent"] += len(cloudpickle.dumps([encode_task(task) for task in wire]))
            if outcome[0] == "ok":
                record["received"] += len(cloudpickle.dumps([encode_segment(seg) for seg in outcome[1]]))
        return outcome

    @staticmethod
    def _wire(task: SegmentTask, worker: int | None, homes: dict) -> SegmentTask:
        """The task as it crosses the wire: its past left out when `worker` holds it (it ran the
        particle's source last step), else sent as a list of events."""
        held = worker is not None and worker in (homes.get(task.continue_from), homes.get(task.source))
        if task.prefix is None or held:
            return SegmentTask(stream=task.stream, stop_at=task.stop_at, continue_from=task.continue_from,
                               source=task.source, withheld=task.prefix is not None)
        return SegmentTask(stream=task.stream, stop_at=task.stop_at, continue_from=task.continue_from,
                           source=task.source, prefix=task.prefix_events())

    def _ship(self, runner: SegmentRunner) -> _Shipped:
        """Put the runner in the object store, unless its current state is there already."""
        fingerprint = tuple((k, id(v)) for k, v in sorted(vars(runner).items()))
        shipped = self._shipped.get(runner)
        if shipped is None or shipped.fingerprint != fingerprint:
            try:
                ref = ray.put(runner)
            except Exception as exc:  # noqa: BLE001 - unpicklable programs/handlers
                raise SegmentWorkerError(
                    f"RayRuntime cannot ship program {runner.name!r} to Ray workers: {type(exc).__name__}: {exc}. "
                    "The program, its arguments and extra_handlers must be picklable by cloudpickle") from exc
            shipped = self._shipped[runner] = _Shipped(uuid.uuid4().hex, fingerprint, ref)
        return shipped

    def _assemble(self, shipped: _Shipped, tasks: list[SegmentTask], plan: list[tuple[int, list[int]]],
                  outcomes: list[list[Segment]]) -> list[Segment]:
        out: list[Segment | None] = [None] * len(tasks)
        homes: dict = {}
        for (worker, indices), segments in zip(plan, outcomes):
            for i, seg in zip(indices, segments):
                out[i] = seg
                if seg.status == "running":
                    homes[tasks[i].stream] = worker
        shipped.homes = homes
        return out  # type: ignore[return-value]

    async def release(self, runner: SegmentRunner) -> None:
        """Drop the runner's executions and paths in every worker (its run is over)."""
        shipped = self._shipped.pop(runner, None)
        if shipped is not None and self.workers:
            with contextlib.suppress(RayError):
                await asyncio.gather(*(w.release.remote(shipped.token) for w in self.workers))
