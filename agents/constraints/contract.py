"""`assert_potential_contract`: the test every constraint and potential must pass (run it on yours).

For each given text x (valid ones and invalid ones) it checks:

1. values: Φ(y) = `prefix(y)` and Φ_end(y) = `complete(y)` lie in [0, 1] for every prefix y of x;
2. a dead prefix stays dead: Φ(y) = 0 ⇒ Φ(y·z) = 0 and Φ_end(y·z) = 0;
3. the token-level lift agrees with the definition: on a vocabulary (by default one built from the
   texts: their characters, words and " word" pieces, plus an end-of-generation token), at every
   position of x's greedy tokenization and for *every* token v, the guide's log φ(v | y) (the
   row of exact parts, the per-token value of estimated ones) equals log Φ(y·v) − log Φ(y)
   (log Φ_end(y) − log Φ(y) for end of generation);
4. autoregressive factorisation: Σ_i log φ(t_i | t_<i) + log φ(EOS | x) = log Φ_end(x) − log Φ(ε).

Like genlm-control's `assert_autoreg_fact`, it raises AssertionError with the text, position and
token at fault. Tolerances: absolute and relative 1e-6 on log weights (the two sides are computed
by different float paths; −inf must match −inf exactly).
"""

from __future__ import annotations

import math
from typing import Sequence

from agents.constraints.base import Constraint, check_unit_interval, decode, safe_log
from agents.constraints.vocabulary import Vocabulary


def default_vocabulary(texts: Sequence[str]) -> Vocabulary:
    """Characters, words and space-led words of `texts` as tokens, then one end-of-generation id."""
    pieces: set[bytes] = set()
    for t in texts:
        pieces.update(ch.encode() for ch in t)
        for w in t.split():
            pieces.update({w.encode(), (" " + w).encode()})
    ordered = sorted(pieces)
    return Vocabulary(ordered + [b""], eos_ids=[len(ordered)])


def greedy_tokens(text: str, vocab: Vocabulary) -> list[int]:
    """Longest-match tokenization of `text` over `vocab` (AssertionError if some byte has no token)."""
    index = {p: i for i, p in enumerate(vocab.pieces) if p}
    longest = max(len(p) for p in index)
    data, out, i = text.encode(), [], 0
    while i < len(data):
        for n in range(min(longest, len(data) - i), 0, -1):
            if data[i:i + n] in index:
                out.append(index[data[i:i + n]])
                i += n
                break
        else:
            raise AssertionError(f"contract: no token of the vocabulary covers byte {data[i:i + 1]!r} of {text!r}")
    return out


def _close(a: float, b: float, tol: float) -> bool:
    if a == -math.inf or b == -math.inf:
        return a == b
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def _check_values(c: Constraint, text: str) -> None:
    name, dead_at = c.describe(), None
    for i in range(len(text) + 1):
        y = text[:i]
        phi = check_unit_interval(c.prefix(y), f"{name}.prefix({y!r})")
        end = check_unit_interval(c.complete(y), f"{name}.complete({y!r})")
        if dead_at is not None and (phi > 0.0 or end > 0.0):
            raise AssertionError(f"contract: {name}: prefix {text[:dead_at]!r} has weight 0 but its extension "
                                 f"{y!r} has prefix {phi} / complete {end} (a dead prefix must stay dead)")
        if phi == 0.0 and dead_at is None:
            dead_at = i


def _expected(c: Constraint, y: bytes, v: int, vocab: Vocabulary) -> float:
    here = safe_log(c.prefix(decode(y)))
    if here == -math.inf:
        return -math.inf
    if vocab.eos_mask[v]:
        return safe_log(c.complete(decode(y, final=True))) - here
    return safe_log(c.prefix(decode(y + vocab.pieces[v]))) - here


def _check_lift(c: Constraint, text: str, vocab: Vocabulary, tol: float) -> None:
    name = c.describe()
    tokens = greedy_tokens(text, vocab)
    guide = c.guide(vocab)
    y, total = b"", 0.0
    for pos, tok in enumerate([*tokens, vocab.eos_ids[0]]):
        row = guide.log_phi_row() if guide.exact_states else None
        for v in range(len(vocab)):
            want = _expected(c, y, v, vocab)
            have = (float(row[v]) if row is not None else 0.0) + sum(s.log_phi(v) for s in guide.sampled_states)
            if not _close(want, have, tol):
                raise AssertionError(f"contract: {name}: after {y.decode('utf-8', 'replace')!r} (token {pos} of {text!r}), "
                                     f"token {vocab.pieces[v]!r}: the guide gives log φ = {have}, the definition "
                                     f"log Φ(x·v) − log Φ(x) = {want}")
        phi = guide.log_phi(tok)
        total += phi
        if phi == -math.inf:
            break
        if pos < len(tokens):
            guide.advance(tok)
            y += vocab.pieces[tok]
    whole = safe_log(c.complete(text)) - safe_log(c.prefix(""))
    if not _close(whole, total, tol) and not (whole == -math.inf and total == -math.inf):
        raise AssertionError(f"contract: {name}: Σ log φ over {text!r} and its end = {total}, but "
                             f"log Φ_end(text) − log Φ(ε) = {whole} (the token weights must telescope)")


def assert_potential_contract(constraint: Constraint, texts: Sequence[str], vocab: Vocabulary | None = None,
                              tol: float = 1e-6) -> None:
    """Check `constraint` against its contract on `texts` (see the module docstring)."""
    if not texts:
        raise ValueError("assert_potential_contract: give at least one text (valid and invalid ones)")
    vocab = vocab or default_vocabulary(texts)
    for text in texts:
        _check_values(constraint, text)
        _check_lift(constraint, text, vocab, tol)
