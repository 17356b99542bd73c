"""A Ray-hosted agent on the embedded model batches the particles it serves: one actor, one batched
`LlamaCpp`, SMC with 16 particles; the actor's backend decodes their requests together, and the
result is the one the same program gives with the agent in process (same seed)."""

from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'plp-swarm[llama]')")

import policies  # noqa: E402
from agents import Agent  # noqa: E402
from agents.backends.llama_cpp import LlamaCpp  # noqa: E402
from agents.ray_hosting import RayHosting, pool_for, shutdown_agent_pools  # noqa: E402
from bench.llm_throughput import word_program  # noqa: E402
from tests.ray_fixtures import local_ray  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.llm]

PARTICLES = 16


def writer(hosting) -> Agent:
    return Agent(name="batched_writer", system="You write one short, simple sentence.",
                 backend=LlamaCpp(n_threads=1, seed=0), hosting=hosting)


def program_for(agent: Agent):
    return word_program(agent, words=3, prompt="Write about the sea.", penalty=0.3, max_tokens=6)


def summary(result):
    return [(p.value, p.log_weight) for p in result.particles], result.log_evidence


def test_one_actor_decodes_the_particles_requests_in_one_batch_and_matches_local():
    local_agent = writer("local")
    local = policies.SMC(num_particles=PARTICLES, seed=3).run(program_for(local_agent))
    local_agent.backend.close()
    with local_ray(num_cpus=2):
        try:
            agent = writer(RayHosting(max_concurrency=PARTICLES))
            remote = policies.SMC(num_particles=PARTICLES, seed=3).run(program_for(agent))
            import asyncio

            stats = asyncio.run(pool_for(agent).stats())
        finally:
            shutdown_agent_pools()
            time.sleep(0.5)
    (actor,) = stats
    assert actor["served"] >= PARTICLES and actor["max_in_flight"] > PARTICLES // 2
    assert actor["backend"]["max_batch_sequences"] >= PARTICLES // 2, actor["backend"]
    assert summary(remote) == summary(local)
