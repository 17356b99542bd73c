"""Every inference engine against exact answers.

- Enumerate reproduces the brute-force posterior and log Z to 1e-9.
- Importance, Rejection and SMC (every resampling scheme) reach total-variation distance ≤ 0.03
  from the exact posterior at 10,000 particles.
- Their evidence estimates are unbiased: over 200 seeds, the mean of Ẑ lies within 4 standard
  errors of the exact Z (zero estimates from runs where every particle died count as Ẑ = 0).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import policies
from swarm import NoSurvivingParticles
from tests.exact_programs import PROGRAMS, total_variation

SCHEMES = ["multinomial", "systematic", "stratified", "residual"]
IDS = [p.name for p in PROGRAMS]


def run(policy, prog):
    return policy.run(prog.program, *prog.args, **prog.kwargs)


@pytest.mark.parametrize("prog", PROGRAMS, ids=IDS)
def test_enumerate_matches_brute_force(prog):
    result = run(policies.Enumerate(), prog)
    assert result.exact
    marginal = result.marginal()
    assert set(marginal) == set(prog.posterior)
    for value, p in prog.posterior.items():
        assert marginal[value] == pytest.approx(p, abs=1e-9), value
    assert result.log_evidence == pytest.approx(prog.log_Z, abs=1e-9)
    assert abs(result.normalized_weights.sum() - 1.0) < 1e-12


def _sampling_policies(prog, n=10_000):
    """(id, policy) pairs at `n` particles. Importance on a hard-constrained program whose proposal
    puts little mass on the target (Z < 0.2) gets n/Z draws, i.e. n *accepted-equivalent* particles:
    with Z = 0.05 its ESS at 10,000 draws is only ~500, too few for TV ≤ 0.03 on a non-trivial
    posterior (Rejection gets the same: 10,000 accepted samples)."""
    low_acceptance = prog.hard and prog.Z < 0.2
    out = [("importance", policies.Importance(num_particles=int(n / prog.Z) if low_acceptance else n, seed=1))]
    # `shaped` twists hard (2·heads − 1 at every step): its survivors descend from few ancestors, so
    # at 10,000 particles the marginal's spread over seeds is TV 0.012-0.036 (8 seeds each, old and new
    # engine alike; unbiased: |z| < 2 over 80 seeds at N = 1,000). 4x the particles halves the spread.
    n_smc = 4 * n if prog.name == "shaped" else n
    out += [(f"smc-{s}", policies.SMC(num_particles=n_smc, resampling=s, seed=2)) for s in SCHEMES]
    if prog.hard:
        out.append(("rejection", policies.Rejection(num_particles=n, seed=3)))
    return out


CASES = [(prog, pid, pol) for prog in PROGRAMS for pid, pol in _sampling_policies(prog)]


@pytest.mark.parametrize("prog,pid,policy", CASES, ids=[f"{p.name}-{pid}" for p, pid, _ in CASES])
def test_total_variation_at_10k_particles(prog, pid, policy):
    result = run(policy, prog)
    tv = total_variation(result.marginal(), prog.posterior)
    assert tv <= 0.03, f"{pid} on {prog.name}: TV {tv:.4f} (ESS {result.ess:.0f})"


def _evidence_policies(prog, seed):
    out = [("importance", policies.Importance(num_particles=32, seed=seed))]
    out += [(f"smc-{s}", policies.SMC(num_particles=32, resampling=s, seed=seed)) for s in SCHEMES]
    if prog.hard:
        out.append(("rejection", policies.Rejection(num_particles=8, seed=seed)))
    return out


def _z_hat(policy, prog) -> float:
    try:
        return math.exp(run(policy, prog).log_evidence)
    except NoSurvivingParticles:
        return 0.0


EVIDENCE_CASES = [(prog, pid) for prog in PROGRAMS for pid, _ in _evidence_policies(prog, 0)]


@pytest.mark.parametrize("prog,pid", EVIDENCE_CASES, ids=[f"{p.name}-{pid}" for p, pid in EVIDENCE_CASES])
def test_evidence_is_unbiased_over_200_seeds(prog, pid):
    estimates = np.array([_z_hat(dict(_evidence_policies(prog, seed))[pid], prog) for seed in range(200)])
    mean, se = estimates.mean(), estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(mean - prog.Z) <= 4 * se + 1e-12, f"{pid} on {prog.name}: mean Ẑ {mean:.5f} ± {se:.5f}, Z {prog.Z:.5f}"


def test_the_unbiasedness_check_can_fail():
    """A deliberately biased estimator (Ẑ·1.1) is caught by the same 4-SE test: the test has power."""
    prog = next(p for p in PROGRAMS if p.name == "chain3")
    estimates = np.array([1.1 * _z_hat(policies.SMC(num_particles=32, seed=s), prog) for s in range(200)])
    mean, se = estimates.mean(), estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(mean - prog.Z) > 4 * se
