"""Distributions over the real line.

`Normal(loc, scale)`: the Gaussian N(loc, scale²),

    log p(x) = −½ ((x − loc)/scale)² − log scale − ½ log 2π.

It has no finite support, so `Enumerate` refuses it; every sampling policy draws from it. A scalar
program draws by inverse CDF from its site's one uniform (reproducible per site and seed, like the
finite distributions); a vectorised run (`policies.VectorizedSMC`) draws N values at once, and then
`loc` and `scale` may be arrays with one entry per particle: `sample("x1", Normal(0.9 * x0, 1.0))`.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from swarm.distributions import Distribution
from swarm.effects import vector_run_size
from swarm.errors import InvalidDistributionError
from swarm.randomness import SiteRandom
from swarm.vector_draws import one_per_particle

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SMALLEST_UNIFORM = 2.0**-53


class Normal(Distribution):
    """The Gaussian N(loc, scale²) (see the module docstring)."""

    def __init__(self, loc: Any, scale: Any) -> None:
        if isinstance(loc, np.ndarray) and loc.ndim or isinstance(scale, np.ndarray) and scale.ndim:
            if vector_run_size() is None:
                raise InvalidDistributionError(
                    "Normal got an array loc or scale: one entry per particle is for vectorised runs "
                    "(policies.VectorizedSMC); a scalar program passes numbers")
            self.loc, self.scale = loc, scale  # validated when drawn (a replayed statement never draws)
            return
        try:
            loc, scale = float(loc), float(scale)
        except (TypeError, ValueError) as exc:
            raise InvalidDistributionError(f"Normal loc and scale must be numbers: {exc}") from exc
        if not math.isfinite(loc):
            raise InvalidDistributionError(f"Normal loc must be finite, got {loc!r}")
        if not (math.isfinite(scale) and scale > 0):
            raise InvalidDistributionError(f"Normal scale must be finite and positive, got {scale!r}")
        self.loc, self.scale = loc, scale

    def sample(self, rng: SiteRandom) -> float:
        u = max(rng.random(), _SMALLEST_UNIFORM)  # inv_cdf needs u in (0, 1)
        return NormalDist(self.loc, self.scale).inv_cdf(u)

    def log_prob(self, value: Any) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            return -math.inf
        if not math.isfinite(x):
            return -math.inf
        z = (x - self.loc) / self.scale
        return -0.5 * z * z - math.log(self.scale) - _HALF_LOG_2PI

    # -- vectorised runs (swarm.vector_draws) -----------------------------------------------------
    def batch_sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        loc, scale = self._parameters(n)
        values = loc + scale * rng.standard_normal(n)
        return values, self._log_density(values, loc, scale)

    def batch_log_prob(self, values: np.ndarray) -> np.ndarray:
        loc, scale = self._parameters(len(values))
        x = np.asarray(values, dtype=float)
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(x), self._log_density(x, loc, scale), -math.inf)

    def _parameters(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        loc = _per_particle(self.loc, n, "loc")
        scale = _per_particle(self.scale, n, "scale")
        if not np.isfinite(loc).all():
            raise InvalidDistributionError(f"Normal loc must be finite; particle {int(np.argmax(~np.isfinite(loc)))} "
                                           f"has {float(loc[~np.isfinite(loc)][0])!r}")
        bad = ~(np.isfinite(scale) & (scale > 0))
        if bad.any():
            raise InvalidDistributionError(f"Normal scale must be finite and positive; particle {int(np.argmax(bad))} "
                                           f"has {float(scale[bad][0])!r}")
        return loc, scale

    @staticmethod
    def _log_density(x: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
        z = (x - loc) / scale
        return -0.5 * z * z - np.log(scale) - _HALF_LOG_2PI

    def describe(self) -> str:
        return "Normal"

    def __repr__(self) -> str:
        if isinstance(self.loc, float) and isinstance(self.scale, float):
            return f"Normal(loc={self.loc!r}, scale={self.scale!r})"
        return "Normal(one loc and scale per particle)"


def _per_particle(value: Any, n: int, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidDistributionError(f"Normal {name} must be numbers: {exc}") from exc
    rows = one_per_particle(arr, n)
    if rows is None:
        raise InvalidDistributionError(f"Normal {name} has shape {arr.shape}; a vectorised run of {n} particles "
                                       f"needs one {name} (shape ()) or one per particle (shape ({n},))")
    return rows
