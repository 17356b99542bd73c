"""The guided `TokenDrawer` of the batched llama.cpp backend: one request's tokens drawn from the
proposal renormalised over its constraint (`agents.constraints`, docs/constraints.md).

Per position, with q the row's proposal (after temperature and top-p) and φ(v | x) the
constraint's token weights after the reply x so far, the request's `Guide` draws from

    q_C(v) = q(v)·φ(v | x) / Z(x),     Z(x) = Σ_v q(v)·φ(v | x)

and records log Z(x) (the site's weight correction; an unbiased estimate of it for parts checked
only on candidates, by AWRS). What the batched sampler adds around the guide:

- the recorded log q of a drawn token is log q_C(token), the proposal it was actually drawn from;
  log p(token) stays the base model's (temperature 1, no truncation);
- temperature 0: the highest-logit allowed token (the row's logits, `RowProposal.scores`);
- a word chunk with content draws its boundary tokens B ∪ E *free* (φ = 1: a stop writes no text,
  the next chunk draws that position under the constraint), and its stopping event's masses
  (log q_C(B ∪ E), log p(B ∪ E)·φ) come from the guide, not from the row;
- a kept token advances the guide; no allowed token with mass: the drawer returns None and the
  chunk ends with finish reason "constraint" (its report says dead: weight 0);
- the completion's `constraint` is the guide's report (per-position log Z, exact or estimated).
"""

from __future__ import annotations

import numpy as np

from agents.backends.llama_sampling import RowProposal, TokenDraw
from agents.constraints import ConstraintReport, Guide, GuidedDraw


class GuidedDrawer:
    """The `TokenDrawer` of one constrained generation (see the module docstring)."""

    def __init__(self, guide: Guide) -> None:
        self.guide = guide
        self._last: GuidedDraw | None = None

    def draw(self, row: RowProposal, rng: np.random.Generator, free: np.ndarray | None = None) -> TokenDraw | None:
        greedy = row.scores if row.greedy is not None else None
        d = self._last = self.guide.draw(row.logq, rng, greedy_scores=greedy, free=free)
        if d.dead:
            return None
        return TokenDraw(d.token, d.log_q, float(row.logp[d.token]))

    def stop_log_probs(self, row: RowProposal, mask: np.ndarray, indicator: np.ndarray) -> tuple[float, float]:
        if self._last is None:
            raise RuntimeError("GuidedDrawer.stop_log_probs before a draw")
        return self.guide.stop_log_probs(self._last, row.logq, row.logp, mask)

    def keep(self, token: int) -> None:
        self.guide.advance(token)

    def report(self) -> ConstraintReport:
        return self.guide.report()
