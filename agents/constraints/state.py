"""What a guide is made of: each constraint's per-generation state (`TokenState`) and one drawn
position (`GuidedDraw`). Kept apart from `agents.constraints.base` so the guide needs only these."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class TokenState:
    """One part of a guide: the state of one constraint inside one generation.

    Exact states implement `log_phi_row()` (log φ(v | x) for every token id, EOS ids included);
    every state implements `log_phi(token)` and `advance(token)` (never called with an EOS id)."""

    exact: bool = True
    boolean: bool = True

    def log_phi_row(self) -> np.ndarray:  # pragma: no cover - exact subclasses override
        raise NotImplementedError

    def log_phi(self, token: int) -> float:
        return float(self.log_phi_row()[token])

    def advance(self, token: int) -> None:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class GuidedDraw:
    """One position drawn by a guide.

    `log_q`: log q_C(token) under the guided proposal (for an estimated draw, the nominal value
    log q(token) + log φ(token) − log_mass, so that log_q + log_mass is always the target's log
    q(token)·φ(token)); `log_mass`: the weight increment, log Z (exact) or log Ẑ (estimated);
    `log_phi`: log φ(token | x). `token` is −1 when no token had positive guided mass (dead)."""

    token: int
    log_q: float
    log_mass: float
    log_phi: float
    exact: bool

    @property
    def dead(self) -> bool:
        return self.token < 0
