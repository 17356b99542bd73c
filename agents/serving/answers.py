"""The answers a run gives: distinct reply texts ranked or drawn by their posterior probability.

The weighted population defines the posterior over the program's return values; a reply is a value
rendered as text (`render`), and the probability of a reply is the mass of every particle that
renders to it:

    P(a) = Σ_i w̄_i · 1[render(v_i) = a],      w̄_i = exp(W_i − logsumexp W).

"mode" returns the n replies of largest P (ties: first in text order); "draw" draws n distinct
replies from P without replacement (a draw, then a draw from P restricted to the rest, renormalised).
With fewer than n distinct replies (P > 0) the response has fewer choices.

A run the budget stopped while some particle with weight > 0 was still running has no posterior
over *finished* programs: that is `BudgetExceeded`, never an answer built from the survivors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel

from agents.serving.errors import BudgetExceeded
from swarm.result import Result


@dataclass(frozen=True)
class Answer:
    content: str
    probability: float


def render(value: Any) -> str:
    """A return value as reply text: a str as it is, a pydantic model or JSON-able value as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, default=str, ensure_ascii=False)


def posterior(result: Result, weights: np.ndarray | None = None) -> dict[str, float]:
    """P(reply) for every reply with P > 0, most probable first (ties in text order).
    `weights`: the result's normalised weights, when already computed."""
    weights = result.normalized_weights if weights is None else weights
    if result.diagnostics.stopped_by is not None:
        _check_finished(result, weights)
    mass: dict[str, float] = {}
    for particle, w in zip(result.particles, weights.tolist()):
        if w > 0:
            key = render(particle.value)
            mass[key] = mass.get(key, 0.0) + w
    return dict(sorted(mass.items(), key=lambda kv: (-kv[1], kv[0])))


def choose(result: Result, n: int, how: Literal["mode", "draw"], rng: Callable[[], np.random.Generator],
           weights: np.ndarray | None = None) -> tuple[list[Answer], int]:
    """(the n answers, how many distinct replies have P > 0); `rng()` makes the generator draws use."""
    probs = posterior(result, weights)
    if how == "mode":
        return [Answer(c, p) for c, p in list(probs.items())[:n]], len(probs)
    generator = rng()
    contents, p = list(probs), np.array(list(probs.values()), dtype=float)
    picked: list[Answer] = []
    while len(picked) < n and p.sum() > 0:
        i = int(generator.choice(len(p), p=p / p.sum()))
        picked.append(Answer(contents[i], float(probs[contents[i]])))
        p[i] = 0.0
    return picked, len(probs)


def _check_finished(result: Result, weights: np.ndarray) -> None:
    running = sum(1 for particle, w in zip(result.particles, weights) if w > 0 and particle.status != "finished")
    if running:
        d = result.diagnostics
        raise BudgetExceeded(d.stopped_by or "budget",
                             f"{running} of {len(result.particles)} particles unfinished after {len(d.steps)} steps, "
                             f"{d.tokens} tokens, {d.llm_calls} LLM calls, {d.wall_time_s:.1f} s")
