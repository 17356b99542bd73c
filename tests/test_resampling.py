"""Resampling schemes: unbiasedness within a failing statistical bound, variance ordering against
the exact per-scheme variances, structural properties (hypothesis), drift guards, registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.population import normalized_weights
from swarm.resampling import (
    SCHEMES,
    multinomial,
    offspring_counts,
    resample,
    residual,
    stratified,
    systematic,
)

# A fixed non-uniform vector with zeros in the middle; n·w = [2.56, 0, .88, 2.16, 0, .4, 1.36, .64].
W = np.array([0.32, 0.0, 0.11, 0.27, 0.0, 0.05, 0.17, 0.08])
REPS = 20_000


def _counts(scheme, w: np.ndarray, n: int, reps: int, seed: int) -> np.ndarray:
    """reps × len(w) matrix of offspring counts of independent draws."""
    rng = np.random.default_rng(seed)
    return np.stack([offspring_counts(scheme(w, rng, n), w.size) for _ in range(reps)])


def _assert_unbiased(counts: np.ndarray, w: np.ndarray, n: int, z: float = 5.0) -> None:
    """|mean count − n·w_i| ≤ z standard errors (empirical), exact where the count never varies."""
    mean = counts.mean(axis=0)
    se = counts.std(axis=0, ddof=1) / math.sqrt(counts.shape[0])
    err = np.abs(mean - n * w)
    bad = np.flatnonzero(err > z * se + 1e-12)
    assert bad.size == 0, f"biased at {bad.tolist()}: mean {mean[bad]}, n·w {n * w[bad]}, se {se[bad]}"


@pytest.fixture(scope="module")
def counts_by_scheme() -> dict[str, np.ndarray]:
    return {name: _counts(fn, W, W.size, REPS, seed=i) for i, (name, fn) in enumerate(SCHEMES.items())}


# ------------------------------------------------------------------ unbiasedness


@pytest.mark.parametrize("name", list(SCHEMES))
def test_mean_offspring_is_n_times_weight(name, counts_by_scheme):
    _assert_unbiased(counts_by_scheme[name], W, W.size)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_unbiased_when_n_differs_from_population_size(name):
    w = np.array([0.5, 0.05, 0.3, 0.15])
    _assert_unbiased(_counts(SCHEMES[name], w, 7, 5_000, seed=99), w, 7)


def test_unbiasedness_check_has_power():
    """The bound above must reject a slightly wrong scheme (tempered weights w^0.9)."""

    def tempered(w, rng, n=None):
        v = w**0.9
        return multinomial(v / v.sum(), rng, n)

    with pytest.raises(AssertionError, match="biased"):
        _assert_unbiased(_counts(tempered, W, W.size, REPS, seed=5), W, W.size)


# ------------------------------------------------------------------ variance


def _exact_variances(w: np.ndarray, n: int) -> dict[str, float]:
    """Σ_i Var N_i for the schemes with a closed form (see swarm.resampling's docstring)."""
    nw = n * w
    r = nw - np.floor(nw)
    big_r = r.sum()
    return {
        "multinomial": float(n * np.sum(w * (1 - w))),
        "systematic": float(np.sum(r * (1 - r))),
        "residual": float(np.sum(r * (1 - r / big_r))),
    }


def test_variance_ordering(counts_by_scheme):
    total = {k: float(c.var(axis=0, ddof=1).sum()) for k, c in counts_by_scheme.items()}
    for name in ("systematic", "stratified", "residual"):
        assert total[name] < 0.8 * total["multinomial"], total
    assert total["systematic"] < total["stratified"] < total["multinomial"], total
    # and each measured variance matches its exact value (relative s.e. of a variance ~ 1%)
    for name, exact in _exact_variances(W, W.size).items():
        assert total[name] == pytest.approx(exact, rel=0.08), (name, total[name], exact)


def test_per_particle_variance_never_exceeds_multinomial(counts_by_scheme):
    multi = W.size * W * (1 - W)
    for name in ("systematic", "stratified", "residual"):
        var = counts_by_scheme[name].var(axis=0, ddof=1)
        assert np.all(var <= multi * 1.1 + 1e-12), (name, var, multi)


def test_systematic_counts_are_floor_or_ceil(counts_by_scheme):
    nw = W.size * W
    c = counts_by_scheme["systematic"]
    assert np.all((c == np.floor(nw)) | (c == np.ceil(nw)))


def test_residual_deterministic_part_is_exact(counts_by_scheme):
    nw = W.size * W
    c = counts_by_scheme["residual"]
    assert np.all(c >= np.floor(nw))
    assert np.all((c - np.floor(nw)).sum(axis=1) == W.size - np.floor(nw).sum())
    # integer n·w: residual (and systematic) must return exactly the deterministic copies
    w = np.array([0.5, 0.0, 0.25, 0.125, 0.125])
    for seed in range(20):
        rng = np.random.default_rng(seed)
        assert residual(w, rng, 8).tolist() == [0, 0, 0, 0, 2, 2, 3, 4]
        assert systematic(w, rng, 8).tolist() == [0, 0, 0, 0, 2, 2, 3, 4]


# ------------------------------------------------------------------ structure (property tests)


@st.composite
def weight_vectors(draw):
    raw = draw(
        st.lists(
            st.one_of(st.just(0.0), st.floats(1e-300, 1.0), st.floats(1e-3, 1e3)),
            min_size=1,
            max_size=30,
        ).filter(lambda xs: sum(xs) > 0)
    )
    w = np.array(raw)
    return w / w.sum()


@settings(max_examples=150, deadline=None)
@given(weight_vectors(), st.integers(0, 60), st.sampled_from(sorted(SCHEMES)), st.integers(0, 2**32))
def test_structure(w, n, name, seed):
    a = resample(name, w, np.random.default_rng(seed), n)
    assert a.dtype == np.int64 and a.shape == (n,)
    assert np.all(np.diff(a) >= 0), "offspring of one parent must be adjacent (sorted)"
    assert np.all((a >= 0) & (a < w.size))
    assert np.all(w[a] > 0), "a zero-weight particle was chosen"
    counts = offspring_counts(a, w.size)
    assert counts.sum() == n
    nw = n * w
    if name == "systematic":
        assert np.all((counts >= np.floor(nw - 1e-9)) & (counts <= np.ceil(nw + 1e-9)))
    if name == "stratified":
        assert np.all((counts >= np.floor(nw - 1e-9) - 1) & (counts <= np.ceil(nw + 1e-9) + 1))
    if name == "residual":
        assert np.all(counts >= np.floor(nw * (1 - 1e-12)))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e308, 1e308), min_size=1, max_size=20), st.sampled_from(sorted(SCHEMES)))
def test_extreme_log_weights_resample_only_the_live(log_w, name):
    log_w = np.array(log_w + [-np.inf])
    w = normalized_weights(log_w)
    a = resample(name, w, np.random.default_rng(0))
    assert a.size == log_w.size and np.all(w[a] > 0)


class _MaxRng:
    """A stand-in Generator whose uniforms are all the largest double below 1."""

    top = 1.0 - 2.0**-53

    def random(self, size=None):
        return self.top if size is None else np.full(size, self.top)

    def standard_exponential(self, size):
        e = np.full(size, 1.0)
        e[-1] = 0.0  # the last spacing 0 makes the largest sorted uniform exactly 1.0
        return e


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_float_drift_never_selects_trailing_zero_weight(name):
    w = np.array([0.1] * 10 + [0.0, 0.0])  # cumsum ends at 0.9999999999999999
    a = SCHEMES[name](w, _MaxRng(), 1_000_000)
    assert a.max() == 9 and a.size == 1_000_000


class _MinRng:
    """A stand-in Generator whose uniforms are all exactly 0."""

    def random(self, size=None):
        return 0.0 if size is None else np.zeros(size)

    def standard_exponential(self, size):
        e = np.ones(size)
        e[0] = 0.0  # the smallest sorted uniform is exactly 0.0
        return e


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_point_at_zero_never_selects_leading_zero_weight(name):
    w = np.array([0.0, 0.0, 0.5, 0.5])
    a = SCHEMES[name](w, _MinRng(), 3)
    assert a.min() == 2


def test_single_live_particle_takes_everything():
    w = np.zeros(1000)
    w[417] = 1.0
    for name, fn in SCHEMES.items():
        assert np.all(fn(w, np.random.default_rng(1), 50) == 417), name


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_large_population(name):
    rng = np.random.default_rng(3)
    w = normalized_weights(rng.normal(0, 3, 100_000))
    a = SCHEMES[name](w, rng)
    assert a.size == 100_000 and np.all(np.diff(a) >= 0) and np.all(w[a] > 0)


# ------------------------------------------------------------------ reproducibility, registry, errors


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_seeded_reproducibility(name):
    w = normalized_weights(np.random.default_rng(0).normal(size=500))
    a1 = resample(name, w, np.random.default_rng(42))
    a2 = resample(name, w, np.random.default_rng(42))
    a3 = resample(name, w, np.random.default_rng(43))
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, a3)


def test_registry_and_unknown_scheme():
    assert SCHEMES == {
        "multinomial": multinomial,
        "systematic": systematic,
        "stratified": stratified,
        "residual": residual,
    }
    with pytest.raises(ValueError, match=r"'bogus'.*multinomial, residual, stratified, systematic"):
        resample("bogus", W, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown"):
        resample(None, W, np.random.default_rng(0))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(SCHEMES))
@pytest.mark.parametrize(
    "bad, msg",
    [
        ([0.5, -0.1, 0.6], r"weights\[1\]"),
        ([0.5, np.nan, 0.5], r"weights\[1\] is nan"),
        ([0.5, np.inf], r"weights\[1\] is inf"),
        ([0.2, 0.2], "normalised"),
        ([], "non-empty"),
        ([[0.5, 0.5]], "1-D"),
    ],
)
def test_invalid_weights_rejected(name, bad, msg):
    with pytest.raises(ValueError, match=msg):
        SCHEMES[name](np.array(bad), np.random.default_rng(0))


def test_n_zero_and_negative():
    for fn in SCHEMES.values():
        out = fn(W, np.random.default_rng(0), 0)
        assert out.dtype == np.int64 and out.size == 0
        with pytest.raises(ValueError, match="n must be"):
            fn(W, np.random.default_rng(0), -1)


def test_offspring_counts():
    c = offspring_counts(np.array([0, 0, 2, 2, 2]), 4)
    assert c.tolist() == [2, 0, 3, 0] and c.dtype == np.int64
    assert offspring_counts(np.array([], dtype=np.int64), 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        offspring_counts(np.array([0, 3]), 3)


def test_cdf_guard_ends_at_exactly_one():
    from swarm.resampling import _cdf

    w = np.array([0.1] * 10 + [0.0, 0.0])
    assert np.cumsum(w)[-1] != 1.0  # the drift this guards against
    cdf, last = _cdf(w)
    assert last == 9 and np.all(cdf[9:] == 1.0)
