"""`swarm.Normal` against exact answers: a linear-Gaussian state-space model, whose evidence and
filtering posterior the Kalman filter computes exactly, under SMC (one execution per particle) and
VectorizedSMC (the same program, run on arrays).

Tolerances, each justified by spreads measured over seeds and fixed seeds (numpy's generators and
the counter-based site streams draw the same values on every CPU):
- Ẑ is unbiased: the mean of 200 seeded Ẑ lies within 4 standard errors of Z (over 20,000 seeds
  at ess_threshold 1.0 the mean of Ẑ/Z was 1.00007, z = 0.04);
- VectorizedSMC at N = 100,000: posterior mean and variance of x_T within 0.02 (their standard
  deviations over seeds are ~0.003), log Ẑ within 0.05 (SD ~0.01);
- SMC at N = 2,000: log Ẑ within 0.35 and posterior mean within 0.15 (over 8 seeds the errors
  were −0.10…+0.04 and −0.03…+0.02: ≥ 4 SD of room).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

import policies
from swarm import EnumerationError, InvalidDistributionError, Normal, factor, sample
from swarm.randomness import SiteRandom

A, Q, R = 0.9, 0.7, 0.8
"""x_0 ~ N(0, 1), x_t ~ N(A·x_{t−1}, Q²), y_t ~ N(x_t, R²)."""
YS = (0.3, -0.5, 1.2, 2.0, 1.1, 0.4, -0.2, 0.9)
LOG_2PI = math.log(2 * math.pi)


def log_normal(y, mean, sd):
    """log N(y; mean, sd²), for numbers or arrays of means."""
    return -0.5 * ((y - mean) / sd) ** 2 - math.log(sd) - 0.5 * LOG_2PI


def lgssm(ys=YS):
    """Runs unchanged on one particle (SMC) and on arrays (VectorizedSMC)."""
    x = sample("x0", Normal(0.0, 1.0))
    factor("y0", log_normal(ys[0], x, R))
    for t in range(1, len(ys)):
        x = sample(f"x{t}", Normal(A * x, Q))
        factor(f"y{t}", log_normal(ys[t], x, R))
    return x


def kalman(ys=YS) -> tuple[float, float, float]:
    """(log Z, E[x_T | y], Var[x_T | y]) by the Kalman filter."""
    m, p, log_z = 0.0, 1.0, 0.0
    for t, y in enumerate(ys):
        if t:
            m, p = A * m, A * A * p + Q * Q
        s = p + R * R
        log_z += -0.5 * (y - m) ** 2 / s - 0.5 * math.log(s) - 0.5 * LOG_2PI
        gain = p / s
        m, p = m + gain * (y - m), (1 - gain) * p
    return log_z, m, p


@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_vectorised_evidence_is_unbiased_over_200_seeds(threshold):
    log_z = kalman()[0]
    estimates = np.array([math.exp(policies.VectorizedSMC(num_particles=64, ess_threshold=threshold, seed=s)
                                   .run(lgssm).log_evidence) for s in range(200)])
    mean, se = estimates.mean(), estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(mean - math.exp(log_z)) <= 4 * se, (mean, se, math.exp(log_z))


def test_vectorised_posterior_at_100k_particles():
    log_z, mean, var = kalman()
    result = policies.VectorizedSMC(num_particles=100_000, seed=0).run(lgssm)
    estimate = result.expectation(float)
    assert result.log_evidence == pytest.approx(log_z, abs=0.05)
    assert estimate == pytest.approx(mean, abs=0.02)
    assert result.expectation(lambda x: (x - estimate) ** 2) == pytest.approx(var, abs=0.02)


def test_smc_on_the_same_program():
    log_z, mean, _ = kalman()
    result = policies.SMC(num_particles=2_000, seed=0).run(lgssm)
    assert result.log_evidence == pytest.approx(log_z, abs=0.35)
    assert result.expectation(float) == pytest.approx(mean, abs=0.15)
    event = result.particles[0].trace["x3"]
    assert event.dist == "Normal" and event.log_prob < 0


def test_scalar_draws_are_the_inverse_cdf_of_the_site_uniform_and_log_prob_is_the_density():
    dist = Normal(1.5, 2.0)
    rng = SiteRandom.for_site(0, 3, "x")
    u = SiteRandom.for_site(0, 3, "x").random()
    assert dist.sample(rng) == NormalDist(1.5, 2.0).inv_cdf(u)
    for x in (-3.0, 0.0, 1.5, 7.25):
        assert dist.log_prob(x) == pytest.approx(math.log(NormalDist(1.5, 2.0).pdf(x)), rel=1e-12)
    assert dist.log_prob("a word") == -math.inf and dist.log_prob(math.nan) == -math.inf
    values = [Normal(0.0, 1.0).sample(SiteRandom.for_site(0, i, "x")) for i in range(4000)]
    # mean ± 4/sqrt(4000) = 0.063, sd within 0.06 (its SD is ~1/sqrt(2·4000) = 0.011)
    assert abs(np.mean(values)) < 0.063 and abs(np.std(values) - 1.0) < 0.06


def test_bad_parameters_are_named():
    with pytest.raises(InvalidDistributionError, match="scale must be finite and positive, got 0.0"):
        Normal(0.0, 0.0)
    with pytest.raises(InvalidDistributionError, match="loc must be finite"):
        Normal(math.nan, 1.0)
    with pytest.raises(InvalidDistributionError, match="array loc or scale.*vectorised runs"):
        Normal(np.zeros(3), 1.0)

    def negative_scale():
        x = sample("x", Normal(0.0, 1.0))
        return sample("y", Normal(x, x))  # half the particles get a negative scale

    with pytest.raises(InvalidDistributionError, match="sample 'y': Normal scale must be finite and positive; particle"):
        policies.VectorizedSMC(num_particles=100, seed=0).run(negative_scale)
    with pytest.raises(EnumerationError):
        policies.Enumerate().run(lgssm)


def test_per_particle_parameters_are_checked_and_named():
    """In a vectorised run a Normal's loc and scale may hold one value per particle; a bad one names
    the site and the particle, a wrong shape or a non-number names the parameter."""
    def with_loc(loc):
        def program():
            x = sample("x", Normal(0.0, 1.0))
            return sample("y", Normal(x * loc, 1.0))
        return program

    def with_parameter(name, value):
        def program():
            sample("x", Normal(0.0, 1.0))
            return sample("y", Normal(value, 1.0) if name == "loc" else Normal(0.0, value))
        return program

    run = policies.VectorizedSMC(num_particles=10, seed=0).run
    with pytest.raises(InvalidDistributionError, match=r"sample 'y': Normal loc must be finite; particle \d+ has nan"):
        run(with_loc(np.where(np.arange(10) == 3, math.nan, 1.0)))
    with pytest.raises(InvalidDistributionError, match=r"sample 'y': Normal loc has shape \(3,\); a vectorised run of 10"):
        run(with_parameter("loc", np.zeros(3)))
    with pytest.raises(InvalidDistributionError, match=r"sample 'y': Normal scale must be numbers"):
        run(with_parameter("scale", np.array(["a"] * 10)))


def test_a_normal_target_with_a_normal_proposal_is_importance_weighted():
    """x ~ q = N(0, 2²) as the proposal of p = N(0, 1), no other potential: the weights p/q make
    the population a sample of p (E[x²] = 1) and Ẑ estimates Z = 1. At N = 100,000 the ESS is about
    N/1.51 (E_q[(p/q)²] = 2·sqrt(4/7)), so the SE of E[x²] is ~0.006 and of log Ẑ ~0.0023; the
    tolerances are 5 and 6 of them (the seed is fixed and numpy's generators draw the same on every
    CPU)."""
    def program():
        return sample("x", Normal(0.0, 1.0), proposal=Normal(0.0, 2.0))

    r = policies.VectorizedSMC(num_particles=100_000, seed=3, ess_threshold=0.0).run(program)
    w = r.normalized_weights
    x = np.array(r.values)
    assert abs(float(np.sum(w * x * x)) - 1.0) < 0.03
    assert abs(r.log_evidence) < 0.015
    assert 0.55 < r.ess / 100_000 < 0.75  # 1/1.51 = 0.66
