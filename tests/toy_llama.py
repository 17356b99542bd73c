"""`ToyLlama`, a test double for the model only: `LlamaCpp`'s real batched sampling loop (its decode
engine, prefix-sharing sequence cache, vectorised proposal, guided drawer, word chunking, stop
masses, reports) on a 7-token "model" whose logits are a fixed function of the text written so
far, so every distribution it defines can be enumerated exactly. Only the batch context (which
would run llama.cpp) is replaced, by `ToyContext`, which evaluates the table.

`exact_program(...)` is the same generative process written independently with `Categorical`
draws, one per token the loop would draw (the boundary token a word chunk draws and discards
included), and `factor(log φ)` per kept token (and per kept or final end-of-generation) from the
constraint's *definition* on text (`prefix`/`complete`); a word chunk's stop is not constrained: `policies.Enumerate` on it gives the exact target π(τ)·Φ(τ)/Φ(ε) and Z.
"""

from __future__ import annotations

import math
import threading
import zlib
from typing import Any

import numpy as np

from agents.backends.llama_chunks import VocabTables
from agents.backends.llama_cpp import LlamaCpp
from agents.backends.llama_engine import DecodeEngine
from agents.backends.llama_kv import SequenceCache
from agents.backends.llama_sampling import batch_proposal, rng_for
from agents.constraints import Vocabulary
from swarm import Categorical, factor, sample

PIECES = [b"", b"a", b"e", b" ", b"ab", b" e", b"."]
EOS = 0
BOUNDARY = np.array([p[:1] == b" " for p in PIECES]) | (np.arange(len(PIECES)) == EOS)
WHITESPACE_START = np.array([p[:1] == b" " for p in PIECES])
START = len(PIECES)
"""The prompt's start marker: a token id outside the table (it writes no text)."""


def toy_logits(text: bytes) -> np.ndarray:
    """Logits (float32, like llama.cpp's) as a fixed pseudo-random function of (length mod 3, last
    byte) of the text so far, with EOS made likelier as the text grows."""
    key = zlib.crc32(bytes([len(text) % 3]) + text[-1:])
    logits = np.random.default_rng(key).normal(size=len(PIECES)) * 1.5
    logits[EOS] += 0.4 * len(text) - 1.0
    return logits.astype(np.float32)


def _text(tokens: Any) -> bytes:
    return b"".join(PIECES[t] for t in tokens if 0 <= t < len(PIECES))


class _NoMemory:
    """The `KvMemory` of the table: there are no cells to copy or truncate."""

    def copy(self, src: int, dst: int) -> None:
        pass

    def truncate(self, seq: int, keep: int) -> None:
        pass


class ToyContext:
    """The batch context's interface (`agents.backends.llama_context.BatchContext`) over the table:
    a sequence's logits after its committed tokens plus the new ones are `toy_logits` of their text."""

    def __init__(self, n_ctx: int = 256, n_seq_max: int = 256) -> None:
        self.n_ctx, self.n_seq_max, self.n_batch = n_ctx, n_seq_max, 4 * n_seq_max
        self.cache: SequenceCache | None = None
        self.capacity = self.resizes = 0

    def ensure(self, wanted: int) -> None:
        if self.cache is None:
            self.capacity = self.n_seq_max
            self.cache = SequenceCache(_NoMemory(), self.capacity)

    def evaluate(self, items: list[tuple[int, int, np.ndarray, bool]]) -> list[np.ndarray]:
        rows = []
        for seq, start, tokens, wants in items:
            held = self.cache.slots[seq].tokens
            assert held.size == start, f"sequence {seq}: {held.size} tokens held, batch starts at {start}"
            if wants:
                rows.append(toy_logits(_text([*held.tolist(), *tokens.tolist()])))
        return rows

    def close(self) -> None:
        self.cache, self.capacity = None, 0


class ToyLlama(LlamaCpp):
    """LlamaCpp with a table for a model (test double; see the module docstring)."""

    name = "toy_llama"

    def __init__(self, seed: int = 0) -> None:  # no model file: set what LlamaCpp.__init__ sets
        self.model_path, self.model, self.n_ctx, self.n_seq_max, self.n_threads = None, "toy", 256, 256, 1
        self.seed, self.chat_format, self.verbose = seed, None, False
        self._seed_rng = rng_for(seed)
        self._lock = threading.Lock()
        self._model: Any = None
        self._engine: DecodeEngine | None = None

    def __reduce__(self) -> tuple:
        return (type(self), (self.seed,))

    def _start(self) -> DecodeEngine:
        eog = np.arange(len(PIECES)) == EOS
        self._vocab = VocabTables(list(PIECES), eog, WHITESPACE_START)
        self._vocabulary = Vocabulary(PIECES, [EOS])
        return DecodeEngine(ToyContext(self.n_ctx, self.n_seq_max), name=self.name, model_name=self.model)

    def prompt_tokens(self, request: Any) -> list[int]:
        """A start marker and a longest-match tokenization of the assistant prefix (the logits
        depend on the text only, so the tokenization does not matter)."""
        self.load()
        data, out = request.assistant_prefix.encode(), [START]
        while data:
            tok = max((i for i, p in enumerate(PIECES) if p and data.startswith(p)), key=lambda i: len(PIECES[i]))
            out.append(tok)
            data = data[len(PIECES[tok]):]
        return out


def token_dist(text: bytes, temperature: float, top_p: float) -> Categorical:
    """The proposal q over token ids after `text` (LlamaCpp's `batch_proposal`: temperature, top-p)."""
    logq = batch_proposal(toy_logits(text)[None, :], [temperature], [top_p])[0].logq
    return Categorical(list(range(len(PIECES))), probs=np.exp(logq.astype(np.float64)).tolist())


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
