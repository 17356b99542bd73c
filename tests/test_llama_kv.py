"""The prefix-sharing KV cache's bookkeeping (`agents.backends.llama_kv`) and the re-heading of a saved
sequence state (`agents.backends.llama_context.restream`), without a model.

`RecordingMemory` is a test double of llama.cpp's memory: it applies copy/truncate to plain token
lists, so every assertion can also check that the slots' bookkeeping and the "KV cells" agree. The
real memory is exercised end to end in tests/test_llama_batching.py.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from agents.backends.llama_context import restream
from agents.backends.llama_kv import SequenceCache


class RecordingMemory:
    """A test double of `KvMemory`: per sequence, the list of tokens its cells hold."""

    def __init__(self) -> None:
        self.cells: dict[int, list[int]] = {}
        self.ops: list[tuple] = []

    def copy(self, src: int, dst: int) -> None:
        self.cells[dst] = list(self.cells.get(src, []))
        self.ops.append(("copy", src, dst))

    def truncate(self, seq: int, keep: int) -> None:
        self.cells[seq] = self.cells.get(seq, [])[:keep]
        self.ops.append(("truncate", seq, keep))


def evaluate(cache: SequenceCache, memory: RecordingMemory, slot, tokens) -> None:
    """What the engine does after a decode: the cells and the bookkeeping both gain `tokens`."""
    memory.cells.setdefault(slot.seq, []).extend(int(t) for t in tokens)
    cache.commit(slot, tokens)


def serve(cache, memory, prompt, generated=(), row=None):
    """Assign, evaluate the unseen prompt tail and `generated`, snapshot, release; returns the assignment."""
    tokens = np.asarray(prompt, dtype=np.int32)
    a = cache.assign(tokens)
    assert a is not None
    evaluate(cache, memory, a.slot, tokens[a.reused:] if a.logits is None else [])
    if a.logits is None:
        cache.snapshot(a.slot, np.full(4, float(len(tokens))))
    evaluate(cache, memory, a.slot, generated)
    cache.snapshot(a.slot, row if row is not None else np.full(4, float(a.slot.tokens.size)),
                   keep_prompt_end=len(tokens))
    cache.release(a.slot)
    return a


def consistent(cache: SequenceCache, memory: RecordingMemory) -> None:
    for slot in cache.slots:
        assert memory.cells.get(slot.seq, []) == slot.tokens.tolist(), slot.seq


def test_a_continuation_reuses_its_own_sequence_and_its_last_logits():
    memory = RecordingMemory()
    cache = SequenceCache(memory, 4)
    first = serve(cache, memory, [1, 2, 3, 4], generated=[5, 6])
    nxt = serve(cache, memory, [1, 2, 3, 4, 5, 6])  # exactly where it stopped: nothing to evaluate
    assert nxt.slot is first.slot and nxt.reused == 6 and nxt.logits is not None and nxt.copied_from is None
    consistent(cache, memory)


def test_the_last_prompt_token_is_evaluated_again_when_no_snapshot_has_its_logits():
    memory = RecordingMemory()
    cache = SequenceCache(memory, 4)
    serve(cache, memory, [1, 2, 3, 4], generated=[5, 6, 7])
    a = cache.assign(np.array([1, 2, 3, 4, 5], dtype=np.int32))  # a prefix of the slot, no snapshot at 5
    assert a.reused == 4 and a.logits is None and memory.cells[a.slot.seq] == [1, 2, 3, 4]
    consistent(cache, memory)


def test_a_shared_prompt_is_copied_from_a_busy_slot_not_evaluated_again():
    memory = RecordingMemory()
    cache = SequenceCache(memory, 4)
    tokens = np.array([9, 8, 7, 6, 5], dtype=np.int32)
    a = cache.assign(tokens)
    evaluate(cache, memory, a.slot, tokens)  # still busy (decoding)
    b = cache.assign(tokens)
    assert b.slot is not a.slot and b.copied_from == a.slot.seq and b.reused == 4
    assert memory.cells[b.slot.seq] == [9, 8, 7, 6] and ("copy", a.slot.seq, b.slot.seq) in memory.ops
    assert cache.stats["copies"] == 1 and cache.stats["evictions"] == 0
    consistent(cache, memory)


def test_the_least_recently_used_sequence_is_evicted_and_counted():
    memory = RecordingMemory()
    cache = SequenceCache(memory, 2)
    old = serve(cache, memory, [1, 1, 1])
    recent = serve(cache, memory, [2, 2, 2])
    newcomer = serve(cache, memory, [3, 3, 3])
    assert newcomer.slot is old.slot and newcomer.evicted == 1 and cache.stats["evictions"] == 1
    assert serve(cache, memory, [2, 2, 2]).slot is recent.slot  # the recent one survived, with its logits
    consistent(cache, memory)


def test_a_partial_match_keeps_the_matched_slot_when_an_empty_slot_exists():
    memory = RecordingMemory()
    cache = SequenceCache(memory, 3)
    parent = serve(cache, memory, [1, 2, 3], generated=[4, 5])
    child = cache.assign(np.array([1, 2, 3, 9], dtype=np.int32))
    assert child.slot is not parent.slot and child.copied_from == parent.slot.seq and child.reused == 3
    assert parent.slot.tokens.tolist() == [1, 2, 3, 4, 5]  # the parent's tail is kept for its own continuation
    consistent(cache, memory)


def test_every_slot_busy_means_wait():
    memory = RecordingMemory()
    cache = SequenceCache(memory, 2)
    for prompt in ([1, 2], [3, 4]):
        a = cache.assign(np.array(prompt, dtype=np.int32))
        evaluate(cache, memory, a.slot, prompt)
    assert cache.assign(np.array([5, 6], dtype=np.int32)) is None


def test_a_request_waits_for_a_prompt_being_evaluated_that_would_save_it_more():
    memory = RecordingMemory()
    cache = SequenceCache(memory, 4)
    tokens = np.array([4, 3, 2, 1], dtype=np.int32)
    a = cache.assign(tokens)
    assert cache.best_reuse(tokens) == 0
    assert cache.pending_reuse(tokens, {a.slot.seq: tokens}) == 4  # its logits will be known: nothing to evaluate
    longer = np.array([4, 3, 2, 1, 0], dtype=np.int32)
    assert cache.pending_reuse(longer, {a.slot.seq: tokens}) == 4
    assert cache.pending_reuse(tokens[:3], {a.slot.seq: tokens}) == 2  # no logits after 3 tokens


def test_a_slot_with_the_logits_after_the_prompt_is_preferred_to_an_equal_match_without():
    memory = RecordingMemory()
    cache = SequenceCache(memory, 4)
    prompt = np.array([1, 2, 3], dtype=np.int32)
    y = cache.assign(prompt)
    evaluate(cache, memory, y.slot, prompt)
    cache.snapshot(y.slot, np.zeros(4))  # the logits after [1, 2, 3]
    x = cache.assign(np.array([1, 2, 3, 7], dtype=np.int32))  # y is busy: a copy, then 7
    evaluate(cache, memory, x.slot, [7])
    cache.snapshot(x.slot, np.ones(4), keep_prompt_end=4)  # x keeps only the logits after [1, 2, 3, 7]
    cache.release(y.slot)
    cache.release(x.slot)  # x is the most recent, and shares all of [1, 2, 3] too
    again = cache.assign(prompt)
    assert again.slot is y.slot and again.reused == 3 and again.logits is not None
    consistent(cache, memory)


def _blob(n_stream: int, seq: int, header: bytes, section: bytes) -> bytes:
    streams = [struct.pack("=I", 0)] * n_stream
    streams[seq] = section
    return header + struct.pack("=I", n_stream) + b"".join(streams)


@pytest.mark.parametrize("header", [b"", b"\x11\x22\x33\x44\x00\x00\x00\x00"])
def test_restream_rewrites_the_stream_count_and_pads_the_empty_streams(header):
    section = struct.pack("=I", 3) + bytes(range(40))
    blob = _blob(8, 2, header, section)
    assert restream(blob, 8, 16, 2) == _blob(16, 2, header, section)


def test_restream_refuses_an_unexpected_layout():
    section = struct.pack("=I", 3) + bytes(range(40))
    assert restream(_blob(8, 2, b"", section), 4, 16, 2) is None  # another stream count
    other = bytearray(_blob(8, 2, b"", section))
    other[-1] = 7  # a trailing stream that is not empty
    assert restream(bytes(other), 8, 16, 2) is None


def test_a_copy_spares_the_slots_that_waiting_requests_will_reuse():
    """Resampling: parents A, B, C, D (D left no offspring); A's two children and B's and C's are
    waiting. A's second child needs a slot to copy A into: least recently used alone picks B (it
    finished before C and D), whose child would then evaluate B's text again; `wanted` spares B and C."""
    memory = RecordingMemory()
    cache = SequenceCache(memory, 4)
    parents = [serve(cache, memory, [1, k, k, k]).slot for k in (2, 3, 4, 5)]
    children = [np.array([1, k, k, k, 9], dtype=np.int32) for k in (2, 2, 3, 4)]
    wants = cache.wanted(children)
    assert wants == [parents[0].seq, parents[0].seq, parents[1].seq, parents[2].seq]
    first = cache.assign(children[0], frozenset(wants[1:]))
    second = cache.assign(children[1], frozenset(wants[2:]))
    assert first.slot is parents[0] and second.copied_from == parents[0].seq and second.slot is parents[3]
    for child, parent in zip(children[2:], parents[1:3]):
        a = cache.assign(child)
        assert a.slot is parent and a.reused == 4 and a.evicted == 0
    assert cache.stats["evictions"] == 1  # D only
    consistent(cache, memory)


def test_the_engine_spares_the_parents_of_waiting_offspring():
    """The same through the decode loop (`ToyLlama`'s engine on 4 slots): each child evaluates only
    the one token it adds to its parent's prompt, not the parent's prompt again."""
    from agents.backends.base import GenerationSettings
    from agents.backends.llama_chunks import ChunkBuilder
    from agents.backends.llama_engine import Job
    from agents.backends.llama_sampling import rng_for
    from tests.toy_llama import START, ToyLlama

    backend = ToyLlama()
    backend.n_seq_max = 4
    backend.load()
    engine = backend._engine
    settings = GenerationSettings(unit="token", max_tokens=1)

    def run_together(prompts: list[list[int]]) -> list:
        with engine._cond:  # all queued before the engine thread admits any
            futures = [engine.submit(Job(p, settings, ChunkBuilder(settings, backend._vocab), rng_for(i)))
                       for i, p in enumerate(prompts)]
        return [f.result(timeout=30) for f in futures]

    parents = [[START, k, k, k, k] for k in (1, 2, 4, 6)]
    run_together(parents)
    children = [parents[i] + [t] for i, t in ((0, 1), (0, 2), (1, 3), (2, 3))]
    before = engine.stats()["prefilled_tokens"]
    completions = run_together(children)
    assert engine.stats()["prefilled_tokens"] - before == 4
    assert [c.prefilled_tokens for c in completions] == [1, 1, 1, 1]
    backend.close()
