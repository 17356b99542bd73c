"""`Result.marginal` and `Result.expectation` on values that are not plain hashable scalars.

Every case runs under `Enumerate`, so the masses are exact: x ~ Bernoulli(0.3) picks one of two
values, and the marginal must be {value(True): 0.3, value(False): 0.7} (to 1e-12: a sum of two
exactly enumerated probabilities, rounding only), with equal values merged and unequal ones apart.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import policies
from swarm import Bernoulli, sample


def _two_values(on_true, on_false):
    def program():
        return on_true() if sample("x", Bernoulli(0.3)) else on_false()
    return policies.Enumerate().run(program)


def _masses(result) -> list[float]:
    return sorted(result.marginal().values())


def test_every_nan_is_one_value():
    """Before: NaN ≠ NaN, so each NaN particle was a value of its own (three NaN keys for three
    particles under SMC)."""
    result = policies.SMC(num_particles=60, seed=0).run(
        lambda: float("nan") if sample("x", Bernoulli(0.5)) else np.float32("nan") if sample("y", Bernoulli(0.5)) else 1.0)
    marginal = result.marginal()
    assert len(marginal) == 2 and 1.0 in marginal
    (nan_key,) = [k for k in marginal if k != 1.0]
    assert math.isnan(nan_key) and math.isclose(sum(marginal.values()), 1.0)


def test_large_arrays_that_differ_only_in_the_middle_are_different_values():
    """Before: arrays were keyed by their repr, which elides the middle of an array of more than
    1,000 items, so these two were one value with mass 1.0."""
    base = np.arange(2000)
    changed = base.copy()
    changed[1000] = -1
    result = _two_values(lambda: changed, lambda: base)
    assert _masses(result) == pytest.approx([0.3, 0.7], abs=1e-12)
    assert result.marginal()[tuple(base.tolist())] == pytest.approx(0.7, abs=1e-12)


def test_equal_arrays_are_one_value():
    result = _two_values(lambda: np.array([[1, 2], [3, 4]]), lambda: np.array([[1, 2], [3, 4]]))
    assert result.marginal() == {((1, 2), (3, 4)): pytest.approx(1.0, abs=1e-12)}


def test_dicts_with_keys_of_several_types_are_values():
    """Before: sorting the items raised TypeError ('<' between str and int)."""
    result = _two_values(lambda: {1: "a", "b": 2}, lambda: {"b": 2, 1: "c"})
    assert _masses(result) == pytest.approx([0.3, 0.7], abs=1e-12)
    same_in_any_order = _two_values(lambda: {1: "a", "b": [2]}, lambda: {"b": [2], 1: "a"})
    assert _masses(same_in_any_order) == pytest.approx([1.0], abs=1e-12)


def test_sets_are_keyed_by_their_members():
    result = _two_values(lambda: {1, 2}, lambda: {2, 1})
    assert result.marginal() == {frozenset({1, 2}): pytest.approx(1.0, abs=1e-12)}


def test_expectation_of_a_boolean_or_numpy_term_is_a_probability_or_mean():
    """The control for the errors below: what users write for a probability or a mean works."""
    result = _two_values(lambda: 3, lambda: 5)
    assert result.expectation(lambda v: v == 3) == pytest.approx(0.3, abs=1e-12)
    assert result.expectation(lambda v: np.float32(v)) == pytest.approx(0.3 * 3 + 0.7 * 5, abs=1e-6)
    assert result.expectation(lambda v: math.inf if v == 3 else 0.0) == math.inf


@pytest.mark.parametrize("fn, error, message", [
    (lambda v: None, TypeError, r"fn\(value\) of particle \d+ \(value [35]\) is None, not a real number \(a particle "
                                r"that returned nothing"),
    (lambda v: "3", TypeError, r"is '3', not a real number"),
    (lambda v: 1j, TypeError, r"is 1j, not a real number"),
    (lambda v: float("nan") if v == 5 else 1.0, ValueError, r"fn\(value\) of particle \d+ \(value 5\) is NaN"),
], ids=["None", "str", "complex", "NaN"])
def test_expectation_names_the_particle_whose_term_is_not_a_real_number(fn, error, message):
    """Before: None gave "float() argument must be a string or a real number, not 'NoneType'", a
    string that parses ("3") was silently used as 3.0, and a NaN term made the estimate NaN."""
    with pytest.raises(error, match=message):
        _two_values(lambda: 3, lambda: 5).expectation(fn)


def test_a_result_without_a_positive_weight_has_no_expectation_or_map():
    """Before: a search that completed no trace (TreeSearch with one simulation) returned a result
    whose expectation of 1 was a silent 0.0 and whose map() raised numpy's "argmax of an empty
    sequence". Both name the problem now."""
    from swarm import EmptyPosteriorError
    from tests.exact_programs import BY_NAME

    prog = BY_NAME["no_two_heads"]
    empty = policies.TreeSearch(num_simulations=1, seed=0).run(prog.program, *prog.args, **prog.kwargs)
    assert empty.particles == [] and empty.marginal() == {}
    for read in (lambda r: r.expectation(lambda v: 1.0), lambda r: r.map()):
        with pytest.raises(EmptyPosteriorError, match="TreeSearch: the result has no particle of positive weight"):
            read(empty)

    assert _two_values(lambda: 1.0, lambda: 0.0).expectation(lambda v: v) == pytest.approx(0.3, abs=1e-12)
