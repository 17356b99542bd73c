"""Probes of `policies.VectorizedSMC`: a nested run in a plain vectorised program."""

from __future__ import annotations

import math

import numpy as np
import pytest

import policies
from swarm import Bernoulli, BlockingRunError, factor, guarantee, sample


def _coin(p):
    factor("heads", 1.0 * sample("y", Bernoulli(p)))


def _scalar_twin():
    z = policies.Enumerate().run(_coin, 0.2).log_evidence
    x = sample("x", Bernoulli(0.5))
    factor("e", z if x else 0.0)
    return x


def _vectorised():
    z = policies.Enumerate().run(_coin, 0.2).log_evidence   # a nested exact run, as README shows
    x = sample("x", Bernoulli(0.5))
    factor("e", np.where(x, z, 0.0))
    return x


def test_a_plain_vectorised_program_runs_a_nested_policy():
    """README: a run nests in a plain program with `policy.run(...)`. VectorizedSMC calls the plain
    program on the event loop's thread itself, and the nested run raised BlockingRunError ("use
    await ...run_async", which a plain program cannot). With ess_threshold=0 the estimate is
    importance sampling: Ẑ = mean over 20,000 particles of e^{z·x} (z = 0.134), whose relative
    standard error is 0.067/√20000 ≈ 0.0005, so 0.005 in log Z is 10 standard errors."""
    result = policies.VectorizedSMC(num_particles=20_000, seed=0, ess_threshold=0.0).run(_vectorised)
    exact = policies.Enumerate().run(_scalar_twin).log_evidence
    assert result.log_evidence == pytest.approx(exact, abs=0.005)
    z = math.log(0.8 + 0.2 * math.e)
    assert exact == pytest.approx(math.log(0.5 + 0.5 * math.exp(z)), abs=1e-12)


def test_an_async_vectorised_program_still_must_await_a_nested_run():
    async def program():
        x = sample("x", Bernoulli(0.5))
        factor("e", np.where(x, policies.Enumerate().run(_coin, 0.2).log_evidence, 0.0))
        return x

    with pytest.raises(BlockingRunError, match="run_async"):
        policies.VectorizedSMC(num_particles=10, seed=0).run(program)


def _vetoed_half():
    x = sample("x", Bernoulli(0.5))
    guarantee("g", x)
    return x


def test_a_dead_particle_has_no_value_as_in_smc():
    """A particle killed by a guarantee is "dead" with value None in SMC; VectorizedSMC kept the
    vetoed value, so `result.values` listed values the target excludes."""
    result = policies.VectorizedSMC(num_particles=64, seed=0, ess_threshold=0.0).run(_vetoed_half)
    dead = [p for p in result.particles if p.status == "dead"]
    assert dead and all(p.value is None for p in dead)
    assert all(p.value is True for p in result.particles if p.status == "finished")


def _coins():
    x = sample("x", Bernoulli(0.5))
    factor("f", np.where(x, 0.0, -1.0))
    return x


@pytest.mark.parametrize("seed,alias", [(-1, 2**63 - 1), (5, 2**63 + 5), (-5, 5)])
def test_distinct_seeds_give_distinct_runs(seed, alias):
    """The run's generators masked the seed to 63 bits, so seeds -1 and 2**63 - 1 (and 5 and
    2**63 + 5) drew the same 200 coins; each seed reproduces its own run."""
    def values(s):
        return policies.VectorizedSMC(num_particles=200, seed=s).run(_coins).values

    assert values(seed) != values(alias)
    assert values(seed) == values(seed) and values(alias) == values(alias)


def test_ordinary_seeds_keep_their_streams():
    from policies.base import seeded_rng

    assert seeded_rng(7, 3).random() == np.random.default_rng([7, 3]).random()
