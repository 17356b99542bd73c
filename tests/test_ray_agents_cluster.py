"""Agent pools on a multi-node Ray cluster simulated on one machine (`ray.cluster_utils.Cluster`: a
head and two worker nodes on 127.0.0.1). Each node advertises one proposer slot and one critic slot,
so each role's pool of three replicas must spread over the three nodes; the run must complete with
the local result, and the trace must record on which node every call ran."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

ray = pytest.importorskip("ray")


import policies  # noqa: E402
from observability.trace_file import TraceFileWriter, read_trace_file  # noqa: E402
from agents.ray_hosting import RayHosting, pool_for, shutdown_agent_pools  # noqa: E402
from swarm.ray_runtime import RayRuntime, default_runtime_env, loopback_only  # noqa: E402
from tests.ray_fixtures import loopback_cluster  # noqa: E402
from tests.test_ray_agents import make_team, served_by, summary  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    with loopback_cluster({"proposer_slot": 1, "critic_slot": 1}) as c:
        with loopback_only():
            ray.init(address=c.address, namespace="plp-agents-cluster", log_to_driver=False,
                     runtime_env=default_runtime_env())
        try:
            yield c
        finally:
            shutdown_agent_pools()


def test_agent_pools_spread_over_nodes_and_the_trace_records_each_node(cluster, tmp_path):
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 3
    team_local, *_ = make_team("local", tag="_c")
    local = policies.SMC(num_particles=40, seed=13).run(team_local, 2)

    proposer_pool = RayHosting(replicas=3, max_concurrency=4, resources={"proposer_slot": 1})
    critic_pool = RayHosting(replicas=3, max_concurrency=4, resources={"critic_slot": 1})
    team, proposer, critic = make_team(proposer_pool, critic_hosting=critic_pool, tag="_c")
    writer = TraceFileWriter(tmp_path / "run.jsonl")
    on_driver = policies.SMC(num_particles=40, seed=13, listeners=[writer]).run(team, 2)
    writer.close()
    rt = RayRuntime(address=cluster.address, num_workers=2)
    try:
        on_workers = policies.SMC(num_particles=40, seed=13, runtime=rt).run(team, 2)
    finally:
        asyncio.run(rt.aclose())
    assert ray.is_initialized()  # the runtime used the driver's connection and left it open
    assert summary(on_driver) == summary(local)
    assert summary(on_workers) == summary(local)

    for agent in (proposer, critic):  # one replica of each pool on each node
        info = asyncio.run(pool_for(agent).ready())
        assert {i["node_id"] for i in info} == nodes
    for result in (on_driver, on_workers):
        where = served_by(result)
        assert all(w["node_id"] in nodes for w in where)
        by_role = {role: Counter(w["node_id"] for w in where if w["role"] == role) for role in ("proposer_c", "critic_c")}
        assert {role: set(c) for role, c in by_role.items()} == {"proposer_c": nodes, "critic_c": nodes}

    # the global trace file (every particle's new events, step by step) names the node of every call
    saved = read_trace_file(tmp_path / "run.jsonl")
    calls = [e for step in saved.steps for p in step.particles for e in p.new_events
             if e.type == "sample" and e.dist.startswith("Generation")]
    assert calls and all(e.info["served_by"]["node_id"] in nodes for e in calls)
    assert {e.info["served_by"]["node_id"] for e in calls} == nodes
