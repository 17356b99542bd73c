"""`RayRuntime` against `LocalRuntime`: the same seed gives exactly the same population.

One local Ray instance (2 CPUs, 127.0.0.1) serves the whole module. Policies built with
`runtime="ray"` create their own pool of segment workers on it and kill it when the run ends.
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle

import pytest

ray = pytest.importorskip("ray")

import policies  # noqa: E402
import swarm  # noqa: E402
from swarm import Bernoulli, Categorical, factor, guarantee, sample  # noqa: E402
from swarm.execution import SegmentRunner, SegmentTask  # noqa: E402
from swarm.handlers import condition  # noqa: E402
from swarm.ray_runtime import (  # noqa: E402
    RayRuntime,
    SegmentWorkerError,
    decode_trace,
    encode_trace,
    plan_chunks,
)
from swarm.runtimes import LocalRuntime, make_runtime  # noqa: E402
from tests.exact_programs import BY_NAME, HMM_OBS, PROGRAMS, hmm  # noqa: E402
from tests.ray_fixtures import local_ray  # noqa: E402

pytestmark = pytest.mark.ray
IDS = [p.name for p in PROGRAMS]


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    """One local Ray instance for the module, shut down after it."""
    with local_ray(num_cpus=2):
        yield


@pytest.fixture(scope="module")
def shared_runtime(ray_instance):
    """A started RayRuntime reused by many runs (a pool costs ~2 s to start on 2 cores)."""
    rt = RayRuntime(num_workers=2)
    asyncio.run(rt.start())
    yield rt
    asyncio.run(rt.aclose())


def run(policy, prog):
    return policy.run(prog.program, *prog.args, **prog.kwargs)


def assert_same(a, b):
    """Two results are the same population: ids, values, weights, statuses, lineage, traces."""
    assert a.log_evidence == b.log_evidence or (math.isnan(a.log_evidence) and math.isnan(b.log_evidence))
    assert len(a.particles) == len(b.particles)
    for p, q in zip(a.particles, b.particles):
        assert (p.id, p.value, p.log_weight, p.status, p.parent_id) == (q.id, q.value, q.log_weight, q.status, q.parent_id)
        assert p.trace.events == q.trace.events
    assert a.diagnostics.steps == b.diagnostics.steps
    assert a.diagnostics.genealogy == b.diagnostics.genealogy
    assert a.diagnostics.deaths == b.diagnostics.deaths


def alive_segment_workers() -> int:
    """Live SegmentWorker actors, from the GCS actor table (`ray.util.state.list_actors` needs the
    dashboard, which the test instance does not start)."""
    from ray._private.state import actors

    table = actors(actor_state_name="ALIVE")
    return sum(1 for a in table.values() if a.get("ActorClassName", "").endswith("SegmentWorker"))


# -- parity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("prog", PROGRAMS, ids=IDS)
def test_smc_on_ray_equals_local(prog):
    local = run(policies.SMC(num_particles=500, seed=7, runtime="local"), prog)
    remote = run(policies.SMC(num_particles=500, seed=7, runtime="ray"), prog)
    assert_same(local, remote)


@pytest.mark.parametrize("prog", PROGRAMS, ids=IDS)
def test_importance_and_enumerate_on_ray_equal_local(prog, shared_runtime):
    assert_same(run(policies.Importance(num_particles=500, seed=7, runtime="local"), prog),
                run(policies.Importance(num_particles=500, seed=7, runtime=shared_runtime), prog))
    assert_same(run(policies.Enumerate(seed=7, runtime="local"), prog),
                run(policies.Enumerate(seed=7, runtime=shared_runtime), prog))


@pytest.mark.parametrize("policy", [policies.Importance(num_particles=500, seed=7), policies.Enumerate(seed=7)],
                         ids=["Importance", "Enumerate"])
def test_runtime_string_ray_for_other_policies(policy):
    prog = BY_NAME["plate_vote"]
    assert_same(run(policy, prog), run(policy.model_copy(update={"runtime": "ray"}), prog))


def test_sticky_routing_continues_suspended_executions():
    prog = BY_NAME["hmm"]
    rt = RayRuntime(num_workers=2)
    try:
        result = run(policies.SMC(num_particles=200, seed=3, ess_threshold=0.0, runtime=rt), prog)
        steps = len(result.diagnostics.steps)
        stats = asyncio.run(rt.worker_stats())
    finally:
        asyncio.run(rt.aclose())
    assert sum(s["tasks"] for s in stats) == 200 * steps
    assert sum(s["continued"] for s in stats) == 200 * (steps - 1)  # no particle replayed its trace


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_chunking_and_sticky_routing_do_not_change_results(chunk_size):
    prog = BY_NAME["hmm"]
    local = run(policies.SMC(num_particles=300, seed=3, ess_threshold=0.9), prog)
    rt = RayRuntime(num_workers=2, chunk_size=chunk_size)
    try:
        assert_same(local, run(policies.SMC(num_particles=300, seed=3, ess_threshold=0.9, runtime=rt), prog))
        steps = len(local.diagnostics.steps)
        assert rt.calls == steps * (2 if chunk_size == 1000 else math.ceil(150 / chunk_size) * 2)
    finally:
        asyncio.run(rt.aclose())


def test_extra_handlers_run_on_the_workers():
    runner = SegmentRunner(hmm, (HMM_OBS,), seed=11, extra_handlers=_condition_first_state)
    tasks = [SegmentTask(stream=i) for i in range(50)]
    local = asyncio.run(LocalRuntime().run_segments(runner, tasks))

    async def on_ray():
        rt = RayRuntime(num_workers=2)
        try:
            return await rt.run_segments(runner, tasks)
        finally:
            await rt.aclose()

    remote = on_ray()
    remote = asyncio.run(remote)
    assert [s.trace.events for s in remote] == [s.trace.events for s in local]
    assert all(s.trace["z0"].value == 1 for s in remote)


def _condition_first_state():
    return [condition({"z0": 1})]


# -- the pool ------------------------------------------------------------------------------------
def test_actor_count_does_not_grow_with_the_population():
    base = alive_segment_workers()  # other pools of this module (the shared runtime)
    rt = RayRuntime()
    prog = BY_NAME["chain3"]
    try:
        counts, calls = [], []
        for n in (10, 1000):
            before = rt.calls
            run(policies.SMC(num_particles=n, seed=1, runtime=rt), prog)
            counts.append(alive_segment_workers() - base)
            calls.append(rt.calls - before)
        assert counts == [2, 2] == [len(rt.workers)] * 2
        assert calls[0] == calls[1]  # one call per worker per step, whatever N
    finally:
        asyncio.run(rt.aclose())
    assert _eventually(lambda: alive_segment_workers() == base)


def test_bytes_shipped_per_step_do_not_grow_with_the_step():
    """Issue 12's traffic goal, on bench/ray_traffic.py's debate (every round's prompt carries the
    transcript so far): workers keep their particles' executions and paths, so a step ships only
    what it adds. Bytes are counted as Ray pickles them (deterministic for a seed, no timing):
    the tasks sent stay flat, and the segments received at round 6 are ≤ 1.5x round 1's (they
    grow only with the prompt each new event carries; whole traces made it 4.3x)."""
    from bench.ray_traffic import measure

    traffic = measure(particles=40, rounds=6)
    sent = [t["sent"] for t in traffic[:6]]
    received = [t["received"] for t in traffic[:6]]
    assert max(sent) <= 1.1 * min(sent), sent
    assert received[5] <= 1.5 * received[0], received


def _eventually(check, timeout_s: float = 10.0) -> bool:
    """Actor deaths reach the GCS table asynchronously."""
    import time

    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_make_runtime_and_worker_placement():
    rt = make_runtime({"kind": "ray", "num_workers": 3, "worker_options": {"num_cpus": 0}})
    assert isinstance(rt, RayRuntime)
    asyncio.run(rt.start())
    try:
        assert [w["index"] for w in rt.worker_info] == [0, 1, 2]
        assert len({w["pid"] for w in rt.worker_info}) == 3 and os.getpid() not in {w["pid"] for w in rt.worker_info}
    finally:
        asyncio.run(rt.aclose())
    assert ray.is_initialized()  # the runtime did not start Ray, so it leaves it running


def test_unplaceable_workers_fail_clearly():
    rt = RayRuntime(num_workers=1, worker_options={"resources": {"no_such_resource": 1}}, ready_timeout_s=2)
    with pytest.raises(SegmentWorkerError, match="were not placed"):
        asyncio.run(rt.start())
    assert rt.workers == []


# -- errors ------------------------------------------------------------------------------------
def nan_factor():
    x = sample("x", Bernoulli(0.5))
    factor("bad", float("nan") if x else 0.0)
    return x


def raises_no_survivors():
    sample("x", Bernoulli(0.5))
    raise swarm.NoSurvivingParticles({"inner": 3}, policy="Inner")


@pytest.mark.parametrize("program, error", [(nan_factor, swarm.InvalidPotentialError),
                                            (raises_no_survivors, swarm.NoSurvivingParticles)])
def test_swarm_errors_cross_as_themselves(program, error):
    with pytest.raises(error) as local:
        policies.SMC(num_particles=20, seed=0).run(program)
    with pytest.raises(error) as remote:
        policies.SMC(num_particles=20, seed=0, runtime="ray").run(program)
    assert type(remote.value) is type(local.value)
    assert str(remote.value) == str(local.value)
    assert any("segment worker" in note for note in getattr(remote.value, "__notes__", []))


def test_program_errors_stay_particle_deaths():
    def flaky():
        x = sample("x", Categorical([0, 1, 2], probs=[0.3, 0.3, 0.4]))
        if x == 2:
            raise RuntimeError("boom")
        guarantee("ok", True)
        return x

    assert_same(policies.Importance(num_particles=100, seed=2).run(flaky),
                policies.Importance(num_particles=100, seed=2, runtime="ray").run(flaky))


def test_unpicklable_program_fails_clearly():
    import threading

    lock = threading.Lock()

    def locked():
        with lock:
            return sample("x", Bernoulli(0.5))

    with pytest.raises(SegmentWorkerError, match="cannot ship program"):
        policies.Importance(num_particles=4, seed=0, runtime="ray").run(locked)


def test_dead_worker_is_a_segment_worker_error():
    def crash():
        sample("x", Bernoulli(0.5))
        os._exit(1)

    with pytest.raises(SegmentWorkerError, match="segment worker failed"):
        policies.Importance(num_particles=4, seed=0, runtime=RayRuntime(num_workers=1)).run(crash)


# -- the wire format -----------------------------------------------------------------------------
def test_segments_pickle_compactly_and_exactly():
    runner = SegmentRunner(BY_NAME["plate_vote"].program, seed=5)
    segs = runner.run_batch_sync([SegmentTask(stream=i) for i in range(200)])
    for seg in segs[:20]:
        assert decode_trace(encode_trace(seg.trace)) == seg.trace
    from ray import cloudpickle

    wire = cloudpickle.dumps(segs)  # the module fixture's Ray has the trace serializer registered
    back = cloudpickle.loads(wire)
    assert [(s.trace, s.value, s.status, s.log_weight()) for s in back] == \
           [(s.trace, s.value, s.status, s.log_weight()) for s in segs]
    assert len(wire) < 0.75 * len(pickle.dumps(segs))
    assert len(wire) / len(segs) < 600  # bytes per 11-event segment


def test_plan_chunks_keeps_particles_home_and_balances():
    tasks = [SegmentTask(stream=i, stop_at=2, continue_from=i) for i in range(10)]
    homes = {i: 1 for i in range(10)}  # all executions live on worker 1
    plan = plan_chunks(tasks, 2, homes)
    assert sorted(i for _, idx in plan for i in idx) == list(range(10))
    assert [(w, len(idx)) for w, idx in plan] == [(0, 5), (1, 5)]
    assert dict(plan)[1] == [0, 1, 2, 3, 4]
    assert [len(idx) for _, idx in plan_chunks(tasks, 3, {}, chunk_size=2)] == [2, 2, 2, 2, 2]


# -- run-scoped state in the workers (issue 11, defect d) ------------------------------------------
def _cache_identity():
    """Which response cache this particle's calls go through, and in which process. The cache is
    named by a serial number given the first time it is seen, not by id(): a run's cache freed
    before the next run's is made can get the same address, hence the same id."""
    import uuid

    from agents.cache import run_cache

    sample("x", Bernoulli(0.5))
    return os.getpid(), run_cache().__dict__.setdefault("_test_name", uuid.uuid4().hex)


def test_segment_workers_scope_the_response_cache_to_a_run():
    """A reused runtime's workers give each run its own response cache (before: one process-wide
    cache outlived every run a worker served)."""
    rt = RayRuntime(num_workers=1)
    try:
        first = policies.Importance(num_particles=4, seed=0, runtime=rt).run(_cache_identity)
        second = policies.Importance(num_particles=4, seed=1, runtime=rt).run(_cache_identity)
    finally:
        asyncio.run(rt.aclose())
    (pid_a, cache_a), = {p.value for p in first.particles}      # one worker, one cache for the run
    (pid_b, cache_b), = {p.value for p in second.particles}
    assert pid_a == pid_b and pid_a != os.getpid()                # the same worker process served both runs
    assert cache_a != cache_b                                     # yet each run had its own cache
