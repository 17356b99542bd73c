"""`Guide`: a constraint applied to one generation; the only object a backend talks to.

Per position the backend calls `draw(logq, rng)` with the proposal's row log q(v) (after
temperature and top-p) and then `advance(token)` with the token it keeps. The guide combines its
parts (see `agents.constraints.base`): exact parts add their rows log φ(v | x) to log q; the guided
proposal is that sum renormalised, and log Z = logsumexp(log q + log φ) is the weight increment.
Parts that can only be checked on candidates (estimated) are applied by recursive AWRS on top of
the exact ones: Boolean ones as the acceptance test, soft ones by multiplying the weight by their
φ(token) (importance weighting composes with proper weighting).

`report()` gathers what the sample event records: the per-position log masses (the weight
correction), Σ log φ of the kept tokens, whether every part was exact, whether the text so far is a
complete text of the constraint, and whether the generation died (no token had guided mass).
"""

from __future__ import annotations

import math

import numpy as np

from agents.constraints.awrs import awrs
from agents.constraints.state import GuidedDraw, TokenState
from agents.constraints.report import ConstraintReport
from agents.constraints.vocabulary import Vocabulary


def logsumexp(row: np.ndarray) -> float:
    """log Σ exp(row) over the finite entries (−inf when there are none)."""
    top = float(row.max()) if row.size else -math.inf
    if top == -math.inf:
        return -math.inf
    return top + math.log(float(np.exp(row - top).sum()))


def inverse_cdf(row: np.ndarray, log_mass: float, u: float) -> int:
    """The token whose cumulative guided mass first exceeds u·total (zero-mass tokens never)."""
    cdf = np.cumsum(np.exp(row - log_mass))
    idx = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return min(idx, cdf.size - 1)


class Guide:
    """The constraint's guide for one generation (see the module docstring)."""

    def __init__(self, states: list[TokenState], vocab: Vocabulary, description: str) -> None:
        self.states = states
        self.vocab = vocab
        self.description = description
        self.exact_states = [s for s in states if s.exact]
        self.sampled_states = [s for s in states if not s.exact]
        self.exact = not self.sampled_states
        self.awrs_runs = max([getattr(s, "awrs_runs", 1) for s in self.sampled_states], default=1)
        self.log_masses: list[float] = []
        self.log_potential = 0.0
        self.dead = False
        self.checks = 0
        """Candidate checks made by AWRS (estimated parts only)."""
        self._last: GuidedDraw | None = None
        self._last_row: np.ndarray | None = None
        self._last_phi: np.ndarray | None = None
        self._free: np.ndarray | None = None

    # ------------------------------------------------------------------ the token-level weights
    def log_phi_row(self) -> np.ndarray:
        """Σ over the exact parts of log φ(v | x), for every token id."""
        row = np.zeros(len(self.vocab), dtype=np.float64)
        for s in self.exact_states:
            row += s.log_phi_row()
        return row

    def log_phi(self, token: int) -> float:
        """log φ(token | x) over every part (exact and estimated)."""
        total = 0.0
        for s in self.states:
            total += s.log_phi(token)
            if total == -math.inf:
                break
        return total

    def _accept(self, token: int) -> bool:
        if self._free is not None and self._free[token]:
            return True
        self.checks += 1
        return all(s.log_phi(token) > -math.inf for s in self.sampled_states if s.boolean)

    # ------------------------------------------------------------------ drawing
    def draw(self, logq: np.ndarray, rng: np.random.Generator, greedy_scores: np.ndarray | None = None,
             free: np.ndarray | None = None) -> GuidedDraw:
        """Draw the next token from q renormalised over the constraint (see the module docstring).

        `greedy_scores` (the logits, at temperature 0): the token is the highest-scoring allowed
        one, log q_C = 0, and log_mass = log q(token) + log φ(token), which is −inf unless it is the
        unconstrained greedy token (the greedy proposal puts no mass anywhere else).
        `free`: tokens that end the chunk without being kept (a word chunk's boundary tokens): they
        are drawn with φ = 1, since a stop writes no text (the next chunk draws that position under
        the constraint), so the chunk's stopping event keeps its unconstrained probability."""
        self._free = free
        phi = self.log_phi_row()
        if free is not None:
            phi = phi.copy()
            phi[free] = 0.0
        if greedy_scores is not None:
            return self._record(self._greedy(logq, phi, greedy_scores))
        row = logq + phi
        log_mass = logsumexp(row)
        if log_mass == -math.inf:
            return self._record(GuidedDraw(-1, -math.inf, -math.inf, -math.inf, self.exact))
        if self.exact:
            tok = inverse_cdf(row, log_mass, float(rng.random()))
            self._last_row, self._last_phi = row, phi
            return self._record(GuidedDraw(tok, float(row[tok]) - log_mass, log_mass, float(phi[tok]), True))
        tok, log_w = self._awrs(row - log_mass, rng)
        if log_w == -math.inf:
            return self._record(GuidedDraw(-1, -math.inf, -math.inf, -math.inf, False))
        log_phi = float(phi[tok]) + self._soft_log_phi(tok)
        log_mass += log_w
        return self._record(GuidedDraw(tok, float(logq[tok]) + log_phi - log_mass, log_mass, log_phi, False))

    def _soft_log_phi(self, token: int) -> float:
        if self._free is not None and self._free[token]:
            return 0.0
        return sum(s.log_phi(token) for s in self.sampled_states if not s.boolean)

    def _awrs(self, logps: np.ndarray, rng: np.random.Generator) -> tuple[int, float]:
        """`runs` independent AWRS draws (condition checks cached), each weighted by the soft
        estimated parts' φ; one is kept with probability ∝ its weight and the weight is their mean:
        (token, log ŵ) stays properly weighted (E[ŵ·1[t = v]] = q(v)φ(v)) with runs× less variance."""
        seen: dict[int, bool] = {}

        def accept(tok: int) -> bool:
            if tok not in seen:
                seen[tok] = self._accept(tok)
            return seen[tok]

        draws = []
        for _ in range(self.awrs_runs):
            tok, log_w, _ = awrs(logps, accept, rng)
            draws.append((tok, log_w + self._soft_log_phi(tok) if log_w > -math.inf else -math.inf))
        log_ws = np.array([w for _, w in draws])
        total = logsumexp(log_ws)
        if total == -math.inf:
            return draws[0][0], -math.inf
        pick = draws[inverse_cdf(log_ws, total, float(rng.random()))][0] if len(draws) > 1 else draws[0][0]
        return pick, total - math.log(len(draws))

    def _greedy(self, logq: np.ndarray, phi: np.ndarray, scores: np.ndarray) -> GuidedDraw:
        for tok in np.argsort(-np.where(phi > -math.inf, scores, -math.inf), kind="stable"):
            tok = int(tok)
            if phi[tok] == -math.inf:
                break
            if self.exact or self._accept(tok):
                log_phi = 0.0 if self._free is not None and self._free[tok] else self.log_phi(tok)
                if log_phi == -math.inf:
                    continue
                return GuidedDraw(tok, 0.0, float(logq[tok]) + log_phi, log_phi, self.exact)
        return GuidedDraw(-1, -math.inf, -math.inf, -math.inf, self.exact)

    def _record(self, d: GuidedDraw) -> GuidedDraw:
        self._last = d
        self.log_masses.append(d.log_mass)
        self.dead = self.dead or d.dead
        return d

    # ------------------------------------------------------------------ state
    def advance(self, token: int) -> None:
        """Keep `token` (the last drawn one, or any allowed token): the guide moves past it."""
        last = self._last
        log_phi = last.log_phi if last is not None and last.token == token else self.log_phi(token)
        self.log_potential += log_phi
        self._last, self._last_row, self._last_phi = None, None, None
        if not self.vocab.eos_mask[token]:
            for s in self.states:
                s.advance(token)

    def stop_log_probs(self, d: GuidedDraw, logq: np.ndarray, base: np.ndarray,
                       stop_mask: np.ndarray) -> tuple[float, float]:
        """For a chunk that ends because the drawn token `d` lies in `stop_mask` (word chunking; the
        token is not kept, drawn as `free`): (log q_C(stop set), the base model's log p(stop set)).

        Exact guides give the stop event's probabilities. Estimated guides do not know Z exactly,
        so the event is extended with the identity of the drawn token: (d.log_q, log p(token)); the
        weight (its log_mass) is properly weighted either way."""
        if d.exact and self._last_row is not None and self._last_phi is not None:
            return (logsumexp(self._last_row[stop_mask]) - d.log_mass,
                    logsumexp((base + self._last_phi)[stop_mask]))
        return d.log_q, float(base[d.token]) + d.log_phi

    def accepts_end(self) -> bool:
        """Is the text so far a complete text of the constraint (φ(EOS | x) > 0)?"""
        return not self.dead and self.log_phi(self.vocab.eos_ids[0]) > -math.inf

    def report(self) -> ConstraintReport:
        return ConstraintReport(description=self.description, weights="exact" if self.exact else "estimated",
                                log_masses=list(self.log_masses), log_potential=self.log_potential,
                                complete=self.accepts_end(), dead=self.dead, checks=self.checks)
