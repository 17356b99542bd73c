"""`ToyLlama`, a test double: `LlamaCpp`'s real sampling loop (`_generate`: proposal, guide, word
chunking, stop masses, reports) on a 7-token "model" whose logits are a fixed function of the text
written so far, so every distribution it defines can be enumerated exactly.

`exact_program(...)` is the same generative process written independently with `Categorical`
draws, one per token the loop would draw (the boundary token a word chunk draws and discards
included), and `factor(log φ)` per kept token (and per kept or final end-of-generation) from the
constraint's *definition* on text (`prefix`/`complete`); a word chunk's stop is not constrained: `policies.Enumerate` on it gives the exact target π(τ)·Φ(τ)/Φ(ε) and Z.
"""

from __future__ import annotations

import math
import threading
import weakref
import zlib
from types import SimpleNamespace
from typing import Any

import numpy as np

from agents.backends.llama_cpp import LlamaCpp, _Proposal, _rng_for
from swarm import Categorical, factor, sample

PIECES = [b"", b"a", b"e", b" ", b"ab", b" e", b"."]
EOS = 0
BOUNDARY = np.array([p[:1] == b" " for p in PIECES]) | (np.arange(len(PIECES)) == EOS)
WHITESPACE_START = np.array([p[:1] == b" " for p in PIECES])


def toy_logits(text: bytes) -> np.ndarray:
    """Logits as a fixed pseudo-random function of (length mod 3, last byte) of the text so far,
    with EOS made likelier as the text grows."""
    key = zlib.crc32(bytes([len(text) % 3]) + text[-1:])
    logits = np.random.default_rng(key).normal(size=len(PIECES)) * 1.5
    logits[EOS] += 0.4 * len(text) - 1.0
    return logits


def _text(tokens: list[int]) -> bytes:
    return b"".join(PIECES[t] for t in tokens if t >= 0)


class ToyLlama(LlamaCpp):
    """LlamaCpp with a table for a model (test double; see the module docstring)."""

    name = "toy_llama"

    def __init__(self, seed: int = 0) -> None:  # no model file: set what LlamaCpp.__init__ sets
        self.model_path, self.model, self.n_ctx, self.n_threads = None, "toy", 256, 1
        self.seed, self.chat_format, self.verbose = seed, None, False
        self._seed_rng = _rng_for(seed)
        self._lock = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._llm: Any = None
        self._vocabulary: Any = None

    def _load_locked(self) -> None:
        if self._llm is None:
            self._pieces, self._eog = list(PIECES), np.arange(len(PIECES)) == EOS
            self._ws_start = WHITESPACE_START
            self._llm = SimpleNamespace(n_tokens=0)

    def prompt_tokens(self, request: Any) -> list[int]:
        """A start marker (−1) and a longest-match tokenization of the assistant prefix (the logits
        depend on the text only, so the tokenization does not matter)."""
        data, out = request.assistant_prefix.encode(), [-1]
        while data:
            tok = max((i for i, p in enumerate(PIECES) if p and data.startswith(p)), key=lambda i: len(PIECES[i]))
            out.append(tok)
            data = data[len(PIECES[tok]):]
        return out

    def _prefill(self, tokens: list[int]) -> np.ndarray:
        return self._eval_from(tokens, 0)

    def _eval_from(self, tokens: list[int], start: int) -> np.ndarray:
        self._llm.n_tokens = len(tokens)
        return toy_logits(_text(tokens))

    def close(self) -> None:
        self._llm = None


def token_dist(text: bytes, temperature: float, top_p: float) -> Categorical:
    """The proposal q over token ids after `text` (LlamaCpp's `_Proposal`: temperature, top-p)."""
    return Categorical(list(range(len(PIECES))), probs=np.exp(_Proposal(toy_logits(text), temperature, top_p).logq).tolist())


def base_dist(text: bytes) -> Categorical:
    return token_dist(text, 1.0, 1.0)


def log_phi(constraint: Any, text: bytes, tok: int) -> float:
    """log φ(tok | text) from the constraint's definition on text."""
    here = constraint.prefix(text.decode())
    if here == 0.0:
        return -math.inf
    value = constraint.complete(text.decode()) if tok == EOS else constraint.prefix((text + PIECES[tok]).decode())
    return math.log(value) - math.log(here) if value > 0 else -math.inf


def exact_chunk(constraint: Any, text: bytes, unit: str, max_tokens: int, dist: Any, name: str) -> bytes:
    """One generation of LlamaCpp's loop (unit "text" or "word"), written with Categorical draws:
    the chunk's text. Every kept token is weighted by φ; a word chunk's stop is not."""
    chunk, in_word = b"", False
    for i in range(max_tokens):
        tok = sample(f"{name}/t{i}", dist(text + chunk))
        if unit == "word" and in_word and BOUNDARY[tok]:
            break  # a stop writes no text: the constraint does not apply to it
        factor(f"{name}/phi{i}", log_phi(constraint, text + chunk, tok))
        if tok == EOS:
            break
        chunk += PIECES[tok]
        in_word = in_word or bool(PIECES[tok].strip())
    return chunk


def exact_program(constraint: Any, unit: str, max_tokens: int, chunks: int, temperature: float = 1.0,
                  top_p: float = 1.0, base: bool = False):
    """The exact model of `guided_program` (same arguments)."""
    def dist(text: bytes) -> Any:
        return base_dist(text) if base else token_dist(text, temperature, top_p)

    def program() -> str:
        text = b""
        for c in range(chunks):
            piece = exact_chunk(constraint, text, unit, max_tokens, dist, f"c{c}")
            text += piece
            if not piece.strip():
                break
        return text.decode()
    return program


def guided_program(agent: Any, constraint: Any, unit: str, max_tokens: int, chunks: int, temperature: float = 1.0,
                   top_p: float = 1.0):
    """Up to `chunks` constrained generations of `unit`, each continuing the text so far."""
    async def program() -> str:
        text = ""
        for c in range(chunks):
            piece = await sample(f"c{c}", agent.generate(raw_prompt="", prefix=text, unit=unit, max_tokens=max_tokens,
                                                         temperature=temperature, top_p=top_p, constraint=constraint))
            text += piece
            if not piece.strip():
                break
        return text
    return program
