"""Which llama.cpp sequence holds which tokens: the prefix-sharing KV cache of the batched backend.

A *slot* is one llama.cpp sequence id with its own KV stream of `n_ctx` cells. It records the
tokens whose keys and values are in the cache ("committed") and up to two *snapshots*: the logits
row after a given number of committed tokens (the end of the last prompt, the end of the sequence),
so that a request for exactly a cached context needs no evaluation at all. A slot is *busy* while a
request decodes in it, *idle* otherwise (then it is only a cache entry, ordered by last use).

Assigning a request whose prompt is the token sequence T (longest-prefix matching over the slots;
with at most a few dozen slots a linear scan of numpy comparisons is cheaper than a radix tree):

    L(s) = lcp(T, committed(s))
    r(s) = L(s)                 if L(s) = |T| and s has a snapshot at |T| (nothing to evaluate)
           min(L(s), |T| − 1)   otherwise (the last prompt token is evaluated for its logits)
    s*   = argmax_s (r(s), L(s))             (ties: idle first, then most recent);  r = r(s*)
    s* idle, and s* holds nothing beyond T[:L], or no other slot is idle, or every other idle slot
             holds a sequence used more recently than s*:   the request takes s* over
    otherwise: s* is copied (llama_memory_seq_cp) into an empty slot, else into the least recently
               used idle slot that no waiting request would reuse (`wanted`), else into the least
               recently used idle slot (no match at all: that slot is simply cleared)
    the request's slot is truncated to r cells and T[r:] is evaluated.
A cached sequence is *evicted* when cells it needed are discarded for another request: a whole
slot reused for an unrelated prompt, or the tail of a slot taken over beyond the shared prefix.

A request that would reuse more from a prompt another request is evaluating in this step
(`pending_reuse` > r) waits one step and copies it then. So a prompt shared by many requests is
evaluated once, a particle's next step costs only its new tokens, and a resampled offspring starts
from a copy of its parent's sequence. The memory operations
go through `KvMemory`, so the bookkeeping is testable without a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class KvMemory(Protocol):
    def copy(self, src: int, dst: int) -> None: ...
    def truncate(self, seq: int, keep: int) -> None: ...


class LlamaMemory:
    """`KvMemory` over a llama.cpp context's memory (per-sequence streams: a copy is a buffer copy,
    applied by llama.cpp at the start of the next decode, before that batch writes)."""

    def __init__(self, llama_cpp: Any, memory: Any) -> None:
        self._lib = llama_cpp
        self._memory = memory

    def copy(self, src: int, dst: int) -> None:
        self._lib.llama_memory_seq_rm(self._memory, dst, -1, -1)
        self._lib.llama_memory_seq_cp(self._memory, src, dst, -1, -1)

    def truncate(self, seq: int, keep: int) -> None:
        if not self._lib.llama_memory_seq_rm(self._memory, seq, keep, -1):
            raise RuntimeError(f"llama.cpp could not truncate sequence {seq} to {keep} tokens")


@dataclass
class Slot:
    seq: int
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    busy: bool = False
    last_used: int = 0

    def lcp(self, tokens: np.ndarray) -> int:
        n = min(self.tokens.size, tokens.size)
        diff = np.flatnonzero(self.tokens[:n] != tokens[:n])
        return int(diff[0]) if diff.size else n


@dataclass
class Assignment:
    slot: Slot
    reused: int
    """Prompt tokens already in the slot after assignment (T[:reused] is not evaluated)."""
    logits: np.ndarray | None
    """The logits after the whole prompt when a snapshot had them (then reused == len(T))."""
    copied_from: int | None
    evicted: int


class SequenceCache:
    """The slots, their committed tokens and snapshots, and the assignment rule above."""

    def __init__(self, memory: KvMemory, n_slots: int) -> None:
        self.memory = memory
        self.slots = [Slot(seq) for seq in range(n_slots)]
        self._clock = 0
        self.stats = {"evictions": 0, "copies": 0, "reused_tokens": 0, "snapshot_hits": 0}

    def adopt_clock(self, other: "SequenceCache") -> None:
        """Continue another cache's use clock (its slots' last-use times were copied here)."""
        self._clock = max(self._clock, other._clock)

    def _touch(self, slot: Slot) -> None:
        self._clock += 1
        slot.last_used = self._clock

    def best_match(self, tokens: np.ndarray) -> tuple[Slot | None, int]:
        """The slot that saves `tokens` the most evaluation (`reuse`), then the longest shared
        prefix (ties: idle first, then most recent); returns it with that prefix length."""
        best, best_key = None, (0, 0, False, 0)
        for slot in self.slots:
            match = slot.lcp(tokens)
            key = (reuse(match, tokens.size, match == tokens.size and match in slot.snapshots), match,
                   not slot.busy, slot.last_used)
            if match > 0 and key > best_key:
                best, best_key = slot, key
        return best, best_key[1]

    def best_reuse(self, tokens: np.ndarray) -> int:
        """Prompt tokens a request for `tokens` would not evaluate if assigned now."""
        slot, match = self.best_match(tokens)
        return 0 if slot is None else reuse(match, tokens.size, match == tokens.size and match in slot.snapshots)

    def _victim(self, exclude: Slot | None = None, keep: frozenset[int] = frozenset()) -> Slot | None:
        """An empty idle slot, else the least recently used idle one whose sequence is not in `keep`,
        else the least recently used idle one (None: every slot is busy)."""
        idle = [s for s in self.slots if not s.busy and s is not exclude]
        empty = [s for s in idle if s.tokens.size == 0]
        if empty:
            return empty[0]
        spare = [s for s in idle if s.seq not in keep] or idle
        return min(spare, key=lambda s: s.last_used) if spare else None

    def idle_count(self) -> int:
        """Slots no request is decoding in (so at most this many requests can be admitted now)."""
        return sum(not s.busy for s in self.slots)

    def wanted(self, prompts: list[np.ndarray]) -> list[int | None]:
        """For each of `prompts` (requests waiting their turn), the idle slot it would reuse now (its
        sequence id, or None). `assign` evicts these only when no other idle slot is left, so a
        resampled particle's parent survives until its own offspring are admitted (least recently
        used alone picks whichever parent finished its previous step first, and its offspring then
        evaluate their text again)."""
        out: list[int | None] = []
        for tokens in prompts:
            slot, _ = self.best_match(tokens)
            out.append(slot.seq if slot is not None and not slot.busy else None)
        return out

    def assign(self, tokens: np.ndarray, keep: frozenset[int] = frozenset()) -> Assignment | None:
        """A slot for a request with prompt `tokens`, prepared as the rule says (sparing the slots in
        `keep`, see `wanted`); None when every slot is busy (the request waits for one to be released)."""
        source, match = self.best_match(tokens)
        victim = self._victim(exclude=source, keep=keep)
        copied_from = None
        if source is not None and not source.busy and (
                match == source.tokens.size or victim is None
                or (victim.tokens.size > 0 and source.last_used <= victim.last_used)):
            slot = source  # take it over: its tail beyond the match is the least valuable content
            evicted = int(match < source.tokens.size)
        elif victim is None:
            return None
        else:
            slot, evicted = victim, int(victim.tokens.size > 0)
            if source is not None:
                self.memory.copy(source.seq, slot.seq)
                slot.tokens, slot.snapshots, copied_from = source.tokens, dict(source.snapshots), source.seq
                self.stats["copies"] += 1
            else:
                self._truncate(slot, 0)
        snapshot = slot.snapshots.get(tokens.size) if match == tokens.size else None
        reused = reuse(match, tokens.size, snapshot is not None)
        self._truncate(slot, reused)
        slot.busy = True
        self._touch(slot)
        self.stats["evictions"] += evicted
        self.stats["reused_tokens"] += reused
        self.stats["snapshot_hits"] += snapshot is not None
        return Assignment(slot, reused, snapshot, copied_from, evicted)

    def _truncate(self, slot: Slot, keep: int) -> None:
        if keep < slot.tokens.size:
            self.memory.truncate(slot.seq, keep)
        slot.tokens = slot.tokens[:keep]
        slot.snapshots = {n: row for n, row in slot.snapshots.items() if n <= keep}

    def commit(self, slot: Slot, tokens: np.ndarray | list[int]) -> None:
        """Record tokens just evaluated into the slot's KV cells."""
        slot.tokens = np.concatenate([slot.tokens, np.asarray(tokens, dtype=np.int32)])

    def snapshot(self, slot: Slot, row: np.ndarray, keep_prompt_end: int | None = None) -> None:
        """Remember the logits after the slot's committed tokens (and keep the one at the end of the
        prompt, `keep_prompt_end`, if present); older snapshots are dropped."""
        kept = {n: r for n, r in slot.snapshots.items() if n == keep_prompt_end}
        kept[slot.tokens.size] = row
        slot.snapshots = kept

    def release(self, slot: Slot) -> None:
        slot.busy = False
        self._touch(slot)

    def forget(self, slot: Slot) -> None:
        """Drop what the slot holds (after a failed decode its cells are unknown)."""
        self.memory.truncate(slot.seq, 0)
        slot.tokens = slot.tokens[:0]
        slot.snapshots = {}

    def pending_reuse(self, tokens: np.ndarray, ahead: dict[int, np.ndarray]) -> int:
        """What a request for `tokens` would reuse from a busy slot once the prompt tokens it is
        evaluating now (`ahead`, by sequence id) are in (a prompt that ends exactly at |tokens| also
        leaves its logits): when that is more than `best_reuse`, the request waits one step, so a
        prompt shared by many requests is evaluated once."""
        best = 0
        for slot in self.slots:
            todo = ahead.get(slot.seq)
            if todo is None:
                continue
            full = Slot(slot.seq, np.concatenate([slot.tokens, todo]))
            match = full.lcp(tokens)
            best = max(best, reuse(match, tokens.size, match == tokens.size == full.tokens.size))
        return best


def reuse(match: int, size: int, has_logits: bool) -> int:
    """Prompt tokens not evaluated for a prompt of `size` tokens sharing `match` with a sequence:
    all of them when the logits after the prompt are known, else all but the last."""
    return match if has_logits and match == size else min(match, size - 1)
