"""The toy model the engine and tracing benchmarks time (bench/core_overhead.py,
bench/engine_scaling.py, bench/otel_runs.py and the tests that reuse the latter):

    x_t ~ Bernoulli(0.5),  factor(0.1·x_t)  for t = 1..T,  return Σ_t x_t,

so log Z = T·log((1 + e^0.1)/2) exactly. Imports nothing from `bench`: a benchmark's child process
that runs against another checkout loads this file by path.
"""

from __future__ import annotations

from typing import Any, Callable

from swarm import Bernoulli, factor, sample


def toy_program(steps: int) -> Callable[[], int]:
    """The model as a plain `def` of `steps` steps."""

    def program() -> int:
        total = 0
        for t in range(steps):
            x = sample(f"x{t}", Bernoulli(0.5))
            total += x
            factor(f"f{t}", 0.1 * x)
        return total

    return program


def async_toy_program(steps: int) -> Callable[[], Any]:
    """The same model as an `async def` (the engine must continue it live like the plain one)."""
    body = toy_program(steps)

    async def program() -> int:
        return body()

    return program


def toy_steps_program(steps: int) -> Callable[[], Any]:
    """The same model with explicit steps, for `policies.VectorizedSMC`: each step ends at
    `total = yield total`, so resampling gathers the running total instead of restarting."""

    def program():
        total = 0
        for t in range(steps):
            x = sample(f"x{t}", Bernoulli(0.5))
            total = total + x
            factor(f"f{t}", 0.1 * x)
            del x
            total = yield total
        return total

    return program
