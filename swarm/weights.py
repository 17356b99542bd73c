"""How one statement changes a trace's log weight: the rule, written once.

With π the proposal and Φ the potentials (docs/theory.md §1.2, §1.3), a trace's importance weight against
its proposal is

    log w(τ) = Σ_target-factors β·ℓ_f  +  Σ_guarantees log 1[c]  +  Σ_samples (log p − log q),

where β is the factor's scale (1 unless a tempering handler scales it; Φ^0 = 1 even where Φ = 0) and
the sample term is zero unless the value was drawn from a proposal q other than the site's model
distribution p (`target_log_prob` is then log p). A shaping factor (a twist) is not part of w: it
*replaces* the particle's previous twist while the particle runs and is dropped when it finishes.

A statement *kills* its particle when it sets w to zero: a failed guarantee, a target factor of −∞
at a positive scale, a sample whose model probability is zero, or a shaping factor of −∞ (a twist
that says the prefix cannot be completed: a particle whose twisted weight is zero can never regain
mass, so it is killed exactly like a failed guarantee rather than carrying −∞ into the next step's
increment, where −∞ − (−∞) would be NaN).

Every place that needs a weight (the execution's weigh handler, `Trace.log_weight`, the policies
that score complete traces) calls these functions.
"""

from __future__ import annotations

import math
from typing import Any

NEG_INF = -math.inf


def factor_term(log_potential: float, shaping: bool, scale: float) -> float:
    """What a factor adds to log w: β·ℓ for a target factor (0 when β = 0), nothing for a twist."""
    if shaping or scale == 0.0:
        return 0.0
    return scale * log_potential


def sample_term(log_prob: float, target_log_prob: float | None) -> float:
    """What a sample adds to log w: log p − log q when drawn from another proposal, else 0."""
    if target_log_prob is None:
        return 0.0
    if target_log_prob == NEG_INF:
        return NEG_INF
    return target_log_prob - log_prob


def kills_factor(log_potential: float, shaping: bool, scale: float) -> bool:
    """A −∞ target factor at a positive scale, or a −∞ twist, sets the weight to zero."""
    return log_potential == NEG_INF and (shaping or scale > 0.0)


def event_term(event: Any) -> float:
    """What a recorded event adds to log w (interact and error events add nothing)."""
    kind = event.type
    if kind == "sample":
        return sample_term(event.log_prob, event.target_log_prob)
    if kind == "factor":
        return factor_term(event.log_potential, event.shaping, event.scale)
    if kind == "guarantee":
        return 0.0 if event.satisfied else NEG_INF
    return 0.0


def event_kills(event: Any) -> bool:
    """Whether a recorded event set its trace's weight to zero."""
    kind = event.type
    if kind == "guarantee":
        return not event.satisfied
    if kind == "factor":
        return kills_factor(event.log_potential, event.shaping, event.scale)
    if kind == "sample":
        return event.target_log_prob == NEG_INF
    return False


def log_weight(events: Any) -> float:
    """log w(τ) of a sequence of events (see the module docstring); −∞ as soon as one kills."""
    total = []
    for event in events:
        term = event_term(event)
        if term == NEG_INF or event_kills(event):
            return NEG_INF
        if term:
            total.append(term)
    return math.fsum(total)


def log_potential(events: Any, *, unscaled: bool = False) -> float:
    """log Φ(τ): target factors and guarantees only (no sample corrections). `unscaled` reads every
    target factor at β = 1, whatever scale it ran at (tempering compares traces at full scale)."""
    total = []
    for event in events:
        if event.type == "guarantee":
            if not event.satisfied:
                return NEG_INF
        elif event.type == "factor" and not event.shaping:
            scale = 1.0 if unscaled else event.scale
            if kills_factor(event.log_potential, False, scale):
                return NEG_INF
            term = factor_term(event.log_potential, False, scale)
            if term:
                total.append(term)
    return math.fsum(total)


def importance_correction(events: Any) -> float:
    """Σ_samples (log p − log q): the part of log w that comes from custom proposals."""
    return math.fsum(sample_term(e.log_prob, e.target_log_prob) for e in events if e.type == "sample")


def current_twist(events: Any) -> float:
    """The value of the last shaping factor among `events` (0 when there is none)."""
    for event in reversed(events):
        if event.type == "factor" and event.shaping:
            return event.scale * event.log_potential if event.log_potential != NEG_INF else NEG_INF
    return 0.0


def first_soft_event(events: Any) -> Any:
    """The first event that makes the trace's weight other than 0 or 1 (a soft target factor, or a
    site drawn from a proposal other than its distribution), or None: a surviving trace without one
    is an exact draw of p ∝ π·1[constraints] (rejection, voting)."""
    for event in events:
        if event.type == "factor" and not event.shaping and event.scale != 0 and event.log_potential not in (0.0, NEG_INF):
            return event
        if event.type == "sample" and event.target_log_prob is not None and \
                sample_term(event.log_prob, event.target_log_prob) != 0.0:
            return event
    return None
