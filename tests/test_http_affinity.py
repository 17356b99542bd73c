"""`RayHosting` cache affinity: siblings (same prompt and reply so far, other seeds) are routed to
one replica, distinct prefixes spread over the replicas, a saturated replica is passed over. The
routing is plain Python (`AgentPool._pick`): no Ray runtime is started here; tests/test_ray_agents.py
runs pools on a real Ray."""

from __future__ import annotations

from agents import Agent
from agents.backends.base import GenerationRequest, GenerationSettings
from agents.backends.scripted import Scripted
from agents.ray_hosting import AgentPool, RayHosting, prefix_affinity


def request(prefix: str, seed: int) -> GenerationRequest:
    return GenerationRequest(prompt="Write about the sea.", assistant_prefix=prefix, seed=seed,
                             settings=GenerationSettings(unit="word"))


def pool(replicas: int = 4, max_concurrency: int = 8) -> AgentPool:
    agent = Agent(name="writer", backend=Scripted(["x"]))
    return AgentPool(agent, RayHosting(replicas=replicas, max_concurrency=max_concurrency))


def test_siblings_share_a_replica_and_distinct_prefixes_spread():
    p = pool()
    siblings = {p._pick(prefix_affinity(request("The sea is", seed))) for seed in range(20)}
    assert len(siblings) == 1  # one replica for every seed of one prefix
    homes = [p._pick(prefix_affinity(request(f"The sea {i}", 0))) for i in range(64)]
    assert all(homes.count(r) >= 6 for r in range(4)), homes  # 64 prefixes over 4 replicas: ~16 each


def test_a_saturated_home_replica_is_passed_over_for_the_least_busy():
    p = pool(max_concurrency=8)
    key = prefix_affinity(request("The sea is", 1))
    home = p._pick(key)
    p.outstanding = [3, 3, 3, 3]
    p.outstanding[home] = 3 + 7
    assert p._pick(key) == home  # 7 more than the least busy: still home (the cache is worth it)
    p.outstanding[home] = 3 + 8
    assert p._pick(key) != home  # a full max_concurrency more: the least busy replica instead
