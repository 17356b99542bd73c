"""Real Ray instances for the tests, always on 127.0.0.1: a local instance, or a three-node cluster
simulated on this machine with `ray.cluster_utils.Cluster` (a head and two worker nodes)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import ray
from ray.cluster_utils import Cluster

from swarm.ray_runtime import local_init_kwargs, loopback_only


@contextlib.contextmanager
def local_ray(num_cpus: int = 2) -> Iterator[None]:
    """A fresh local Ray instance (any earlier one is shut down first), shut down on exit."""
    if ray.is_initialized():
        ray.shutdown()
    with loopback_only():
        ray.init(**local_init_kwargs(num_cpus=num_cpus))
    try:
        yield
    finally:
        ray.shutdown()


def node_args(resources: dict[str, float]) -> dict[str, Any]:
    """One CPU, the given custom resources, a small object store, on the loopback address."""
    return {"num_cpus": 1, "resources": resources, "node_ip_address": "127.0.0.1",
            "object_store_memory": 80 * 1024 * 1024}


@contextlib.contextmanager
def loopback_cluster(resources: dict[str, float]) -> Iterator[Cluster]:
    """A head and two worker nodes, each with `node_args(resources)`; torn down on exit (with the
    driver's connection, if a test made one)."""
    if ray.is_initialized():
        ray.shutdown()
    args = node_args(resources)
    with loopback_only():
        cluster = Cluster(initialize_head=True, head_node_args={**args, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(**args)
        cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
