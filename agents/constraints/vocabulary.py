"""`Vocabulary`: what a constraint is bound to, once per model: the byte string of every token id and
which ids end generation.

A backend builds it from its tokenizer (llama.cpp: `llama_token_to_piece` per id, see
`LlamaCpp._vocab_tables`); a constraint lifts itself to it once (cached by the vocabulary's
`fingerprint`) and then answers "which tokens may come next" per position. Control tokens carry no
text (their piece is b""); end-of-generation ids are in `eos_ids`.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Sequence

import numpy as np


class Vocabulary:
    """Token byte strings (indexed by token id) and the end-of-generation token ids."""

    def __init__(self, pieces: Sequence[bytes], eos_ids: Sequence[int]) -> None:
        if not pieces:
            raise ValueError("Vocabulary: pieces is empty")
        if any(not isinstance(p, (bytes, bytearray)) for p in pieces):
            raise TypeError("Vocabulary: every piece must be bytes (the token's UTF-8 byte string)")
        self.pieces: list[bytes] = [bytes(p) for p in pieces]
        eos = sorted({int(i) for i in eos_ids})
        if not eos:
            raise ValueError("Vocabulary: give at least one end-of-generation id (eos_ids)")
        if eos[0] < 0 or eos[-1] >= len(self.pieces):
            raise ValueError(f"Vocabulary: eos_ids {eos} out of range for {len(self.pieces)} tokens")
        self.eos_ids: list[int] = eos

    def __len__(self) -> int:
        return len(self.pieces)

    @cached_property
    def eos_mask(self) -> np.ndarray:
        mask = np.zeros(len(self.pieces), dtype=bool)
        mask[self.eos_ids] = True
        return mask

    @cached_property
    def special_mask(self) -> np.ndarray:
        """Tokens without text that do not end generation (control tokens such as <|im_start|>)."""
        empty = np.array([p == b"" for p in self.pieces])
        return empty & ~self.eos_mask

    @cached_property
    def fingerprint(self) -> str:
        """A stable hash of the pieces and eos ids: the key under which bound constraints are cached."""
        h = hashlib.sha256()
        for p in self.pieces:
            h.update(len(p).to_bytes(2, "little") + p)
        h.update(repr(self.eos_ids).encode())
        return h.hexdigest()[:24]
