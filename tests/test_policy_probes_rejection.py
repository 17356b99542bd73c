"""Probes of `policies.Rejection`'s evidence estimate."""

from __future__ import annotations

import math

import numpy as np

import policies
from swarm import Uniform, guarantee, sample


def _one_in_ten():
    x = sample("x", Uniform(range(10)))
    guarantee("zero", x == 0)
    return x


def test_the_evidence_of_a_single_exact_sample_is_unbiased():
    """Rejection(num_particles=1) stops at its first acceptance: n ~ Geometric(Z). Its Ẑ was 1/n,
    with E[1/n] = −Z log Z/(1 − Z) = 0.256 at Z = 0.1; the unbiased estimator is 1[n = 1]. Over
    1,000 seeds Ẑ ∈ {0, 1} has standard error √(Z(1−Z)/1000) = 0.0095, so the mean lies within
    0.038 (4 standard errors) of Z unless the estimator is biased (1/n: 16 standard errors off)."""
    z_hats = np.array([math.exp(policies.Rejection(num_particles=1, seed=s).run(_one_in_ten).log_evidence)
                       for s in range(1000)])
    assert set(np.unique(z_hats)) <= {0.0, 1.0}
    assert abs(z_hats.mean() - 0.1) < 0.038, z_hats.mean()


def test_the_k_minus_one_estimator_is_kept_for_two_or_more():
    result = policies.Rejection(num_particles=3, seed=0).run(_one_in_ten)
    n = result.extra["attempts"]
    assert result.log_evidence == math.log(2 / (n - 1))
