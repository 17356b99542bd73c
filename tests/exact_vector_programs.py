"""The programs of tests/exact_programs.py written for arrays (`policies.VectorizedSMC`): one
statement for the whole population, `np.where` where the scalar program branches, `CategoricalRows`
where a distribution depends on a particle's state. Each has the same posterior and evidence as its
scalar twin, `BY_NAME[name]` there (brute-forced without the library). `needle_guarantees` is the
scalar program itself: it has no branch, so it runs on arrays unchanged."""

from __future__ import annotations

import asyncio
import math

import numpy as np

from swarm import Bernoulli, Categorical, CategoricalRows, Uniform, factor, guarantee, plate, sample
from tests.exact_programs import HMM_EMIT, HMM_INIT, HMM_OBS, HMM_TRANS, needle_guarantees


def _bernoulli_rows(p: np.ndarray) -> CategoricalRows:
    """Bernoulli(p_i) per particle, as rows [p_i, 1 − p_i] over (True, False)."""
    return CategoricalRows([True, False], np.stack([p, 1.0 - p], axis=1))


# The programs of tests/exact_programs.py, each written once for the whole population ------------
def api_example():
    x = sample("x", Categorical(["a", "b", "c"], probs=[0.5, 0.3, 0.2]))
    factor("likes_b", np.where(x == "b", 1.0, 0.0))
    guarantee("not_c", x != "c")
    return x


def chain3():
    x1 = sample("x1", Bernoulli(0.3))
    factor("f1", np.where(x1, 0.5, -0.5))
    x2 = sample("x2", _bernoulli_rows(np.where(x1, 0.9, 0.2)))
    x3 = sample("x3", _bernoulli_rows(np.where(x2, 0.6, 0.1)))
    factor("f2", np.where(x2 == x3, math.log(0.8), math.log(0.2)))
    return (x1, x2, x3)


def hmm(observations):
    emit, trans = np.log(np.array(HMM_EMIT)), np.array(HMM_TRANS)
    z = sample("z0", Categorical([0, 1], probs=HMM_INIT))
    factor("y0", emit[z, observations[0]])
    for t in range(1, len(observations)):
        z = sample(f"z{t}", CategoricalRows([0, 1], trans[z]))
        factor(f"y{t}", emit[z, observations[t]])
    return z


def shaped(use_shaping: bool = True):
    heads = 0
    for t in range(3):
        heads = heads + sample(f"x{t}", Categorical([0, 1]))
        if use_shaping:
            factor(f"twist{t}", 2.0 * heads - 1.0, shaping=True)
        guarantee(f"alive{t}", True)
    factor("target", np.where(heads == 2, math.log(0.9), math.log(0.1)))
    return heads


async def _async_inner(bias):
    await asyncio.sleep(0)
    v = sample("v", _bernoulli_rows(bias))
    factor("prefer_true", np.where(v, math.log(0.7), math.log(0.3)))
    return v


async def async_program():
    bias = sample("bias", Categorical([0.2, 0.8], probs=[0.5, 0.5]))
    await asyncio.sleep(0)
    pair = await plate("pair", 2, _async_inner, bias)
    guarantee("not_both_false", pair[0] | pair[1])
    return (bias, pair[0].astype(int) + pair[1])


def noisy_count(n, p, observed):
    k = sum(plate("coin", n, lambda: sample("heads", Bernoulli(p))))
    factor("likelihood", -((k - observed) ** 2) / 2.0)
    return k


def custom_proposal():
    x = sample("x", Categorical([0, 1, 2, 3], probs=[0.7, 0.1, 0.1, 0.1]), proposal=Uniform([0, 1, 2, 3]))
    factor("f", 0.5 * x)
    return x


def no_two_heads():
    prev = False
    count = 0
    for t in range(5):
        x = sample(f"x{t}", Bernoulli(0.5))
        guarantee(f"ok{t}", ~(x & prev))
        prev = x
        count = count + x
    return count


def dice():
    a = sample("a", Uniform(range(1, 7)))
    b = sample("b", Uniform(range(1, 7)))
    guarantee("at_least_9", a + b >= 9)
    return np.maximum(a, b)


VECTOR_PROGRAMS = {
    # name in tests/exact_programs.BY_NAME -> (the vectorised twin, its arguments)
    "api_example": (api_example, ()), "chain3": (chain3, ()), "hmm": (hmm, (HMM_OBS,)),
    "needle_guarantees": (needle_guarantees, ()), "shaped": (shaped, ()), "async_program": (async_program, ()),
    "noisy_count": (noisy_count, (4, 0.3, 3)), "custom_proposal": (custom_proposal, ()),
    "no_two_heads": (no_two_heads, ()), "dice": (dice, ()),
}


def hmm_steps(observations):
    """`hmm` with explicit steps: `z = yield z` ends each step, so resampling gathers z and the
    program goes on without a restart (what a long filter should do)."""
    emit, trans = np.log(np.array(HMM_EMIT)), np.array(HMM_TRANS)
    z = sample("z0", Categorical([0, 1], probs=HMM_INIT))
    factor("y0", emit[z, observations[0]])
    for t in range(1, len(observations)):
        z = yield z
        z = sample(f"z{t}", CategoricalRows([0, 1], trans[z]))
        factor(f"y{t}", emit[z, observations[t]])
    return z


def chain3_steps():
    """`chain3` with explicit steps and a dict state (x1 is carried to the return value)."""
    x1 = sample("x1", Bernoulli(0.3))
    factor("f1", np.where(x1, 0.5, -0.5))
    state = yield {"x1": x1}
    x1 = state["x1"]
    x2 = sample("x2", _bernoulli_rows(np.where(x1, 0.9, 0.2)))
    x3 = sample("x3", _bernoulli_rows(np.where(x2, 0.6, 0.1)))
    factor("f2", np.where(x2 == x3, math.log(0.8), math.log(0.2)))
    return (x1, x2, x3)


def hmm_proposed(observations):
    """`hmm` with every regime proposed uniformly instead of from the model: each weight gains
    log p(z_t | z_{t−1}) − log q(z_t), p read off the particle's own row of the transition matrix
    (`CategoricalRows.batch_log_prob`), so the posterior and Z are the model's."""
    emit, trans = np.log(np.array(HMM_EMIT)), np.array(HMM_TRANS)
    z = sample("z0", Categorical([0, 1], probs=HMM_INIT), proposal=Uniform([0, 1]))
    factor("y0", emit[z, observations[0]])
    for t in range(1, len(observations)):
        z = sample(f"z{t}", CategoricalRows([0, 1], trans[z]), proposal=Uniform([0, 1]))
        factor(f"y{t}", emit[z, observations[t]])
    return z


VECTOR_PROGRAMS["hmm_steps"] = (hmm_steps, (HMM_OBS,))
VECTOR_PROGRAMS["chain3_steps"] = (chain3_steps, ())
VECTOR_PROGRAMS["hmm_proposed"] = (hmm_proposed, (HMM_OBS,))
STEPS_OF = {"hmm_steps": "hmm", "chain3_steps": "chain3", "hmm_proposed": "hmm"}
"""Generator programs and reweighted twins → the exact program whose answer they share."""
