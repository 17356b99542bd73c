"""One request's chunk, built a drawn token at a time: the units, stop strings and the completion.

`ChunkBuilder.offer(draw, row)` takes the token drawn for this request at the current position and
says whether the chunk is complete; the engine decodes a kept token and offers the next draw. The
units (see `agents.backends.llama_cpp`):

- "token": one token (with the tokens that finish its UTF-8 character, see below).
- "line": tokens up to and including the first whose text contains "\\n".
- "word": once the chunk holds a non-space character, the next drawn token in B ∪ E (whitespace-
  initial or end-of-generation) ends the chunk and is not kept; `stop_log_prob = log q(B ∪ E)` and
  `base_stop_log_prob = log p(B ∪ E)` at that position.
- "text": until an end-of-generation token, `max_tokens`, or a stop string (text cut before it).
Any unit also ends at `max_tokens` or when the sequence fills its context ("length").

A chunk never ends inside a UTF-8 character: a character of 2-4 bytes is often spread over several
byte tokens, and a chunk cut after its first byte would end in U+FFFD, lose the bytes drawn and
condition the next chunk on a broken prefix. So "token" and `max_tokens` end the chunk at the first
token after which the text is whole, taking at most `UTF8_TAIL_TOKENS` tokens more (a character
has at most 3 bytes after its first); the stopping rule is still a function of the drawn tokens, so
log q is still the sum of their log q. Only a full context, an end of generation, a word boundary
or a model that writes invalid UTF-8 can leave a U+FFFD.

Tokens are drawn by the request's `TokenDrawer` (`agents.backends.llama_sampling`): from q itself,
or under a constraint (`agents.backends.llama_guided`), which also gives the word stop masses and
the completion's constraint report; a drawer that allows no token ends the chunk ("constraint").
"""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass, field

import numpy as np

from agents.backends.base import Completion, GenerationSettings, Usage
from agents.backends.llama_sampling import PROPOSAL, RowProposal, TokenDraw, TokenDrawer

UTF8_TAIL_TOKENS = 3
"""Tokens a chunk may take beyond `max_tokens` (or beyond its one token) to finish a UTF-8
character: the continuation bytes of a 4-byte character, one byte token each at worst."""


class LlamaCppCompletion(Completion):
    """A `Completion` that also carries the base-model mass of the chunk's stopping event and what
    the prefix-sharing KV cache did for this request."""

    base_stop_log_prob: float | None = None
    """log p(B ∪ E) at the stopping position (unit="word"), under the base model; None otherwise."""
    token_ids: list[int] = []
    """The drawn token ids, aligned with `tokens` (for exact replay and independent checks)."""
    reused_tokens: int = 0
    """Prompt tokens found in the KV cache (evaluated before, by this or another request)."""
    prefilled_tokens: int = 0
    """Prompt tokens evaluated for this request (usage.input_tokens = reused + prefilled)."""
    evictions: int = 0
    """Cached sequences evicted (least recently used) to make room for this request."""

    @property
    def kv_cache(self) -> dict[str, int]:
        """What the prefix-sharing KV cache did for this request (recorded in the sample event's info)."""
        return {"reused_tokens": self.reused_tokens, "prefilled_tokens": self.prefilled_tokens,
                "evictions": self.evictions}

    @property
    def base_log_prob(self) -> float | None:
        """log p(chunk) under the base model at temperature 1, including the stopping event."""
        if self.base_token_logprobs is None:
            return None
        return math.fsum([*self.base_token_logprobs, self.base_stop_log_prob or 0.0])


@dataclass(frozen=True)
class VocabTables:
    """Per token id: its text bytes, whether it ends generation (E), whether it starts with whitespace
    (B), and the word boundary B ∪ E as a mask and as a float64 indicator."""

    pieces: list[bytes]
    eog: np.ndarray
    ws_start: np.ndarray
    boundary: np.ndarray = field(init=False)
    boundary_indicator: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "boundary", self.ws_start | self.eog)
        object.__setattr__(self, "boundary_indicator", self.boundary.astype(np.float64))


def trim_pieces(pieces: list[str], n_chars: int) -> list[str]:
    """Cut a list of text pieces so that their concatenation has exactly n_chars characters."""
    out, used = [], 0
    for piece in pieces:
        keep = piece[: max(0, n_chars - used)]
        out.append(keep)
        used += len(keep)
    return out


def find_stop(text: str, stops: list[str], before: int) -> int | None:
    """Index of the earliest stop string in `text` that ends in the newly added part, if any."""
    hits = [j for x in stops if (j := text.find(x, max(0, before - len(x) + 1))) != -1]
    return min(hits) if hits else None


class ChunkBuilder:
    """The chunk of one request (see the module docstring)."""

    def __init__(self, settings: GenerationSettings, vocab: VocabTables, drawer: TokenDrawer = PROPOSAL) -> None:
        self.settings = settings
        self.vocab = vocab
        self.drawer = drawer
        self._boundary = vocab.boundary
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [x for x in settings.stop if x]
        self.pieces: list[str] = []
        self.ids: list[int] = []
        self.logq: list[float] = []
        self.logp: list[float] = []
        self.text = ""
        self.finish = "length"
        self.stop_lq, self.stop_lp = 0.0, None
        self._in_word = False
        self._tail = 0
        """Tokens taken beyond the chunk's end to finish a UTF-8 character."""

    def step(self, row: RowProposal, rng: np.random.Generator, room: bool) -> int | None:
        """Draw the next position from `row` with the request's drawer and offer it: the token to
        evaluate next, or None when the chunk is complete (see `offer`)."""
        word_end = self._boundary if self.settings.unit == "word" and self._in_word else None
        draw = self.drawer.draw(row, rng, free=word_end)
        return None if self.offer(draw, row, room) else draw.token

    def offer(self, draw: TokenDraw | None, row: RowProposal, room: bool) -> bool:
        """Take the token drawn at the next position (None: the drawer allowed no token, finish
        reason "constraint"); True when the chunk is complete. `room`: the sequence can hold one
        more token (otherwise a kept token ends the chunk with "length")."""
        if draw is None:
            self.finish = "constraint"
            return True
        s, tok = self.settings, draw.token
        if s.unit == "word" and self._in_word and self._boundary[tok]:
            self.stop_lq, self.stop_lp = self.drawer.stop_log_probs(row, self._boundary, self.vocab.boundary_indicator)
            self.finish = "eos" if self.vocab.eog[tok] else "unit"
            return True
        self.drawer.keep(tok)
        piece = self._decoder.decode(self.vocab.pieces[tok])
        self.pieces.append(piece)
        self.ids.append(tok)
        self.logq.append(draw.log_q)
        self.logp.append(draw.log_p)
        if self.vocab.eog[tok]:
            self.finish = "eos"
            return True
        before, self.text = len(self.text), self.text + piece
        cut = find_stop(self.text, self._stops, before)
        if cut is not None:
            self.text, self.pieces, self.finish = self.text[:cut], trim_pieces(self.pieces, cut), "stop"
            return True
        if s.unit == "line" and "\n" in piece:
            self.finish = "unit"
            return True
        self._in_word = self._in_word or bool(piece.strip())
        due = s.unit == "token" or len(self.ids) >= s.max_tokens
        if due and room and self._inside_character() and self._tail < UTF8_TAIL_TOKENS:
            self._tail += 1  # finish the character first
            return False
        if s.unit == "token":
            self.finish = "unit"
            return True
        return due or not room

    def _inside_character(self) -> bool:
        """Whether the tokens so far end inside a UTF-8 character (the decoder holds its first bytes)."""
        return bool(self._decoder.getstate()[0])

    def completion(self, *, usage: Usage, latency_s: float, model: str, backend: str, reused: int,
                   prefilled: int, evictions: int) -> LlamaCppCompletion:
        tail = self._decoder.decode(b"", final=True)
        if tail and self.finish != "stop" and self.pieces:
            self.pieces[-1] += tail
            self.text += tail
        return LlamaCppCompletion(
            text=self.text, tokens=self.pieces, token_ids=self.ids, token_logprobs=self.logq,
            base_token_logprobs=self.logp, stop_log_prob=self.stop_lq, base_stop_log_prob=self.stop_lp,
            finish_reason=self.finish, usage=usage, latency_s=latency_s, model=model, backend=backend,
            constraint=self.drawer.report(), reused_tokens=reused, prefilled_tokens=prefilled, evictions=evictions)
