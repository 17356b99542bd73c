"""Property tests of the backup operators (docs/theory.md §7.2): mellowmax bounds, limits, translation
equivariance, non-expansion, and depth-independence on a uniform tree (where LSE counts paths)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.mellowmax import backup, logsumexp, mellowmax

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
vectors = st.lists(finite, min_size=1, max_size=12)
omegas = st.floats(min_value=1e-3, max_value=1e3)


def tol(*xs) -> float:
    """Round-off allowance: a few ulps of the largest magnitude involved."""
    return 1e-9 * (1.0 + max(abs(v) for x in xs for v in np.atleast_1d(x)))


@settings(max_examples=300, deadline=None)
@given(vectors, omegas)
def test_between_mean_and_max(x, omega):
    mm = mellowmax(x, omega)
    assert np.mean(x) - tol(x) <= mm <= max(x) + tol(x)
    assert mm >= max(x) - math.log(len(x)) / omega - tol(x)


@settings(max_examples=300, deadline=None)
@given(vectors, omegas, finite)
def test_translation_equivariance(x, omega, c):
    shifted = mellowmax([v + c for v in x], omega)
    assert shifted == pytest.approx(mellowmax(x, omega) + c, abs=tol(x, c) * 10)
    assert mellowmax([c] * len(x), omega) == pytest.approx(c, abs=tol(c))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10).flatmap(lambda n: st.tuples(st.lists(finite, min_size=n, max_size=n),
                                                      st.lists(finite, min_size=n, max_size=n))), omegas)
def test_non_expansion(xy, omega):
    x, y = xy
    gap = max(abs(a - b) for a, b in zip(x, y))
    assert abs(mellowmax(x, omega) - mellowmax(y, omega)) <= gap + tol(x, y) * 10


@settings(max_examples=200, deadline=None)
@given(vectors)
def test_limits(x):
    assert mellowmax(x, 1e-9) == pytest.approx(np.mean(x), abs=1e-3 + tol(x))
    assert mellowmax(x, 1e9) == pytest.approx(max(x), abs=math.log(len(x)) * 1e-9 + tol(x))


def _tree_value(depth: int, branching: int, kind: str, omega: float = 1.0) -> float:
    """Recursive value of a uniform tree with zero rewards: V(leaf) = 0, V(node) = op(children)."""
    value = 0.0
    for _ in range(depth):
        value = backup([0.0 + value] * branching, kind, omega)
    return value


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 12), st.integers(1, 8), omegas)
def test_depth_independence_on_uniform_tree(depth, branching, omega):
    assert _tree_value(depth, branching, "mellowmax", omega) == pytest.approx(0.0, abs=1e-9)
    assert _tree_value(depth, branching, "logsumexp") == pytest.approx(depth * math.log(branching), abs=1e-9)


def test_rewards_still_add_up_along_depth():
    """mellowmax removes the path-counting term, not per-step rewards: reward r per step → L·r."""
    value = 0.0
    for _ in range(5):
        value = backup([0.5 + value] * 3, "mellowmax", 2.0)
    assert value == pytest.approx(2.5)


def test_backup_kinds_and_dead_children():
    x = [1.0, -2.0, 0.5]
    assert backup(x, "max") == 1.0
    assert backup(x, "mean") == pytest.approx(np.mean(x))
    assert backup(x, "logsumexp") == pytest.approx(math.log(sum(math.exp(v) for v in x)))
    assert backup(x, "mellowmax", 3.0) == pytest.approx((logsumexp([3 * v for v in x]) - math.log(3)) / 3)
    dead = [0.0, -math.inf]
    assert backup(dead, "max") == 0.0
    assert backup(dead, "mean") == -math.inf
    assert backup(dead, "mellowmax", 1.0) == pytest.approx(-math.log(2))
    assert backup([-math.inf, -math.inf], "mellowmax") == -math.inf
    assert mellowmax([1e300, -1e300], 1e6) == pytest.approx(1e300)  # no overflow


@pytest.mark.parametrize("bad,match", [
    (dict(values=[], kind="max"), "non-empty"),
    (dict(values=[1.0, float("nan")], kind="max"), r"values\[1\]"),
    (dict(values=[math.inf], kind="mean"), r"values\[0\]"),
    (dict(values=[1.0], kind="median"), "kind"),
    (dict(values=[1.0], kind="mellowmax", omega=0.0), "omega"),
])
def test_errors_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        backup(**bad)
