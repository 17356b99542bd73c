"""TreeSearch against enumeration and the backup operators' theory (docs/theory.md §7).

- With enough simulations (the whole drawn tree explored) the best trace found has Enumerate's
  maximal score, for objective="joint" (the MAP of p) and "weight", on every exact program; the
  reported lower bound never exceeds log Z.
- With an oracle value function and c_puct = 0 the search walks straight to the best trace in as
  many simulations as the tree is deep: selection follows the values.
- Backups on a tree with a wide shallow branch and a deep narrow one: with zero rewards MellowMax
  gives every node the value 0 whatever the width and depth (intensive), LogSumExp gives
  log(number of leaves) (extensive); with rewards, "max" prefers the branch with one lucky leaf
  and MellowMax the uniformly good one, at exactly the values mm_ω and max give.
- Invalid configurations raise pydantic errors naming the field.
"""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

import policies
from policies.critics import RolloutCritic
from policies.mellowmax import mellowmax
from policies.tree_search import TreeSearch
from swarm import Bernoulli, Categorical, NoSurvivingParticles, Uniform, factor, sample
from tests.exact_programs import BY_NAME, SEARCH_CASES, SEARCH_IDS, impossible


def run(policy, prog):
    return policy.run(prog.program, *prog.args, **prog.kwargs)


@pytest.mark.parametrize("prog, objective", SEARCH_CASES, ids=SEARCH_IDS)
def test_enough_simulations_find_the_best_trace_of_enumerate(prog, objective):
    exact = run(policies.Enumerate(), prog)
    scores = sorted(((p.log_weight if objective == "joint" else p.trace.log_weight), i)
                    for i, p in enumerate(exact.particles))[::-1]
    result = run(TreeSearch(expand=64, num_simulations=5000, objective=objective, seed=0), prog)
    assert result.extra["exhausted"]
    assert result.extra["best_score"] == pytest.approx(scores[0][0], abs=1e-9)
    if len(scores) == 1 or scores[0][0] > scores[1][0] + 1e-9:
        assert result.extra["best"].trace.samples() == exact.particles[scores[0][1]].trace.samples()
    assert result.log_evidence <= prog.log_Z + 1e-9
    assert result.extra["scores"] == sorted(result.extra["scores"], reverse=True)


def oracle_max_future(prog):
    """A test double for a perfect value function: the largest log w still reachable from a prefix,
    by enumeration (every path whose samples extend the prefix's)."""
    paths = run(policies.Enumerate(), prog).particles

    def value(prefix):
        have = prefix.samples()
        reachable = [p.trace.log_weight for p in paths
                     if all(k in p.trace.samples() and p.trace.samples()[k] == v for k, v in have.items())]
        return max(reachable) - prefix.log_weight if reachable else -math.inf
    return value


def test_selection_follows_the_value():
    """hmm: 32 paths, 63 internal nodes. With the oracle value and c_puct = 0, each simulation
    expands the next node of the best path: 6 simulations find the best of 32 traces."""
    prog = BY_NAME["hmm"]
    best = max(p.trace.log_weight for p in run(policies.Enumerate(), prog).particles)
    guided = run(TreeSearch(expand=32, num_simulations=6, value=oracle_max_future(prog), backup="max",
                            c_puct=0.0, seed=1), prog)
    assert guided.extra["best_score"] == pytest.approx(best, abs=1e-9)
    assert len(guided.particles) <= 2 and not guided.extra["exhausted"]
    blind = run(TreeSearch(expand=32, num_simulations=6, backup="max", c_puct=0.0, seed=1), prog)
    assert blind.extra["best_score"] < best - 0.1  # the test has power: without values, 6 are not enough


def test_rollout_values_find_the_best_trace():
    prog = BY_NAME["hmm"]
    best = max(p.trace.log_weight for p in run(policies.Enumerate(), prog).particles)
    result = run(TreeSearch(expand=32, num_simulations=20, value=RolloutCritic(num_rollouts=16, reduce="max"),
                            backup="max", seed=2), prog)
    assert result.extra["best_score"] == pytest.approx(best, abs=1e-9)
    assert result.extra["value_usage"]["executions"] > 0


def wide_or_deep(width=4, depth=3, wide_rewards=None, deep_reward=0.0):
    """A wide shallow branch (one site with `width` values) and a deep narrow one (`depth` coins)."""
    branch = sample("branch", Categorical(["wide", "deep"]))
    factor("chose", 0.0)
    if branch == "wide":
        x = sample("x", Uniform(range(width)))
        factor("leaf", 0.0 if wide_rewards is None else wide_rewards[x])
        return ("wide", x)
    bits = []
    for t in range(depth):
        bits.append(sample(f"bit{t}", Bernoulli(0.5)))
        factor(f"level{t}", deep_reward / depth)
    return ("deep", tuple(bits))


def _branch_values(result):
    return {c["samples"]["branch"]: c["value"] for c in result.extra["root_children"]}


def _explore(backup, **kwargs):
    return TreeSearch(expand=96, num_simulations=1000, backup=backup, seed=3).run(wide_or_deep, **kwargs)


@pytest.mark.parametrize("width,depth", [(2, 1), (4, 3), (8, 2), (16, 4)])
def test_mellowmax_is_intensive_and_logsumexp_counts_paths(width, depth):
    mm = _explore("mellowmax", width=width, depth=depth)
    lse = _explore("logsumexp", width=width, depth=depth)
    assert mm.extra["exhausted"] and lse.extra["exhausted"]
    leaves = {b: sum(1 for v in lse.values if v[0] == b) for b in ("wide", "deep")}
    assert leaves == {"wide": width, "deep": 2 ** depth}  # the whole tree was drawn
    for value in [*_branch_values(mm).values(), mm.extra["root_value"]]:
        assert value == pytest.approx(0.0, abs=1e-12)
    lse_values = _branch_values(lse)
    assert lse_values["wide"] == pytest.approx(math.log(width), abs=1e-9)
    assert lse_values["deep"] == pytest.approx(depth * math.log(2), abs=1e-9)
    assert lse.extra["root_value"] == pytest.approx(math.log(width + 2 ** depth), abs=1e-9)


def test_max_prefers_a_lucky_leaf_and_mellowmax_a_uniformly_good_branch():
    rewards = [2.0] + [-3.0] * 7  # wide: one leaf worth 2, seven worth -3; deep: every leaf worth 0.5
    kwargs = {"width": 8, "depth": 3, "wide_rewards": rewards, "deep_reward": 0.5}
    by_max = _branch_values(_explore("max", **kwargs))
    by_mm = _branch_values(_explore("mellowmax", **kwargs))
    assert by_max == pytest.approx({"wide": 2.0, "deep": 0.5}, abs=1e-9)
    assert by_mm == pytest.approx({"wide": mellowmax(rewards, 1.0), "deep": 0.5}, abs=1e-9)
    assert max(by_max, key=by_max.get) == "wide" and max(by_mm, key=by_mm.get) == "deep"
    # whatever the backup, the best trace found is the lucky leaf
    assert _explore("mellowmax", **kwargs).extra["best"].value == ("wide", 0)


def test_invalid_configs_name_the_field():
    bad = {"expand": 0, "backup": "softmax", "omega": 0.0, "num_simulations": 0, "c_puct": -1.0,
           "objective": "reward", "value": 3}
    for field, value in bad.items():
        with pytest.raises(ValidationError, match=field):
            TreeSearch(**{field: value})
    with pytest.raises(ValidationError, match="omega"):
        TreeSearch(omega=math.inf)


def test_all_dead_raises_and_budget_stops():
    with pytest.raises(NoSurvivingParticles):
        TreeSearch(expand=4, num_simulations=10, seed=0).run(impossible)
    stopped = TreeSearch(expand=4, num_simulations=10, seed=0,
                         budget=policies.Budget(max_seconds=1e-9)).run(BY_NAME["hmm"].program, *BY_NAME["hmm"].args)
    assert stopped.diagnostics.stopped_by == "max_seconds" and stopped.extra["simulations"] == 1
