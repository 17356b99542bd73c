"""The llama.cpp context of the batched backend: one KV stream per sequence slot, flash attention,
and slots that grow with the concurrency a program actually has.

`kv_unified = false` gives each of `capacity` sequences its own stream of `n_ctx` cells, and flash
attention visits a sequence's cells in position order: the configuration in which a sequence's
logits do not depend on the rest of the batch (see `agents.backends.llama_cpp`). Memory is
capacity × n_ctx cells, so the context starts with INITIAL_SLOTS and is recreated with a power of
two more (up to `n_seq_max`) when more requests wait than it has slots and none is decoding; the
cached sequences move into the new context (`llama_state_seq_get_data` / `set_data`: the same keys
and values, so results are unchanged).
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import numpy as np

from agents.backends.base import BackendError
from agents.backends.llama_kv import LlamaMemory, SequenceCache

INITIAL_SLOTS = 8


class DecodeFailed(BackendError):
    """llama.cpp refused a batch (`llama_decode` returned non-zero): the requests in it fail."""


def restream(blob: bytes, n_old: int, n_new: int, seq: int) -> bytes | None:
    """One sequence's saved KV state (`llama_state_seq_get_data`), re-headed for a context with
    `n_new` streams instead of `n_old`; None when the bytes are not laid out as expected.

    llama.cpp writes a sequence's KV state as a short header, [u32 n_stream], then per stream
    [u32 cell_count] followed by that stream's cells when cell_count > 0. A sequence lives in its own
    stream, so every other stream is an empty 4-byte count, and a single-sequence load sends the
    cells to the destination sequence's stream; but loading refuses a different n_stream. So the
    count is rewritten and the empty streams padded. The count is looked for in the first 16 bytes
    (0, 8 and 12 byte headers exist across versions) and the layout checked around it; anything
    unexpected returns None (the sequence is then evaluated again: the cache is an optimisation)."""
    before, after = 4 * seq, 4 * (n_old - seq - 1)
    for offset in range(0, 20, 4):
        if len(blob) < offset + 4 * (n_old + 1) or struct.unpack_from("=I", blob, offset)[0] != n_old:
            continue
        start = offset + 4
        if blob[start:start + before] != bytes(before) or (after and blob[len(blob) - after:] != bytes(after)):
            continue
        section = blob[start + before:len(blob) - after]
        return blob[:offset] + struct.pack("=I", n_new) + bytes(before) + section + bytes(4 * (n_new - seq - 1))
    return None


def batch_order(items: list[tuple[int, int, np.ndarray, bool]]) -> list[int]:
    """The indices of `items` ((sequence id, …) each) by sequence id: the order in which llama.cpp
    puts the most sequences into one micro-batch (see `BatchContext.evaluate`)."""
    return sorted(range(len(items)), key=lambda n: items[n][0])


def micro_batches(items: list[tuple[int, int, np.ndarray, bool]]) -> int:
    """How many micro-batches llama.cpp (`split_equal(sequential=true)`, one KV stream per sequence)
    cuts one batch into, for items in the given order: each takes, in one sweep of the batch, the
    first unused token, then those of sequence id last + 1, as many tokens from each as the fewest
    any of them has left. A count for diagnostics and tests; llama.cpp does the cutting."""
    left = [[seq, tokens.size] for seq, _, tokens, _ in items]
    count = 0
    while any(n for _, n in left):
        chosen, last = [], None
        for entry in left:
            if entry[1] and (last is None or entry[0] == last + 1):
                chosen.append(entry)
                last = entry[0]
        take = min(n for _, n in chosen)
        for entry in chosen:
            entry[1] -= take
        count += 1
    return count


class BatchContext:
    """The context, its `llama_batch` and its `SequenceCache`, resized as a whole."""

    def __init__(self, llama_cpp: Any, model: Any, *, n_ctx: int, n_seq_max: int, n_batch: int, n_threads: int,
                 verbose: bool, name: str) -> None:
        self._lib, self._model = llama_cpp, model
        self.n_ctx, self.n_seq_max, self.n_batch, self.n_threads = n_ctx, n_seq_max, n_batch, n_threads
        self.verbose, self.name = verbose, name
        self.n_vocab = model.n_vocab()
        self.ctx: Any = None
        self.batch: Any = None
        self.cache: SequenceCache | None = None
        self.capacity = 0
        self.resizes = 0
        self.micro_batches = 0
        """llama.cpp micro-batches (passes over the weights) the decodes so far were cut into."""

    def ensure(self, wanted: int) -> None:
        """At least `wanted` slots (a power of two ≥ INITIAL_SLOTS, at most n_seq_max). Only call it
        when no request is decoding."""
        capacity = INITIAL_SLOTS
        while capacity < wanted:
            capacity *= 2
        capacity = min(max(capacity, self.capacity), self.n_seq_max)
        if self.ctx is not None and capacity == self.capacity:
            return
        saved = self._save_slots()
        previous = self.cache
        self.close()
        self.ctx = self._new_context(capacity)
        self.capacity = capacity
        self.batch = self._lib.llama_batch_init(self.n_batch, 0, 1)
        self.cache = SequenceCache(LlamaMemory(self._lib, self._lib.llama_get_memory(self.ctx)), capacity)
        if previous is not None:
            self.resizes += 1
            self.cache.stats = previous.stats
            self._restore_slots(previous, saved)

    def _new_context(self, capacity: int) -> Any:
        lib = self._lib
        p = lib.llama_context_default_params()
        p.n_ctx, p.n_seq_max, p.kv_unified = self.n_ctx * capacity, capacity, False
        p.n_batch = p.n_ubatch = self.n_batch
        p.n_threads = p.n_threads_batch = self.n_threads
        p.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
        p.no_perf = True
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=self.verbose):
            ctx = lib.llama_init_from_model(self._model.model, p)
        if not ctx:
            raise BackendError(f"{self.name}: llama.cpp could not create a context of {capacity} sequences "
                               f"x {self.n_ctx} tokens; lower n_seq_max or n_ctx")
        return ctx

    def _save_slots(self) -> dict[int, bytes]:
        """The KV state of every non-empty slot, by sequence id."""
        saved: dict[int, bytes] = {}
        if self.cache is None or self.ctx is None:
            return saved
        lib = self._lib
        for slot in self.cache.slots:
            if slot.tokens.size:
                size = lib.llama_state_seq_get_size(self.ctx, slot.seq)
                buf = (ctypes.c_uint8 * size)()
                if lib.llama_state_seq_get_data(self.ctx, buf, size, slot.seq) == size:
                    saved[slot.seq] = bytes(buf)
        return saved

    def _restore_slots(self, previous: SequenceCache, saved: dict[int, bytes]) -> None:
        """The saved sequences into the new slots of the same ids (one that does not load back is
        dropped: the cache is only an optimisation)."""
        for old in previous.slots:
            blob = saved.get(old.seq)
            blob = restream(blob, len(previous.slots), self.capacity, old.seq) if blob is not None else None
            if blob is None:
                continue
            buf = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
            if self._lib.llama_state_seq_set_data(self.ctx, buf, len(blob), old.seq) != len(blob):
                self.cache.forget(self.cache.slots[old.seq])
                continue
            slot = self.cache.slots[old.seq]
            slot.tokens, slot.snapshots, slot.last_used = old.tokens, old.snapshots, old.last_used
        self.cache.adopt_clock(previous)

    def evaluate(self, items: list[tuple[int, int, np.ndarray, bool]]) -> list[np.ndarray]:
        """One `llama_decode` of `items`, each (sequence id, position of its first token, tokens,
        whether the logits after its last token are wanted): the logits rows asked for, in the order
        of `items` (float32 copies). Raises `DecodeFailed` when llama.cpp refuses the batch.

        The batch lists the items by sequence id (`batch_order`): with one KV stream per sequence,
        llama.cpp cuts a batch into micro-batches that each take tokens in batch order from sequences
        with consecutive ids (`split_equal(sequential=true)`), and every micro-batch is a pass over
        the weights; in arrival order, 16 sequences could take up to 16 passes instead of one. The
        logits do not depend on the order (see `agents.backends.llama_cpp`)."""
        b, i, wanted, order = self.batch, 0, {}, batch_order(items)
        self.micro_batches += micro_batches([items[n] for n in order])
        for n in order:
            seq, start, tokens, wants = items[n]
            for k, token in enumerate(tokens.tolist()):
                b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = token, start + k, 1, seq
                b.logits[i] = wants and k == tokens.size - 1
                i += 1
            if wants:
                wanted[n] = i - 1
        b.n_tokens = i
        rc = self._lib.llama_decode(self.ctx, b)
        if rc != 0:
            raise DecodeFailed(f"{self.name}: llama_decode returned {rc} on a batch of {i} tokens")
        return [np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self.ctx, wanted[n]), shape=(self.n_vocab,)).copy()
                for n in sorted(wanted)]

    def close(self) -> None:
        if self.batch is not None:
            self._lib.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx is not None:
            self._lib.llama_free(self.ctx)
            self.ctx = None
        self.capacity = 0
