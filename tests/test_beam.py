"""Beam search against enumeration: what it claims (the top trace, a lower bound on log Z), not p.

- With width ≥ the number of paths and enough children per element, the best beam element has the
  exact maximal score of Enumerate (joint: the MAP of p; weight: the largest log w), on every exact
  program; where every path is drawn, log_evidence = log Z and the marginal is exact.
- log_evidence never exceeds log Z (a deterministic lower bound).
- On a program where greedy search fails, width 2 finds a better trace than width 1.
"""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

import policies
from policies.beam import Beam
from swarm import Bernoulli, NoSurvivingParticles, factor, sample
from tests.exact_programs import BY_NAME, SEARCH_CASES, SEARCH_IDS, impossible, total_variation


def run(policy, prog):
    return policy.run(prog.program, *prog.args, **prog.kwargs)


def enumerate_scores(prog, objective):
    """Every path's score under the objective, from Enumerate (which draws each site from its model)."""
    exact = run(policies.Enumerate(), prog)
    if objective == "joint":
        return [(p.log_weight, p) for p in exact.particles]
    return [(p.trace.log_weight, p) for p in exact.particles]


@pytest.mark.parametrize("prog, objective", SEARCH_CASES, ids=SEARCH_IDS)
def test_wide_beam_finds_the_best_trace_of_enumerate(prog, objective):
    scores = sorted(enumerate_scores(prog, objective), key=lambda sp: -sp[0])
    result = run(Beam(width=64, expand=64, objective=objective, seed=0), prog)
    best = result.extra["best"]
    assert result.extra["best_score"] == pytest.approx(scores[0][0], abs=1e-9)
    assert best.status == "finished"
    if len(scores) == 1 or scores[0][0] > scores[1][0] + 1e-9:  # a unique best trace: the same one
        assert best.trace.samples() == scores[0][1].trace.samples()
    assert result.log_evidence <= prog.log_Z + 1e-9


FULLY_COVERED = ["api_example", "hmm", "branching", "shaped", "bounded_geometric", "custom_proposal", "no_two_heads"]


@pytest.mark.parametrize("name", FULLY_COVERED)
def test_a_beam_holding_every_path_is_exact(name):
    prog = BY_NAME[name]
    paths = len(run(policies.Enumerate(), prog).particles)
    result = run(Beam(width=64, expand=64, objective="joint", seed=0), prog)
    assert len(result.particles) == paths
    assert result.log_evidence == pytest.approx(prog.log_Z, abs=1e-9)
    assert total_variation(result.marginal(), prog.posterior) <= 1e-9


def greedy_trap():
    """The first step rewards a = True; the second punishes it far more."""
    a = sample("a", Bernoulli(0.5))
    factor("first", 1.0 if a else 0.0)
    b = sample("b", Bernoulli(0.5))
    factor("second", -5.0 if a else (2.0 if b else 1.5))
    return (a, b)


def test_greedy_fails_where_a_wider_beam_does_not():
    greedy = Beam(width=1, expand=8, seed=1).run(greedy_trap)
    wide = Beam(width=2, expand=8, seed=1).run(greedy_trap)
    assert greedy.extra["best"].value[0] is True and greedy.extra["best_score"] == pytest.approx(-4.0)
    assert wide.extra["best"].value == (False, True) and wide.extra["best_score"] == pytest.approx(2.0)
    assert wide.extra["best_score"] > greedy.extra["best_score"]


def test_finished_traces_stay_in_the_beam_and_duplicates_merge():
    prog = BY_NAME["branching"]  # "short" finishes at step 1, the long paths run 3 more steps
    result = run(Beam(width=3, expand=16, objective="joint", seed=2), prog)
    assert "short" in result.values
    assert result.extra["merged"] > 0
    keys = [tuple(p.trace.samples().items()) for p in result.particles]
    assert len(set(keys)) == len(keys)
    assert result.extra["scores"] == sorted(result.extra["scores"], reverse=True)


def test_children_of_one_element_differ():
    """Each child continues on its own random stream: the 16 children of the root of a fair coin
    merge into the 2 distinct traces (shared streams would give 1), and their 2 × 16 children into
    the 4 distinct (a, b) pairs."""
    one = Beam(width=16, expand=16, seed=3, max_steps=1).run(greedy_trap)
    assert len(one.particles) == 2 and one.extra["merged"] == 14
    two = Beam(width=16, expand=16, seed=3).run(greedy_trap)
    assert sorted(p.value for p in two.particles) == [(False, False), (False, True), (True, False), (True, True)]


def test_search_is_reproducible_and_budgeted():
    prog = BY_NAME["hmm"]
    a = run(Beam(width=4, expand=4, seed=5), prog)
    b = run(Beam(width=4, expand=4, seed=5), prog)
    assert [p.trace.samples() for p in a.particles] == [p.trace.samples() for p in b.particles]
    short = run(Beam(width=4, expand=4, seed=5, max_steps=2), prog)
    assert short.diagnostics.stopped_by == "max_steps"
    assert all(p.status == "running" for p in short.particles) and short.log_evidence == -math.inf


def test_invalid_configs_name_the_field():
    for field, value in (("width", 0), ("expand", 0), ("objective", "reward"), ("max_steps", 0)):
        with pytest.raises(ValidationError, match=field):
            Beam(**{field: value})


def test_all_dead_raises():
    with pytest.raises(NoSurvivingParticles):
        Beam(width=2, expand=2, seed=0).run(impossible)
