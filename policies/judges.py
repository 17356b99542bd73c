"""Judges as calibrated measurement channels, and the Lee et al. 2025 estimators (docs/theory.md §8).

Write C for the true correctness of a trace and Ĉ for a judge's verdict. A judge is summarised by

    q₁ = P(Ĉ=1 | C=1)  (sensitivity, TPR),   q₀ = P(Ĉ=0 | C=0)  (specificity, 1 − FPR),
    J = q₀ + q₁ − 1    (Youden index: J > 0 iff the verdict carries information about C).

The functions `point_estimate`, `confidence_interval`, `allocate_calibration` follow Lee et al.,
"How to Correctly Report LLM-as-a-Judge Evaluations" (arXiv 2511.21140), as given in docs/theory.md §8.4.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from statistics import NormalDist
from typing import Any, Awaitable, Callable, Iterable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import swarm

__all__ = ["Calibration", "Judge", "point_estimate", "confidence_interval", "allocate_calibration",
           "post_filter_accuracy"]


# -- Lee et al. 2025 ---------------------------------------------------------------------------------
def _prob(name: str, value: float) -> float:
    if not (isinstance(value, (int, float, np.floating)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _informative(q0: float, q1: float) -> None:
    if q0 + q1 <= 1.0:
        raise ValueError(f"the judge must be informative, q0 + q1 > 1 (Youden J > 0); got q0={q0!r}, q1={q1!r}, "
                         f"J={q0 + q1 - 1:.3g}")


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def point_estimate(p: float, q0: float, q1: float) -> float:
    """Bias-corrected accuracy θ̂ = clip((p + q₀ − 1)/(q₀ + q₁ − 1), 0, 1), p the judged-correct rate.

    Unbiased before clipping because E[p] = (q₀ + q₁ − 1)θ + (1 − q₀). Needs q₀ + q₁ > 1.
    """
    p, q0, q1 = _prob("p", p), _prob("q0", q0), _prob("q1", q1)
    _informative(q0, q1)
    return _clip((p + q0 - 1.0) / (q0 + q1 - 1.0))


def confidence_interval(p: float, q0: float, q1: float, n: int, m0: int, m1: int,
                        alpha: float = 0.05) -> tuple[float, float]:
    """Lee et al.'s (1 − α) interval for θ from a test set (p over n) and calibration sets (q₀ over m₀
    truly incorrect items, q₁ over m₁ truly correct ones):

        z = Φ⁻¹(1 − α/2);  p̃ = (np + z²/2)/(n + z²),  q̃₀ = (m₀q₀ + 1)/(m₀ + 2),  q̃₁ = (m₁q₁ + 1)/(m₁ + 2);
        ñ = n + z²,  m̃₀ = m₀ + 2,  m̃₁ = m₁ + 2;   θ̃ = (p̃ + q̃₀ − 1)/(q̃₀ + q̃₁ − 1);
        dθ = 2z²·[−(1 − θ̃) q̃₀(1 − q̃₀)/m̃₀ + θ̃ q̃₁(1 − q̃₁)/m̃₁];
        se = √[p̃(1 − p̃)/ñ + (1 − θ̃)² q̃₀(1 − q̃₀)/m̃₀ + θ̃² q̃₁(1 − q̃₁)/m̃₁] / (q̃₀ + q̃₁ − 1);
        CI = [clip(θ̃ + dθ − z·se), clip(θ̃ + dθ + z·se)].
    """
    p, q0, q1 = _prob("p", p), _prob("q0", q0), _prob("q1", q1)
    n, m0, m1 = _count("n", n), _count("m0", m0), _count("m1", m1)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    _informative(q0, q1)
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    z2 = z * z
    p, q0, q1 = (n * p + z2 / 2.0) / (n + z2), (m0 * q0 + 1.0) / (m0 + 2.0), (m1 * q1 + 1.0) / (m1 + 2.0)
    _informative(q0, q1)
    n, m0, m1 = n + z2, m0 + 2.0, m1 + 2.0
    th = (p + q0 - 1.0) / (q0 + q1 - 1.0)
    dth = 2.0 * z2 * (-(1.0 - th) * q0 * (1.0 - q0) / m0 + th * q1 * (1.0 - q1) / m1)
    se = math.sqrt(p * (1.0 - p) / n + (1.0 - th) ** 2 * q0 * (1.0 - q0) / m0
                   + th ** 2 * q1 * (1.0 - q1) / m1) / (q0 + q1 - 1.0)
    return _clip(th + dth - z * se), _clip(th + dth + z * se)


def allocate_calibration(m: int, p: float, q0_pilot: float = 0.9, q1_pilot: float = 0.9, m_pilot: int = 0,
                         eps: float = 1e-6) -> tuple[int, int]:
    """Split a calibration budget m into (m₀ truly-incorrect, m₁ truly-correct) items (Lee et al.):

        if p < ε: m₁ = m − m_pilot; otherwise
        κ = (1 − q₀)/(1 − q₁) (q₁ capped at 1 − ε) when m_pilot = 0,
        κ = (m_pilot(1 − q₀) + 1)/(m_pilot(1 − q₁) + 1) otherwise;
        m₁ = max(m_pilot, round(min(m − m_pilot, m / (1 + (1/p − 1)√κ)))),   m₀ = m − m₁.
    """
    m = _count("m", m)
    p, q0, q1 = _prob("p", p), _prob("q0_pilot", q0_pilot), _prob("q1_pilot", q1_pilot)
    if isinstance(m_pilot, bool) or not isinstance(m_pilot, (int, np.integer)) or m_pilot < 0:
        raise ValueError(f"m_pilot must be a non-negative integer, got {m_pilot!r}")
    if p < eps:
        m1 = m - m_pilot
    else:
        if m_pilot == 0:
            q1 = min(q1, 1.0 - eps)
            kappa = (1.0 - q0) / (1.0 - q1)
        else:
            kappa = (m_pilot * (1.0 - q0) + 1.0) / (m_pilot * (1.0 - q1) + 1.0)
        m1 = m / (1.0 + (1.0 / p - 1.0) * math.sqrt(kappa))
        m1 = max(m_pilot, round(min(m - m_pilot, m1)))
    return m - m1, m1


def post_filter_accuracy(alpha_tpr: float, beta_fpr: float, p: float) -> float:
    """ν = αp / (αp + β(1 − p)): the accuracy of the traces a judge with TPR α and FPR β accepts, when a
    fraction p of the proposals is correct. ν > p iff α > β (J > 0)."""
    a, b, p = _prob("alpha_tpr", alpha_tpr), _prob("beta_fpr", beta_fpr), _prob("p", p)
    accepted = a * p + b * (1.0 - p)
    if accepted == 0.0:
        raise ValueError("post_filter_accuracy: the judge accepts nothing (αp + β(1−p) = 0)")
    return a * p / accepted


# -- the judge ----------------------------------------------------------------------------------------
class Calibration(BaseModel):
    """What a judge's calibration measured: q₀ over m₀ truly incorrect items, q₁ over m₁ truly correct.

    m = 0 means the rate was given rather than measured (taken as exact, no smoothing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    q0: float = Field(ge=0.0, le=1.0)
    q1: float = Field(ge=0.0, le=1.0)
    m0: int = Field(0, ge=0)
    m1: int = Field(0, ge=0)

    @property
    def youden(self) -> float:
        """J = q₀ + q₁ − 1."""
        return self.q0 + self.q1 - 1.0

    @property
    def smoothed(self) -> tuple[float, float]:
        """(q̃₀, q̃₁) with Laplace smoothing q̃ = (mq + 1)/(m + 2) where m > 0, so a finite calibration
        set never claims a perfect rate."""
        def smooth(q: float, m: int) -> float:
            return (m * q + 1.0) / (m + 2.0) if m > 0 else q
        return smooth(self.q0, self.m0), smooth(self.q1, self.m1)


class Judge(BaseModel):
    """A verdict function `fn(x) -> bool` (plain or async: an LLM judge) with a calibration record.

    In a program, `judge.factor(name, x)` weights a trace by its verdict ŷ = fn(x) with

        log Φ(ŷ) = log P(C=1 | Ĉ=ŷ) = log θℓ₁(ŷ) − log(θℓ₁(ŷ) + (1−θ)ℓ₀(ŷ))   when `prior` θ is set,
        log Φ(ŷ) = log ℓ₁(ŷ) − log ℓ₀(ŷ)                                        otherwise,

    with ℓ₁(ŷ) = P(Ĉ=ŷ | C=1) (q̃₁ or 1−q̃₁) and ℓ₀(ŷ) = P(Ĉ=ŷ | C=0) (1−q̃₀ or q̃₀), the smoothed rates.
    Target: π(τ | C=1) ∝ π(τ)P(C=1 | τ), the proposal conditioned on correctness, under the
    assumption that C depends on τ only through the verdict (C ⊥ τ | ŷ) and that the calibration
    transfers to π. Then P(C=1 | τ) = P(C=1 | ŷ(τ)), the posterior given the noisy measurement
    (Bayes with θ = P(C=1) under π, estimable by `point_estimate`), and the target gives each verdict
    class exactly the mass P(Ĉ=ŷ | C=1) it has under π(·|C=1). Without θ, the likelihood ratio
    ℓ₁/ℓ₀ is its θ → 0 limit up to a constant. Unlike Φ = ℓ₁(ŷ) alone, both are flat (Φ ≡ const) for
    an uninformative judge (J = 0). `judge.likelihoods(ŷ)` gives (log ℓ₁, log ℓ₀) for other uses.

    `judge.guarantee(name, x)` uses the verdict as a hard filter; it refuses (ValueError) a judge with
    J ≤ 0, for which filtering cannot raise accuracy: ν = q₁p/(q₁p + (1−q₀)(1−p)) ≤ p.

    With an async `fn`, `verdict`, `factor` and `guarantee` return awaitables (`await judge.factor(...)`).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=True)

    name: str = "judge"
    fn: Callable[[Any], Any]
    calibration: Calibration | None = None
    prior: float | None = Field(None, gt=0.0, lt=1.0)
    """θ = P(C=1) under the proposal; when set, factors are the posterior P(C=1 | ŷ)."""

    # -- verdicts ----------------------------------------------------------------------------------
    def _bool(self, raw: Any) -> bool:
        if isinstance(raw, (bool, np.bool_)) or (isinstance(raw, (int, np.integer)) and raw in (0, 1)):
            return bool(raw)
        raise TypeError(f"judge {self.name!r}: fn must return a bool, got {type(raw).__name__} {raw!r}")

    def verdict(self, x: Any) -> bool | Awaitable[bool]:
        """Ĉ = fn(x) as a bool (an awaitable of one when fn is async)."""
        raw = self.fn(x)
        if inspect.isawaitable(raw):
            return self._await_bool(raw)
        return self._bool(raw)

    async def _await_bool(self, raw: Awaitable[Any]) -> bool:
        return self._bool(await raw)

    # -- calibration -------------------------------------------------------------------------------
    def calibrate(self, examples: Iterable[tuple[Any, bool]]) -> Calibration:
        """Measure q₀, q₁ on labelled examples [(x, true label)], store and return the Calibration.
        An async fn is run to completion here; inside an event loop use `await judge.calibrate_async(...)`."""
        examples = list(examples)
        if inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(getattr(self.fn, "__call__", None)):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(self.calibrate_async(examples))
            raise RuntimeError(f"judge {self.name!r} is async: use `await judge.calibrate_async(...)` here")
        verdicts: list[bool] = []
        for x, _ in examples:
            v = self.verdict(x)
            if inspect.isawaitable(v):  # a plain fn that returned an awaitable
                return asyncio.run(self._calibrate_from(examples, verdicts, v))
            verdicts.append(v)
        return self._store(examples, verdicts)

    async def calibrate_async(self, examples: Iterable[tuple[Any, bool]]) -> Calibration:
        return await self._calibrate_from(list(examples), [], None)

    async def _calibrate_from(self, examples: list[tuple[Any, bool]], verdicts: list[bool],
                              pending: Awaitable[bool] | None) -> Calibration:
        if pending is not None:
            verdicts.append(await pending)
        for x, _ in examples[len(verdicts):]:
            v = self.verdict(x)
            verdicts.append(await v if inspect.isawaitable(v) else v)
        return self._store(examples, verdicts)

    def _store(self, examples: list[tuple[Any, bool]], verdicts: list[bool]) -> Calibration:
        labels = [self._bool(label) for _, label in examples]
        m1 = sum(labels)
        m0 = len(labels) - m1
        if m0 == 0 or m1 == 0:
            raise ValueError(f"judge {self.name!r}: calibration needs truly correct and truly incorrect examples, "
                             f"got m0={m0}, m1={m1}")
        q1 = sum(v for v, c in zip(verdicts, labels) if c) / m1
        q0 = sum(not v for v, c in zip(verdicts, labels) if not c) / m0
        self.calibration = Calibration(q0=q0, q1=q1, m0=m0, m1=m1)
        return self.calibration

    def require_calibration(self) -> Calibration:
        """The calibration record; a ValueError naming the judge when there is none."""
        if self.calibration is None:
            raise ValueError(f"judge {self.name!r} has no calibration: call judge.calibrate(examples) "
                             "or set judge.calibration = Calibration(q0=..., q1=...)")
        return self.calibration

    @property
    def youden(self) -> float:
        return self.require_calibration().youden

    # -- potentials --------------------------------------------------------------------------------
    def likelihoods(self, verdict: bool) -> tuple[float, float]:
        """(log P(Ĉ=ŷ | C=1), log P(Ĉ=ŷ | C=0)) with the smoothed rates."""
        q0, q1 = self.require_calibration().smoothed
        l1, l0 = (q1, 1.0 - q0) if verdict else (1.0 - q1, q0)
        return (math.log(l1) if l1 > 0 else -math.inf), (math.log(l0) if l0 > 0 else -math.inf)

    def potential(self, verdict: bool, prior: float | None = None) -> float:
        """log Φ for a verdict: the log posterior log P(C=1 | ŷ) when a prior θ is known (argument or
        field), else the log likelihood ratio log ℓ₁(ŷ) − log ℓ₀(ŷ) (see the class doc)."""
        theta = self.prior if prior is None else _prob("prior", prior)
        log_l1, log_l0 = self.likelihoods(bool(verdict))
        if theta is None:
            if log_l0 == -math.inf:
                if log_l1 == -math.inf:
                    raise ValueError(f"judge {self.name!r}: verdict {verdict!r} is impossible under its calibration")
                raise ValueError(f"judge {self.name!r}: verdict {verdict!r} has likelihood ratio +inf "
                                 "(P(ŷ|C=0) = 0); give a prior θ or a measured calibration (m0 > 0)")
            return log_l1 - log_l0
        a = math.log(theta) + log_l1
        b = math.log1p(-theta) + log_l0
        if a == -math.inf:
            return -math.inf
        return a - np.logaddexp(a, b).item()

    def factor(self, name: str, x: Any) -> bool | Awaitable[bool]:
        """Judge x and `swarm.factor(name, potential(verdict))`; returns the verdict."""
        self.require_calibration()
        v = self.verdict(x)
        if inspect.isawaitable(v):
            return self._factor_async(name, v)
        swarm.factor(name, self.potential(v))
        return v

    async def _factor_async(self, name: str, pending: Awaitable[bool]) -> bool:
        v = await pending
        swarm.factor(name, self.potential(v))
        return v

    def guarantee(self, name: str, x: Any) -> bool | Awaitable[bool]:
        """Judge x and `swarm.guarantee(name, verdict)`: a hard filter, refused when J ≤ 0."""
        self.check_filter()
        v = self.verdict(x)
        if inspect.isawaitable(v):
            return self._guarantee_async(name, v)
        swarm.guarantee(name, v)
        return v

    async def _guarantee_async(self, name: str, pending: Awaitable[bool]) -> bool:
        v = await pending
        swarm.guarantee(name, v)
        return v

    def check_filter(self) -> None:
        """Raise ValueError unless J = q₀ + q₁ − 1 > 0 (filtering then raises accuracy, docs/theory.md §8.2)."""
        cal = self.require_calibration()
        if cal.youden <= 0.0:
            raise ValueError(f"judge {self.name!r} cannot be used as a guarantee: its Youden index J = q0 + q1 - 1 = "
                             f"{cal.youden:.3f} ≤ 0 (q0={cal.q0:.3f}, q1={cal.q1:.3f}), so filtering by it cannot "
                             "raise accuracy; use judge.factor() or a better judge")

    # -- reporting ---------------------------------------------------------------------------------
    def post_filter_accuracy(self, p: float) -> float:
        """ν for a proposal accuracy p: `post_filter_accuracy(q₁, 1 − q₀, p)`."""
        cal = self.require_calibration()
        return post_filter_accuracy(cal.q1, 1.0 - cal.q0, p)

    def corrected_accuracy(self, pass_rate: float, n: int, alpha: float = 0.05) -> tuple[float, tuple[float, float]]:
        """(θ̂, CI): the accuracy of n traces of which a fraction `pass_rate` were judged correct."""
        cal = self.require_calibration()
        theta = point_estimate(pass_rate, cal.q0, cal.q1)
        return theta, confidence_interval(pass_rate, cal.q0, cal.q1, n, _count("m0", cal.m0),
                                          _count("m1", cal.m1), alpha)
