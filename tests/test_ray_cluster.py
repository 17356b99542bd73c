"""`RayRuntime` on a multi-node Ray cluster simulated on one machine (`ray.cluster_utils.Cluster`):
a head and two worker nodes on 127.0.0.1, one segment worker pinned to each node by a custom
resource. The run must spread over the nodes and give exactly the local result."""

from __future__ import annotations

import asyncio

import pytest

ray = pytest.importorskip("ray")


import policies  # noqa: E402
from swarm.ray_runtime import RayRuntime  # noqa: E402
from tests.exact_programs import BY_NAME  # noqa: E402
from tests.ray_fixtures import loopback_cluster  # noqa: E402

pytestmark = pytest.mark.ray
SLOT = "plp_segment_slot"


@pytest.fixture(scope="module")
def cluster():
    """Three nodes (one CPU and one segment slot each), torn down after the module."""
    with loopback_cluster({SLOT: 1}) as c:
        yield c


def run(policy, name):
    prog = BY_NAME[name]
    return policy.run(prog.program, *prog.args, **prog.kwargs)


def summary(result):
    return (result.log_evidence, [(p.id, p.value, p.log_weight, p.status, p.parent_id, p.trace.events)
                                  for p in result.particles])


def test_segment_workers_spread_over_nodes_and_match_local(cluster):
    rt = RayRuntime(address=cluster.address, num_workers=3, worker_options={"resources": {SLOT: 1}})
    asyncio.run(rt.start())
    try:
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 3
        assert {w["node_id"] for w in rt.worker_info} == nodes  # one worker per node
        for name in ("hmm", "async_program", "plate_vote"):
            local = run(policies.SMC(num_particles=500, seed=7), name)
            remote = run(policies.SMC(num_particles=500, seed=7, runtime=rt), name)
            assert summary(remote) == summary(local)
        stats = asyncio.run(rt.worker_stats())
        assert all(s["tasks"] > 0 for s in stats)  # every node did work
    finally:
        asyncio.run(rt.aclose())
    assert not ray.is_initialized()  # the runtime connected, so it disconnects


def test_runtime_spec_with_cluster_address(cluster):
    spec = {"kind": "ray", "address": cluster.address, "num_workers": 3, "chunk_size": 64,
            "worker_options": {"resources": {SLOT: 1}}}
    local = run(policies.Importance(num_particles=400, seed=5), "noisy_count")
    remote = run(policies.Importance(num_particles=400, seed=5, runtime=spec), "noisy_count")
    assert summary(remote) == summary(local)
