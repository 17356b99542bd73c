"""The batch context's batch layout (`agents.backends.llama_context`): llama.cpp, with one KV stream
per sequence, cuts a batch into micro-batches of consecutive sequence ids taken in batch order
(`split_equal(sequential=true)`), each a pass over the weights; `evaluate` lists the batch by
sequence id, so a step over consecutive sequences is one pass, and still returns the logits rows
in the order of its items.

`micro_batches` is checked against the rule on hand-made batches; the layout through llama.cpp's
own `llama_decode` on the embedded model (the batch it receives is recorded), and each returned row
against the same sequence evaluated alone. Tolerance: distinct prompts give logits that differ by
whole units, while one sequence alone and in a batch differs at most by kernel rounding (0 where
the kernels are batch-invariant; LOGIT_TOLERANCE = 0.25 covers the largest difference measured on
any CPU, see tests/test_llama_batching.py), so a row returned for the wrong item cannot pass.
"""

from __future__ import annotations

import numpy as np
import pytest

from agents.backends.llama_context import batch_order, micro_batches

LOGIT_TOLERANCE = 0.25
SCRAMBLED = [5, 2, 7, 0, 3, 6, 1, 4]


def items(*spec: tuple[int, int]) -> list[tuple[int, int, np.ndarray, bool]]:
    """(sequence id, number of tokens) -> batch items."""
    return [(seq, 0, np.zeros(n, dtype=np.int32), True) for seq, n in spec]


def test_micro_batches_follow_llamas_sequential_equal_split():
    assert micro_batches(items((0, 1), (1, 1), (2, 1), (3, 1))) == 1
    assert micro_batches(items((3, 1), (0, 1), (1, 1), (2, 1))) == 2  # 3 first: 0, 1, 2 need a second sweep
    assert micro_batches(items((3, 1), (2, 1), (1, 1), (0, 1))) == 4  # descending: one sequence per sweep
    assert micro_batches(items((0, 1), (1, 1), (5, 1), (6, 1))) == 2  # a gap in the ids
    assert micro_batches(items((0, 1), (1, 4))) == 2  # equal split: 1 token each, then the rest of 1
    order = batch_order(items((3, 1), (2, 1), (1, 1), (0, 1)))
    assert order == [3, 2, 1, 0]


@pytest.mark.llm
def test_evaluate_sends_sequences_in_id_order_and_returns_rows_in_item_order():
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from agents.backends.llama_context import BatchContext
    from agents.backends.embedded import embedded_model_path
    from agents.backends.llama_model import load_model

    model = load_model(llama_cpp, embedded_model_path(), False)
    prompts = {seq: np.asarray(model.tokenize(f"Story number {seq}: the {word}".encode(), True, False), dtype=np.int32)
               for seq, word in zip(range(8), ["sea", "moon", "keeper", "storm", "ship", "gull", "lamp", "rock"])}
    sent: list[list[int]] = []

    class Recording:  # llama.cpp itself, with the sequence ids of every decoded batch recorded
        def __getattr__(self, name):
            return getattr(llama_cpp, name)

        def llama_decode(self, ctx, batch):
            sent.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
            return llama_cpp.llama_decode(ctx, batch)

    def next_rows(together: bool) -> dict[int, np.ndarray]:
        """Each sequence's logits after its prompt and one more token: the extra tokens decoded in
        one batch listed in a scrambled order, or one sequence at a time."""
        context = BatchContext(Recording(), model, n_ctx=64, n_seq_max=8, n_batch=512, n_threads=1,
                               verbose=False, name="test")
        try:
            context.ensure(8)
            for seq, tokens in prompts.items():
                context.evaluate([(seq, 0, tokens, False)])
            step = [(seq, prompts[seq].size, np.array([13], dtype=np.int32), True) for seq in SCRAMBLED]
            if together:
                return dict(zip(SCRAMBLED, context.evaluate(step)))
            return {item[0]: context.evaluate([item])[0] for item in step}
        finally:
            context.close()

    try:
        alone = next_rows(together=False)
        batched = next_rows(together=True)
    finally:
        model.close()
    assert sent[-1] == sorted(SCRAMBLED) and micro_batches(items(*[(s, 1) for s in sent[-1]])) == 1
    spread = min(float(np.abs(alone[a] - alone[b]).max()) for a in prompts for b in prompts if a < b)
    assert spread > 4 * LOGIT_TOLERANCE  # a row given to the wrong item would be far off
    for seq in SCRAMBLED:
        assert float(np.abs(batched[seq] - alone[seq]).max()) <= LOGIT_TOLERANCE, seq
