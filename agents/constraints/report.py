"""`ConstraintReport`: what a constrained generation tells the trace about its weight correction.

The sample event's info carries it under "constraint" (see `agents.generation`). `log_weight` is the
correction the site's log weight gains: Σ over the drawn positions of log Z = log Σ_v q(v) φ(v | x)
(`weights="exact"`), or of an unbiased estimate of Z (`"estimated"`, AWRS); `"unavailable"` when a
server enforced the constraint without telling us the mass (the weight then ignores the constraint
and a policy that needs exact weights must refuse the run).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel


class ConstraintReport(BaseModel):
    description: str
    weights: Literal["exact", "estimated", "unavailable"]
    log_masses: list[float] = []
    """log Z per drawn position (a word chunk's stopping position included)."""
    log_potential: float = 0.0
    """Σ log φ(t | x) over the kept tokens: log Φ(text)/Φ(prefix) (0 for a hard constraint)."""
    complete: bool | None = None
    """The reply so far is a complete text of the constraint (its end-of-generation weight > 0)."""
    dead: bool = False
    """No token had positive guided mass at some position: the generation stopped, weight 0."""
    checks: int = 0
    """Candidate checks made by AWRS (estimated parts)."""

    @property
    def log_weight(self) -> float:
        """The site's log-weight correction: Σ log_masses (−inf when the generation died)."""
        if self.weights == "unavailable":
            return 0.0
        return math.fsum(self.log_masses) if all(m > -math.inf for m in self.log_masses) else -math.inf
