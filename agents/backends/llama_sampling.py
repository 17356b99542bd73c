"""The proposal q and the base model p over a batch of logits rows, and the one per-sequence draw.

Per row (one sequence of the batch), with logits ℓ ∈ R^V (see `agents.backends.llama_cpp` for the
whole semantics):

    base:      log p(v) = ℓ_v − logsumexp(ℓ)
    tempered:  log r(v) = ℓ_v/T − logsumexp(ℓ/T)                          (T > 0)
    nucleus:   N = the smallest set of highest-r tokens (ties by token id) with Σ_{v∈N} r(v) ≥ top_p
    proposal:  log q(v) = log r(v) − log Σ_{u∈N} r(u)  for v ∈ N,  −inf otherwise
    greedy:    T = 0 → q = point mass on argmax ℓ (first index on ties), log q = 0

`batch_proposal` computes these for all rows at once (float32 log-softmax over the (B, V) logits,
temperature and top-p only on the rows that ask for them; a row with T = 1 and top_p = 1 shares its
base array as its proposal). A request's `TokenDrawer` is the only place a token is chosen from a
row: `PROPOSAL` draws from q itself (`RowProposal.draw`: the inverse CDF `draw_token`, run on the
weights exp(ℓ − max ℓ) the log-softmax already computed when it can, `draw_weighted`) and gives a
word chunk's stop masses from the row; a guided drawer (`agents.backends.llama_guided`) reshapes q
by a constraint and reports the log q of its own draws. The CDF is accumulated in float64, so the
drawn token's probability and the recorded exp(log q) agree to float32 rounding (relative error ~1e-7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np


class TokenDraw(NamedTuple):
    token: int
    log_q: float
    """log q(token) under the proposal the token was drawn from."""
    log_p: float
    """log p(token) under the base model (temperature 1, no truncation)."""


class TokenDrawer(Protocol):
    """How one sequence draws its tokens: the proposal itself (`PROPOSAL`), or the proposal
    renormalised over a constraint (`agents.backends.llama_guided.GuidedDrawer`). The request's
    `ChunkBuilder` calls it once per position; nothing else chooses a token."""

    def draw(self, row: "RowProposal", rng: np.random.Generator, free: np.ndarray | None = None) -> TokenDraw | None:
        """The next token from `row`, or None when no token may come next (the generation dies).
        `free`: tokens that end the chunk without being kept (a word chunk's boundary, once the
        chunk has content)."""

    def stop_log_probs(self, row: "RowProposal", mask: np.ndarray, indicator: np.ndarray) -> tuple[float, float]:
        """(log q(set), log p(set)) of the stop set `mask` at the position just drawn, where the
        drawn token lay in the set (a word chunk's stopping event)."""

    def keep(self, token: int) -> None:
        """The token just drawn is kept (written to the reply)."""

    def report(self) -> Any:
        """What the completion reports about the drawing (`Completion.constraint`), or None."""


def rng_for(seed: int) -> np.random.Generator:
    """A numpy Generator for any Python int seed (negative seeds map into [0, 2**64))."""
    return np.random.default_rng(seed if seed >= 0 else seed % (1 << 64))


BLOCK = 256


def draw_token(logq: np.ndarray, logp: np.ndarray, rng: np.random.Generator) -> TokenDraw:
    """Inverse-CDF draw over token ids: u ~ U[0,1), token = min{v : Σ_{w≤v} q(w) > u·Σ_w q(w)}."""
    return draw_weighted(np.exp(logq, dtype=np.float64), logq, logp, rng)


def draw_weighted(weights: np.ndarray, logq: np.ndarray, logp: np.ndarray, rng: np.random.Generator) -> TokenDraw:
    """`draw_token` with the weights w ∝ q already at hand (the batch's exp(ℓ − max ℓ)).

    The CDF is accumulated in float64 by blocks of BLOCK ids (block sums, their running sum, then
    the running sum inside the chosen block): the same inverse CDF as one running sum over the
    vocabulary up to float64 rounding, at a fraction of its cost. A token with w = 0 is never drawn."""
    n_blocks = -(-weights.size // BLOCK)
    padded = np.zeros(n_blocks * BLOCK)
    padded[:weights.size] = weights
    running = np.cumsum(padded.reshape(n_blocks, BLOCK).sum(axis=1))
    target = rng.random() * running[-1]
    k = min(int(np.searchsorted(running, target, side="right")), n_blocks - 1)
    inner = (running[k - 1] if k else 0.0) + np.cumsum(padded[k * BLOCK:(k + 1) * BLOCK])
    token = k * BLOCK + min(int(np.searchsorted(inner, target, side="right")), BLOCK - 1)
    if token >= weights.size or padded[token] == 0.0:  # float64 rounding at a block's edge
        token = int(np.flatnonzero(padded[:min(token, weights.size - 1) + 1])[-1])
    return TokenDraw(token, float(logq[token]), float(logp[token]))


def log_softmax_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise log softmax in float32, x − max − log Σ exp(x − max), and the weights exp(x − max)."""
    shifted = x - x.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    shifted -= np.log(weights.sum(axis=1, keepdims=True))
    return shifted, weights


def log_mass(logp: np.ndarray, mask: np.ndarray) -> float:
    """log Σ_{v: mask[v]} exp(logp[v]), accumulated in float64 (−inf for an empty or zero-mass set)."""
    sel = logp[mask].astype(np.float64)
    sel = sel[np.isfinite(sel)]
    if sel.size == 0:
        return -math.inf
    top = float(sel.max())
    return top + math.log(float(np.exp(sel - top).sum()))


@dataclass
class RowProposal:
    """One row's base log p, its proposal log q (the same array when T = 1 and top_p = 1), the
    weights ∝ q and ∝ p when the batch computed them (exp(ℓ/T − max)), and the greedy token when
    T = 0 (then q is a point mass and no randomness is used)."""

    logp: np.ndarray
    logq: np.ndarray
    weights: np.ndarray | None = None
    base_weights: np.ndarray | None = None
    greedy: int | None = None
    scores: np.ndarray | None = None
    """The logits, for a greedy row (a guided greedy draw takes the highest-scoring allowed token)."""

    def draw(self, rng: np.random.Generator) -> TokenDraw:
        """A token from q: the greedy token, else the inverse CDF (on the weights when at hand)."""
        if self.greedy is not None:
            return TokenDraw(self.greedy, 0.0, float(self.logp[self.greedy]))
        if self.weights is not None:
            return draw_weighted(self.weights, self.logq, self.logp, rng)
        return draw_token(self.logq, self.logp, rng)

    def log_mass_q(self, mask: np.ndarray, indicator: np.ndarray) -> float:
        """log q(set) for the set `mask` (bool) whose float64 indicator is `indicator`."""
        return _log_mass(self.weights, self.logq, mask, indicator)

    def log_mass_p(self, mask: np.ndarray, indicator: np.ndarray) -> float:
        """log p(set), as `log_mass_q`."""
        return _log_mass(self.base_weights, self.logp, mask, indicator)


class ProposalDrawer:
    """The `TokenDrawer` of a request without a constraint: tokens from q itself, stop masses from
    the row (stateless: one instance, `PROPOSAL`, serves every request)."""

    def draw(self, row: RowProposal, rng: np.random.Generator, free: np.ndarray | None = None) -> TokenDraw:
        return row.draw(rng)

    def stop_log_probs(self, row: RowProposal, mask: np.ndarray, indicator: np.ndarray) -> tuple[float, float]:
        return row.log_mass_q(mask, indicator), row.log_mass_p(mask, indicator)

    def keep(self, token: int) -> None:
        pass

    def report(self) -> None:
        return None


PROPOSAL = ProposalDrawer()


def _log_mass(weights: np.ndarray | None, logs: np.ndarray, mask: np.ndarray, indicator: np.ndarray) -> float:
    """log(Σ_set w / Σ w) with float64 sums when the weights are at hand, else `log_mass`."""
    if weights is None:
        return log_mass(logs, mask)
    wide = weights.astype(np.float64)
    inside = float(np.einsum("i,i->", wide, indicator))  # numpy's own loop: a BLAS dot may wait on its threads
    return math.log(inside) - math.log(float(wide.sum())) if inside > 0 else -math.inf


def _nucleus(logr: np.ndarray, top_p: float) -> np.ndarray:
    """log q for each row of `logr` (float32, (b, V)): r renormalised on its top-p nucleus."""
    order = np.argsort(-logr, axis=1, kind="stable")
    sorted_r = np.take_along_axis(logr, order, axis=1)
    cum = np.cumsum(np.exp(sorted_r, dtype=np.float64), axis=1)
    out = np.full_like(logr, -np.inf)
    for i in range(logr.shape[0]):
        k = min(int(np.searchsorted(cum[i], top_p, side="left")) + 1, logr.shape[1])
        kept = order[i, :k]
        out[i, kept] = logr[i, kept] - np.float32(math.log(float(cum[i, k - 1])))
    return out


def batch_proposal(logits: np.ndarray, temperatures: list[float], top_ps: list[float]) -> list[RowProposal]:
    """The proposal of every row of `logits` ((B, V) float32), vectorised over the batch."""
    logp, weights = log_softmax_rows(logits)
    temps = np.asarray(temperatures, dtype=np.float64)
    tops = np.asarray(top_ps, dtype=np.float64)
    rows = [RowProposal(logp[i], logp[i], weights[i], weights[i]) for i in range(logits.shape[0])]
    for i in np.flatnonzero(temps == 0.0):
        rows[i].greedy, rows[i].scores = int(np.argmax(logits[i])), logits[i]
        rows[i].logq, rows[i].weights = _point_mass(logits.shape[1], rows[i].greedy), None
    sampled = temps > 0.0
    tempered = np.flatnonzero(sampled & (temps != 1.0))
    if tempered.size:
        logr, w = log_softmax_rows(_tempered(logits[tempered], temps[tempered]))
        for j, i in enumerate(tempered):
            rows[i].logq, rows[i].weights = logr[j], w[j]
    for p in np.unique(tops[sampled & (tops < 1.0)]):
        idx = np.flatnonzero(sampled & (tops == p))
        logq = _nucleus(np.stack([rows[i].logq for i in idx]), float(p))
        for j, i in enumerate(idx):
            rows[i].logq, rows[i].weights = logq[j], None
    return rows


def _tempered(logits: np.ndarray, temps: np.ndarray) -> np.ndarray:
    """ℓ/T per row in float32. Where that overflows float32 (T below ~1e-37: ±inf, then NaN in the
    log-softmax) the row is scaled after subtracting its max, in float64: its top tokens get 0 and
    the others a large negative number or -inf, the limit T → 0 (a point mass), never NaN."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        out = logits / temps[:, None].astype(np.float32)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        shifted = logits[bad].astype(np.float64) - logits[bad].max(axis=1, keepdims=True)
        with np.errstate(over="ignore"):
            out[bad] = (shifted / temps[bad, None]).astype(np.float32)
    return out


def _point_mass(size: int, at: int) -> np.ndarray:
    logq = np.full(size, -np.inf, dtype=np.float32)
    logq[at] = 0.0
    return logq
