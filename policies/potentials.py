"""Potentials: what a program multiplies into Φ, or what estimates Φ's future (docs/theory.md §4, §8).

    from policies.potentials import Judge, Calibration, RolloutCritic

Trace-level potentials live here, beside the algorithms that use them but apart from them:

- judges as calibrated measurement channels (`Judge`, `Calibration`) and the estimators for
  reporting an accuracy measured by a judge (`point_estimate`, `confidence_interval`,
  `allocate_calibration`, `post_filter_accuracy`), docs/theory.md §8;
- critics, estimates of a prefix's soft value V(s) used as twists by `TwistedSMC` and as leaf values
  by `TreeSearch` (`RolloutCritic`, `EnumerationCritic`, `JudgeCritic`), docs/theory.md §4.4.

Token-level constraints and potentials act *inside* a generation's proposal and need the backend's
tokenizer, so they belong to the agents layer (`agents.constraints`, docs/theory.md §6); this
namespace does not import `agents` (the policies layer depends on the core alone).
"""

from policies.critics import EnumerationCritic, JudgeCritic, RolloutCritic
from policies.judges import Calibration, Judge, allocate_calibration, confidence_interval, point_estimate
from policies.judges import post_filter_accuracy

__all__ = [
    "Judge", "Calibration", "point_estimate", "confidence_interval", "allocate_calibration",
    "post_filter_accuracy", "RolloutCritic", "EnumerationCritic", "JudgeCritic",
]
