"""Population math: log-space reductions against a 400-digit Decimal reference, validation,
evidence accumulation (unbiasedness checked on a toy model with exact Z) and genealogy."""

from __future__ import annotations

import itertools
import math
from decimal import Context, Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.errors import InvalidPotentialError
from swarm.population import (
    AncestorRows,
    EvidenceAccumulator,
    Genealogy,
    count_distinct,
    check_log_weights,
    ess,
    log_ess,
    logmeanexp,
    logsumexp,
    normalize,
    normalized_weights,
)
from swarm.resampling import systematic

NEG_INF = -math.inf

# ------------------------------------------------------------------ high-precision reference


def _ctx():
    """400 digits: enough for exact differences of ±1e308-scale values; no underflow trap."""
    ctx = Context(prec=400, Emin=-(10**17), Emax=10**17)
    return localcontext(ctx)


def _ref_lse(xs: list[float], scale: int = 1) -> Decimal | None:
    """log Σ exp(scale·x) in 400-digit Decimal arithmetic (independent of numpy), None if all -inf.

    Shifted by the exact maximum so exp never overflows; negligible terms underflow to 0."""
    with _ctx():
        finite = [Decimal(x) * scale for x in xs if x != NEG_INF]
        if not finite:
            return None
        m = max(finite)
        total = sum(((x - m).exp() for x in finite), Decimal(0))
        return m + total.ln()


def _ref_normalized(xs: list[float]) -> list[Decimal | None]:
    """Exact-ish log w̄_i = x_i − lse(x); None for -inf entries."""
    ref = _ref_lse(xs)
    with _ctx():
        return [None if x == NEG_INF else Decimal(x) - ref for x in xs]


def _ref_log_ess(xs: list[float]) -> Decimal:
    """log ESS = 2·lse(x) − lse(2x), with 400 digits so the difference does not cancel."""
    with _ctx():
        return 2 * _ref_lse(xs) - _ref_lse(xs, scale=2)


def _close(got: float, ref: Decimal, rel: float = 1e-12, abs_: float = 1e-12) -> bool:
    with _ctx():
        return abs(Decimal(got) - ref) <= Decimal(rel) * abs(ref) + Decimal(abs_)


# log weights: "moderate" covers 1e±300 in linear space; "huge" reaches ±1e308
moderate = st.floats(min_value=-700.0, max_value=700.0)
huge = st.floats(min_value=-1e308, max_value=1e308)
entry = st.one_of(moderate, huge, st.just(NEG_INF))
log_weight_lists = st.lists(entry, min_size=1, max_size=40)
live_lists = log_weight_lists.filter(lambda xs: any(x != NEG_INF for x in xs))


# ------------------------------------------------------------------ reductions


@settings(max_examples=200, deadline=None)
@given(log_weight_lists)
def test_logsumexp_matches_decimal_reference(xs):
    got = logsumexp(np.array(xs))
    ref = _ref_lse(xs)
    if ref is None:
        assert got == NEG_INF
    else:
        assert math.isfinite(got)
        assert _close(got, ref), (got, ref)


@settings(max_examples=200, deadline=None)
@given(live_lists)
def test_logmeanexp_matches_reference(xs):
    with _ctx():
        ref = _ref_lse(xs) - Decimal(len(xs)).ln()
    assert _close(logmeanexp(xs), ref)


@settings(max_examples=200, deadline=None)
@given(live_lists)
def test_normalize_matches_reference_and_sums_to_one(xs):
    lw = normalize(np.array(xs))
    for x, got, exact in zip(xs, lw, _ref_normalized(xs)):
        if exact is None or exact < -Decimal(np.finfo(float).max):
            assert got == NEG_INF  # dead, or a normalised log weight beyond the float range
        else:
            # absolute error of a normalised log weight: a few ulps of the shifted values
            assert _close(got, exact, rel=1e-12, abs_=1e-12), (x, got, exact)
    assert np.all(lw <= 1e-12)
    w = normalized_weights(np.array(xs))
    assert math.isclose(math.fsum(w), 1.0, abs_tol=1e-12)
    assert np.all(w >= 0)
    assert np.all(w[np.array(xs) == NEG_INF] == 0.0)


@settings(max_examples=200, deadline=None)
@given(live_lists)
def test_ess_matches_reference(xs):
    # ESS = (Σ w)² / Σ w², i.e. log ESS = 2·lse(x) − lse(2x), evaluated in Decimal
    assert _close(log_ess(xs), _ref_log_ess(xs), rel=1e-12, abs_=1e-11)
    e = ess(xs)
    n_live = sum(x != NEG_INF for x in xs)
    assert 1.0 - 1e-9 <= e <= n_live + 1e-9


@settings(max_examples=100, deadline=None)
@given(st.lists(moderate, min_size=1, max_size=30), st.floats(-1e4, 1e4))
def test_shift_invariance(xs, c):
    x = np.array(xs)
    assert math.isclose(logsumexp(x + c), logsumexp(x) + c, rel_tol=1e-12, abs_tol=1e-9)
    np.testing.assert_allclose(normalized_weights(x + c), normalized_weights(x), rtol=1e-6, atol=1e-12)
    assert math.isclose(ess(x + c), ess(x), rel_tol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_all_minus_inf_but_one(n):
    x = np.full(n, NEG_INF)
    x[n // 2] = -1e308
    assert logsumexp(x) == -1e308
    assert logmeanexp(x) == -1e308 - math.log(n)
    assert ess(x) == 1.0
    w = normalized_weights(x)
    assert w[n // 2] == 1.0 and w.sum() == 1.0
    assert normalize(x)[n // 2] == 0.0


def test_extreme_linear_weights_1e_pm_300():
    # linear weights 1e300, 1e300, 1e-300: log weights ±690.8
    x = np.log(np.array([1e300, 1e300, 1e-300]))
    assert math.isclose(logsumexp(x), math.log(2e300), rel_tol=1e-14)
    w = normalized_weights(x)
    assert w[0] == w[1] == 0.5 and w[2] == 0.0  # 1e-600 underflows to an exact 0
    assert math.isclose(ess(x), 2.0, rel_tol=1e-12)


def test_normalised_log_weight_beyond_float_range_is_minus_inf():
    with np.errstate(all="raise"):  # no stray overflow warning either
        lw = normalize([1e308, -1e308])
        w = normalized_weights([1e308, -1e308])
    assert lw[0] == 0.0 and lw[1] == NEG_INF
    assert w.tolist() == [1.0, 0.0]


def test_huge_positive_log_weights_do_not_overflow():
    x = np.array([1e308, 1e308, 1e308 - 1e293])
    assert logsumexp(x) == 1e308  # + log 2 is below an ulp of 1e308
    assert math.isclose(ess(x), 2.0, rel_tol=1e-12)  # 2·x would overflow the naive formula
    np.testing.assert_array_equal(normalized_weights(x), [0.5, 0.5, 0.0])
    assert ess(np.full(4, -1e308)) == pytest.approx(4.0, rel=1e-12)


def test_empty_and_dead_populations():
    assert logsumexp([]) == NEG_INF
    assert logsumexp([NEG_INF, NEG_INF]) == NEG_INF
    assert ess([]) == 0.0 and ess([NEG_INF] * 3) == 0.0
    assert log_ess([NEG_INF]) == NEG_INF
    assert logmeanexp([NEG_INF, NEG_INF]) == NEG_INF
    assert normalize([]).size == 0
    with pytest.raises(ValueError, match="empty"):
        logmeanexp([])
    with pytest.raises(ValueError, match="every log weight is -inf"):
        normalize([NEG_INF, NEG_INF])
    with pytest.raises(ValueError, match="every log weight is -inf"):
        normalized_weights([NEG_INF])


def test_equal_weights_give_full_ess():
    assert ess(np.zeros(1000)) == pytest.approx(1000.0, rel=1e-12)
    assert ess(np.full(5, 123.4)) == pytest.approx(5.0, rel=1e-12)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize(
    "fn", [logsumexp, logmeanexp, normalize, normalized_weights, log_ess, ess, check_log_weights]
)
def test_nan_and_plus_inf_rejected_with_index(fn, bad):
    x = [0.0, -1.0, NEG_INF, bad, 2.0]
    with pytest.raises(InvalidPotentialError, match=r"\[3\]") as info:
        fn(x)
    assert isinstance(info.value, ValueError)


def test_check_log_weights_message_and_shape():
    with pytest.raises(InvalidPotentialError, match=r"particle weights\[1\] is nan.*2 invalid"):
        check_log_weights([0.0, math.nan, math.inf], what="particle weights")
    with pytest.raises(InvalidPotentialError, match="1-D"):
        check_log_weights(np.zeros((2, 2)))
    with pytest.raises(InvalidPotentialError, match="numeric"):
        check_log_weights(["a", "b"])
    out = check_log_weights([0, NEG_INF])
    assert out.dtype == np.float64 and out[1] == NEG_INF


# ------------------------------------------------------------------ evidence


def _toy_exact_log_z(steps: int, p1: float, stay: float, switch: float) -> float:
    """x_t ~ Bernoulli(p1) i.i.d.; factor exp(stay) if x_t == x_{t−1} else exp(switch) for t ≥ 1."""
    z = 0.0
    for xs in itertools.product([0, 1], repeat=steps):
        prob = math.prod(p1 if x else 1 - p1 for x in xs)
        logphi = sum(stay if a == b else switch for a, b in zip(xs, xs[1:]))
        z += prob * math.exp(logphi)
    return math.log(z)


def _toy_smc(rng, n, steps, p1, stay, switch, threshold=0.5) -> tuple[float, list[float]]:
    acc = EvidenceAccumulator()
    x = (rng.random(n) < p1).astype(int)
    log_w = np.zeros(n)
    for _ in range(1, steps):
        new = (rng.random(n) < p1).astype(int)
        log_w = log_w + np.where(new == x, stay, switch)
        x = new
        acc.log_evidence_after(log_w)
        if ess(log_w) < threshold * n:
            anc = systematic(normalized_weights(log_w), rng)
            x = x[anc]
            log_w = acc.weights_after_resampling(log_w)
    return acc.log_evidence, acc.history


def test_evidence_estimate_unbiased_and_log_biased_low():
    steps, p1, stay, switch = 5, 0.3, 1.5, -2.0
    log_z = _toy_exact_log_z(steps, p1, stay, switch)
    rng = np.random.default_rng(12345)
    runs = np.array([_toy_smc(rng, 8, steps, p1, stay, switch)[0] for _ in range(4000)])
    z_hat = np.exp(runs - log_z)  # Ẑ / Z, expectation 1
    se = z_hat.std(ddof=1) / math.sqrt(z_hat.size)
    assert abs(z_hat.mean() - 1.0) < 5 * se, (z_hat.mean(), se)
    # Jensen: E[log Ẑ] < log Z, clearly so at N = 8
    log_se = runs.std(ddof=1) / math.sqrt(runs.size)
    assert runs.mean() < log_z - 3 * log_se


def test_evidence_accumulator_bookkeeping():
    acc = EvidenceAccumulator()
    assert acc.log_evidence == 0.0 and acc.history == []
    lw = np.log([0.2, 0.6])
    assert acc.log_evidence_after(lw) == pytest.approx(math.log(0.4))
    reset = acc.weights_after_resampling(lw, n=5)
    assert reset.shape == (5,) and np.allclose(reset, math.log(0.4))
    assert acc.log_evidence_after(reset + math.log(0.5)) == pytest.approx(math.log(0.2))
    assert acc.history == pytest.approx([math.log(0.4), math.log(0.2)])
    assert acc.log_evidence == acc.history[-1]


# ------------------------------------------------------------------ genealogy


def _example() -> Genealogy:
    """4 particles; step 0 resamples, step 1 does not, step 2 resamples.

    step 0: post-resampling parents [0, 0, 2, 3]
    step 1: identity
    step 2: parents [1, 1, 2, 2] (indices into step-1/2 population)
    final particle j → step 2 index [1,1,2,2][j] → step 1 same → step 0 root [0,0,2,3][·]
    """
    g = Genealogy(4)
    g.record(np.array([0, 0, 2, 3]))
    g.record(None)
    g.record([1, 1, 2, 2])
    return g


def test_genealogy_lineage_and_collapse():
    g = _example()
    assert len(g) == 3 and g.size == 4
    np.testing.assert_array_equal(g.ancestors_at(1), [0, 1, 2, 3])
    assert g.ancestors_at(0).dtype == np.int64
    assert g.lineage(0) == [0, 1, 1]
    assert g.lineage(3) == [2, 2, 2]
    assert [g.lineage(j)[0] for j in range(4)] == [0, 0, 2, 2]
    assert g.unique_ancestors(0, 2) == 2  # roots {0, 2} survive
    assert g.unique_ancestors(0, 0) == 3  # after step 0: {0, 2, 3}
    assert g.unique_ancestors(1, 2) == 2
    assert g.unique_ancestors(2, 2) == 2
    assert g.unique_ancestors() == 2
    with pytest.raises(IndexError):
        g.lineage(4)
    with pytest.raises(IndexError):
        g.unique_ancestors(2, 1)


def test_genealogy_serialisation_and_validation():
    g = _example()
    lists = g.to_lists()
    assert lists == [[0, 0, 2, 3], [0, 1, 2, 3], [1, 1, 2, 2]]
    assert all(type(i) is int for step in lists for i in step)
    g2 = Genealogy.from_lists(4, lists)
    assert g2.to_lists() == lists and g2.lineage(1) == g.lineage(1)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        g.record([0, 4, 1, 1])
    with pytest.raises(ValueError):
        g.record([0.5, 1.0])
    with pytest.raises(ValueError):
        g.ancestors_at(0)[0] = 3  # read-only


def test_ancestor_rows_read_as_lists_over_the_runs_arrays():
    g = _example()
    rows = g.rows()
    lists = [[0, 0, 2, 3], [0, 1, 2, 3], [1, 1, 2, 2]]
    assert rows == lists and lists == rows and rows == AncestorRows.from_lists(lists)
    assert rows != lists[:2] and rows != [[0, 0, 2, 3], [0, 1, 2, 3], [1, 1, 2, 3]] and rows != AncestorRows()
    assert len(rows) == 3 and rows[0] == [0, 0, 2, 3] and rows[-1] == [1, 1, 2, 2]
    assert all(type(i) is int for row in rows for i in row)
    assert list(rows) == lists and rows[1:] == lists[1:] and rows.tolist() == lists
    assert rows.array(1) is g.ancestors_at(1)  # the run's own array, not a copy (the identity is shared)
    with pytest.raises(ValueError):
        rows.array(0)[0] = 1  # read-only
    g.record([0, 0, 0, 0])
    assert len(rows) == 3  # a snapshot of the steps so far
    assert "3 steps" in repr(rows)


def test_ancestor_rows_round_trip_through_pickle_json_and_validation():
    import pickle

    from swarm.result import Diagnostics

    for rows in (_example().rows(), AncestorRows()):
        back = pickle.loads(pickle.dumps(rows))
        assert back == rows and type(back) is AncestorRows
        assert all(not back.array(k).flags.writeable for k in range(len(back)))
    d = Diagnostics(genealogy=[[0, 0, 1], [2, 1, 0]])
    assert isinstance(d.genealogy, AncestorRows) and d.genealogy == [[0, 0, 1], [2, 1, 0]]
    assert d.model_dump()["genealogy"] == [[0, 0, 1], [2, 1, 0]]
    again = Diagnostics.model_validate_json(d.model_dump_json())
    assert again.genealogy == d.genealogy and again == d
    assert Diagnostics().genealogy == [] and Diagnostics.model_json_schema()["properties"]["genealogy"]["type"] == "array"
    with pytest.raises(ValueError, match="genealogy row 1: ancestor indices must be a flat list of integers"):
        Diagnostics(genealogy=[[0, 1], [0.5, 1]])
    with pytest.raises(ValueError, match="genealogy row 0: ancestor indices must be >= 0"):
        Diagnostics(genealogy=[[0, -1]])
    with pytest.raises(ValueError, match=r"genealogy row 1: ancestor indices must be < 2 \(the particles after row 0\)"):
        Diagnostics(genealogy=[[0, 0], [0, 2, 1]])
    assert Diagnostics(genealogy=[[0, 0], [1, 1, 0]]).genealogy == [[0, 0], [1, 1, 0]]  # a size change is fine
    with pytest.raises(ValueError, match="expected a list of lists"):
        Diagnostics(genealogy="0 1")


@given(st.lists(st.integers(0, 50), max_size=200))
@settings(max_examples=200, deadline=None)
def test_count_distinct_matches_a_set(xs):
    assert count_distinct(xs) == len(set(xs)) == count_distinct(np.array(xs, dtype=np.int64))


def test_genealogy_population_size_change():
    g = Genealogy(3)
    g.record([2, 2])  # resample 3 → 2
    g.record([0, 1, 1, 1, 0])  # 2 → 5
    assert g.size == 5
    assert g.lineage(4) == [2, 0]
    assert g.unique_ancestors() == 1
