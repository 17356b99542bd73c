"""`swarm.weights`, the weight rule written once, against its formula worked by hand:

    log w(τ) = Σ_target-factors β·ℓ_f + Σ_guarantees log 1[c] + Σ_samples (log p − log q),

twists outside w, and a statement that sets w to zero killing its particle. Every value here is
exact arithmetic on a few floats (no tolerance beyond float rounding)."""

from __future__ import annotations

import math

import pytest

from swarm.trace import InteractEvent, factor_event, guarantee_event, sample_event
from swarm.weights import (
    current_twist,
    event_kills,
    event_term,
    factor_term,
    first_soft_event,
    importance_correction,
    kills_factor,
    log_potential,
    log_weight,
)

NEG_INF = -math.inf


def drawn(name: str, log_q: float, log_p: float | None = None):
    return sample_event(name, 1, log_q, log_p, "D", {})


def test_each_statement_adds_its_term():
    assert factor_term(-1.5, False, 1.0) == -1.5
    assert factor_term(-1.5, False, 0.25) == -0.375          # β·ℓ
    assert factor_term(NEG_INF, False, 0.0) == 0.0           # Φ^0 = 1, even where Φ = 0
    assert factor_term(3.0, True, 1.0) == 0.0                # a twist is not part of w
    assert event_term(drawn("x", -0.7)) == 0.0               # drawn from its own distribution
    assert event_term(drawn("x", -0.7, -2.0)) == pytest.approx(-1.3)  # log p − log q
    assert event_term(drawn("x", -0.7, NEG_INF)) == NEG_INF
    assert event_term(guarantee_event("g", True)) == 0.0
    assert event_term(guarantee_event("g", False)) == NEG_INF
    assert event_term(factor_event("f", 2.0, False, 0.5)) == 1.0
    assert event_term(InteractEvent(address="m", sender="a", receiver="b", content="hi")) == 0.0


def test_what_kills_a_particle():
    assert kills_factor(NEG_INF, False, 1.0) and kills_factor(NEG_INF, True, 1.0)
    assert not kills_factor(NEG_INF, False, 0.0)             # a target factor at β = 0 weighs nothing
    assert kills_factor(NEG_INF, True, 0.0)                  # a −∞ twist: the prefix cannot be completed
    assert not kills_factor(-1e308, False, 1.0)
    assert event_kills(guarantee_event("g", False)) and not event_kills(guarantee_event("g", True))
    assert event_kills(drawn("x", -0.7, NEG_INF)) and not event_kills(drawn("x", -0.7, -9.0))
    assert event_kills(factor_event("t", NEG_INF, True, 1.0))
    assert not event_kills(factor_event("f", NEG_INF, False, 0.0))


def test_a_trace_weight_is_the_sum_of_its_terms_and_zero_once_killed():
    events = [drawn("x", -0.7, -2.0), factor_event("f", -1.5, False, 1.0), factor_event("t", 5.0, True, 1.0),
              guarantee_event("g", True), factor_event("h", 4.0, False, 0.5)]
    assert log_weight(events) == pytest.approx(-1.3 - 1.5 + 2.0)
    assert log_weight([]) == 0.0
    assert log_weight([*events, factor_event("t2", NEG_INF, True, 1.0)]) == NEG_INF  # a −∞ twist kills
    assert log_weight([guarantee_event("g", False), factor_event("f", 1.0, False, 1.0)]) == NEG_INF
    assert log_weight([factor_event("f", NEG_INF, False, 0.0), factor_event("g", 1.0, False, 1.0)]) == 1.0


def test_the_potential_leaves_out_proposals_and_twists_and_can_read_full_scale():
    events = [drawn("x", -0.7, -2.0), factor_event("f", -1.5, False, 1.0), factor_event("t", 5.0, True, 1.0),
              factor_event("h", 4.0, False, 0.5), guarantee_event("g", True)]
    assert log_potential(events) == pytest.approx(-1.5 + 2.0)
    assert log_potential(events, unscaled=True) == pytest.approx(-1.5 + 4.0)
    tempered_out = [factor_event("f", NEG_INF, False, 0.0)]
    assert log_potential(tempered_out) == 0.0 and log_potential(tempered_out, unscaled=True) == NEG_INF
    assert log_potential([guarantee_event("g", False)]) == NEG_INF
    assert importance_correction(events) == pytest.approx(-1.3)


def test_the_current_twist_is_the_last_one():
    assert current_twist([]) == 0.0
    events = [factor_event("t1", 1.0, True, 1.0), factor_event("f", 9.0, False, 1.0), factor_event("t2", 3.0, True, 0.5)]
    assert current_twist(events) == 1.5
    assert current_twist([*events, factor_event("t3", NEG_INF, True, 0.5)]) == NEG_INF


def test_the_first_soft_event_is_found_and_hard_ones_are_not_soft():
    hard = [drawn("x", -0.7), drawn("y", -0.7, -0.7), factor_event("zero", 0.0, False, 1.0),
            factor_event("kill", NEG_INF, False, 1.0), factor_event("twist", 2.0, True, 1.0),
            factor_event("off", 2.0, False, 0.0), guarantee_event("g", True)]
    assert first_soft_event(hard) is None
    soft_factor = factor_event("soft", -0.5, False, 1.0)
    assert first_soft_event([*hard, soft_factor, drawn("z", -0.7, -1.0)]) is soft_factor
    corrected = drawn("z", -0.7, -1.0)
    assert first_soft_event([*hard, corrected, soft_factor]) is corrected
