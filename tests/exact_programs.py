"""Small programs with exact answers, each paired with a brute-force computation of its posterior
and evidence that does not use the library (plain Python over every joint assignment).

Each `ExactProgram` gives: the program and its arguments, `posterior` {return value: p} and `Z`,
and `hard` (every potential in {0, 1}, so Rejection applies).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from swarm import Bernoulli, Categorical, Uniform, factor, guarantee, plate, sample


@dataclass
class ExactProgram:
    name: str
    program: Callable[..., Any]
    posterior: dict[Any, float]
    Z: float
    hard: bool = False
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    @property
    def log_Z(self) -> float:
        return math.log(self.Z)


def _tabulate(joint: list[tuple[Any, float]]) -> tuple[dict[Any, float], float]:
    """[(return value, π(τ)Φ(τ))] over every path → (posterior over values, Z)."""
    mass: dict[Any, float] = defaultdict(float)
    for value, m in joint:
        mass[value] += m
    Z = math.fsum(mass.values())
    return {v: m / Z for v, m in mass.items() if m > 0}, Z


# 1. The contract example of ARCHITECTURE.md ------------------------------------------------------
def api_example():
    x = sample("x", Categorical(["a", "b", "c"], probs=[0.5, 0.3, 0.2]))
    factor("likes_b", 1.0 if x == "b" else 0.0)
    guarantee("not_c", x != "c")
    return x


def _api_example_exact():
    return _tabulate([("a", 0.5), ("b", 0.3 * math.e), ("c", 0.0)])


# 2. A chain of dependent coins with soft factors ----------------------------------------------
def chain3():
    x1 = sample("x1", Bernoulli(0.3))
    factor("f1", 0.5 if x1 else -0.5)
    x2 = sample("x2", Bernoulli(0.9 if x1 else 0.2))
    x3 = sample("x3", Bernoulli(0.6 if x2 else 0.1))
    factor("f2", math.log(0.8) if x2 == x3 else math.log(0.2))
    return (x1, x2, x3)


def _chain3_exact():
    joint = []
    for x1, x2, x3 in itertools.product([True, False], repeat=3):
        p = (0.3 if x1 else 0.7)
        p2 = 0.9 if x1 else 0.2
        p *= p2 if x2 else 1 - p2
        p3 = 0.6 if x2 else 0.1
        p *= p3 if x3 else 1 - p3
        phi = math.exp(0.5 if x1 else -0.5) * (0.8 if x2 == x3 else 0.2)
        joint.append(((x1, x2, x3), p * phi))
    return _tabulate(joint)


# 3. A two-state hidden Markov model, posterior of the last state --------------------------------
HMM_INIT = [0.6, 0.4]
HMM_TRANS = [[0.7, 0.3], [0.2, 0.8]]
HMM_EMIT = [[0.9, 0.1], [0.3, 0.7]]
HMM_OBS = [0, 1, 1, 0, 1]


def hmm(observations):
    z = sample("z0", Categorical([0, 1], probs=HMM_INIT))
    factor("y0", math.log(HMM_EMIT[z][observations[0]]))
    for t in range(1, len(observations)):
        z = sample(f"z{t}", Categorical([0, 1], probs=HMM_TRANS[z]))
        factor(f"y{t}", math.log(HMM_EMIT[z][observations[t]]))
    return z


def _hmm_exact():
    """The forward algorithm: α_t(z) = p(y_0..t, z_t = z)."""
    alpha = [HMM_INIT[z] * HMM_EMIT[z][HMM_OBS[0]] for z in (0, 1)]
    for y in HMM_OBS[1:]:
        alpha = [sum(alpha[a] * HMM_TRANS[a][z] for a in (0, 1)) * HMM_EMIT[z][y] for z in (0, 1)]
    Z = sum(alpha)
    return {0: alpha[0] / Z, 1: alpha[1] / Z}, Z


# 4. Branches with a different number of factors per path ----------------------------------------
def branching():
    kind = sample("kind", Categorical(["short", "long"], probs=[0.5, 0.5]))
    if kind == "short":
        factor("s", math.log(0.3))
        return "short"
    y = sample("y", Bernoulli(0.5))
    factor("l1", math.log(0.9))
    factor("l2", math.log(0.5) if y else math.log(0.1))
    factor("l3", math.log(0.8))
    return ("long", y)


def _branching_exact():
    return _tabulate([("short", 0.5 * 0.3), (("long", True), 0.5 * 0.5 * 0.9 * 0.5 * 0.8),
                      (("long", False), 0.5 * 0.5 * 0.9 * 0.1 * 0.8)])


# 5. A plate of five voters, each with a soft preference; a factor on the majority ----------------
def _voter():
    v = sample("v", Bernoulli(0.6))
    factor("confidence", 0.2 if v else 0.0)
    return v


def plate_vote():
    votes = plate("vote", 5, _voter)
    heads = sum(votes)
    factor("majority", math.log(0.9) if heads >= 3 else math.log(0.1))
    return heads


def _plate_vote_exact():
    joint = []
    for votes in itertools.product([True, False], repeat=5):
        p = math.prod(0.6 if v else 0.4 for v in votes)
        phi = math.prod(math.exp(0.2) if v else 1.0 for v in votes)
        heads = sum(votes)
        phi *= 0.9 if heads >= 3 else 0.1
        joint.append((heads, p * phi))
    return _tabulate(joint)


# 6. Guarantees that reject 95% of the proposal mass ----------------------------------------------
def needle_guarantees():
    x = sample("x", Uniform(range(10)))
    y = sample("y", Uniform(range(10)))
    guarantee("sum_is_9", x + y == 9)
    guarantee("x_small", x < 5)
    return x


def _needle_exact():
    return _tabulate([(x, 0.01) for x in range(10) for y in range(10) if x + y == 9 and x < 5])


# 7. Shaping factors that must cancel ---------------------------------------------------------------
def shaped(use_shaping: bool = True):
    heads = 0
    for t in range(3):
        heads += sample(f"x{t}", Bernoulli(0.5))
        if use_shaping:
            factor(f"twist{t}", 2.0 * heads - 1.0, shaping=True)
        guarantee(f"alive{t}", True)
    factor("target", math.log(0.9) if heads == 2 else math.log(0.1))
    return heads


def _shaped_exact():
    return _tabulate([(sum(xs), 0.125 * (0.9 if sum(xs) == 2 else 0.1))
                      for xs in itertools.product([0, 1], repeat=3)])


# 8. An async program with an async plate ------------------------------------------------------------
async def _async_inner(bias):
    await asyncio.sleep(0)
    v = sample("v", Bernoulli(bias))
    factor("prefer_true", math.log(0.7) if v else math.log(0.3))
    return v


async def async_program():
    bias = sample("bias", Categorical([0.2, 0.8], probs=[0.5, 0.5]))
    await asyncio.sleep(0)
    pair = await plate("pair", 2, _async_inner, bias)
    guarantee("not_both_false", any(pair))
    return (bias, sum(pair))


def _async_exact():
    joint = []
    for bias in (0.2, 0.8):
        for pair in itertools.product([True, False], repeat=2):
            p = 0.5 * math.prod(bias if v else 1 - bias for v in pair)
            phi = math.prod(0.7 if v else 0.3 for v in pair) * (1.0 if any(pair) else 0.0)
            joint.append(((bias, sum(pair)), p * phi))
    return _tabulate(joint)


# 9. A program with arguments: coins observed through a soft likelihood ---------------------------
def _coin(p):
    return sample("heads", Bernoulli(p))


def noisy_count(n, p, observed):
    k = sum(plate("coin", n, _coin, p))
    factor("likelihood", -((k - observed) ** 2) / 2.0)
    return k


def _noisy_count_exact(n=4, p=0.3, observed=3):
    return _tabulate([(k, math.comb(n, k) * p**k * (1 - p) ** (n - k) * math.exp(-((k - observed) ** 2) / 2))
                      for k in range(n + 1)])


# 10. A loop of variable length: flip until heads (at most 5), a cost per flip ----------------------
def bounded_geometric():
    n = 0
    heads = False
    while n < 5 and not heads:
        heads = sample(f"flip{n}", Bernoulli(0.4))
        n += 1
        factor(f"cost{n}", -0.3)
    guarantee("found", heads)
    return n


def _geometric_exact():
    return _tabulate([(n, 0.6 ** (n - 1) * 0.4 * math.exp(-0.3 * n)) for n in range(1, 6)])


# 11. A custom proposal: draws from Uniform, weights correct to the model ---------------------------
def custom_proposal():
    x = sample("x", Categorical([0, 1, 2, 3], probs=[0.7, 0.1, 0.1, 0.1]), proposal=Uniform([0, 1, 2, 3]))
    factor("f", 0.5 * x)
    return x


def _custom_proposal_exact():
    return _tabulate([(x, p * math.exp(0.5 * x)) for x, p in zip(range(4), [0.7, 0.1, 0.1, 0.1])])


# 12. Hard constraints at every step: no two consecutive heads --------------------------------------
def no_two_heads():
    prev = False
    count = 0
    for t in range(5):
        x = sample(f"x{t}", Bernoulli(0.5))
        guarantee(f"ok{t}", not (x and prev))
        prev = x
        count += x
    return count


def _no_two_heads_exact():
    joint = []
    for xs in itertools.product([False, True], repeat=5):
        ok = not any(a and b for a, b in zip(xs, xs[1:]))
        joint.append((sum(xs), (1 / 32) * ok))
    return _tabulate(joint)


# 13. Two dice, a hard constraint on the sum ------------------------------------------------------------
def dice():
    a = sample("a", Uniform(range(1, 7)))
    b = sample("b", Uniform(range(1, 7)))
    guarantee("at_least_9", a + b >= 9)
    return max(a, b)


def _dice_exact():
    return _tabulate([(max(a, b), 1 / 36) for a in range(1, 7) for b in range(1, 7) if a + b >= 9])


def impossible():
    """Every run fails its guarantee: Z = 0, no posterior (a policy must raise NoSurvivingParticles)."""
    x = sample("x", Bernoulli(0.5))
    guarantee("never", False)
    return x


def _make(name, program, exact, hard=False, args=(), kwargs=None) -> ExactProgram:
    posterior, Z = exact()
    return ExactProgram(name, program, posterior, Z, hard, args, kwargs or {})


PROGRAMS: list[ExactProgram] = [
    _make("api_example", api_example, _api_example_exact),
    _make("chain3", chain3, _chain3_exact),
    _make("hmm", hmm, _hmm_exact, args=(HMM_OBS,)),
    _make("branching", branching, _branching_exact),
    _make("plate_vote", plate_vote, _plate_vote_exact),
    _make("needle_guarantees", needle_guarantees, _needle_exact, hard=True),
    _make("shaped", shaped, _shaped_exact),
    _make("async_program", async_program, _async_exact),
    _make("noisy_count", noisy_count, _noisy_count_exact, args=(4, 0.3), kwargs={"observed": 3}),
    _make("bounded_geometric", bounded_geometric, _geometric_exact),
    _make("custom_proposal", custom_proposal, _custom_proposal_exact),
    _make("no_two_heads", no_two_heads, _no_two_heads_exact, hard=True),
    _make("dice", dice, _dice_exact, hard=True),
]
BY_NAME = {p.name: p for p in PROGRAMS}

SEARCH_CASES = [(p, objective) for objective in ("joint", "weight") for p in PROGRAMS
                if not (objective == "weight" and p.name == "custom_proposal")]
"""(program, objective) pairs for search policies checked against Enumerate's best trace. Not
custom_proposal under "weight": there log w holds p/q of its Uniform proposal, and Enumerate's
traces (drawn from each site's model) have no proposal, so the two scores are not comparable."""
SEARCH_IDS = [f"{p.name}-{objective}" for p, objective in SEARCH_CASES]


def total_variation(p: dict[Any, float], q: dict[Any, float]) -> float:
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)
