"""The decode loop of the batched llama.cpp backend: one thread, one `llama_decode` per step for
every request in flight, whatever agent or particle it comes from.

Each step (the shape of llama.cpp's `examples/parallel`, with requests joining and leaving):

 1. admit waiting requests: each gets a sequence slot from the prefix-sharing cache
    (`agents.backends.llama_kv`), which leaves only the prompt's unseen tail to evaluate;
 2. build one `llama_batch`: the last drawn token of every decoding request (one position each,
    logits out) and, within `n_batch`, the next chunk of every prompt being prefilled (logits out
    only at the prompt's last token); run `llama_decode` once;
 3. sample every request that has logits now, vectorised over the batch (`llama_sampling`), and
    give each drawn token to its request's `ChunkBuilder`; a finished request leaves (its slot stays
    as a cache entry with the last logits), the others decode their token in the next step.

The context has one KV stream per slot (`kv_unified = false`) and flash attention, the configuration
in which llama.cpp's CPU kernels give a sequence the same logits bit for bit whatever else is in the
batch (see `agents.backends.llama_cpp`). Slots grow on demand (a new context, when no request is
decoding) from 8 up to `n_seq_max`, so memory follows the concurrency a program actually has.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from agents.backends.base import BackendError, GenerationSettings, Usage
from agents.backends.llama_chunks import ChunkBuilder, LlamaCppCompletion
from agents.backends.llama_kv import Assignment, LlamaMemory, SequenceCache
from agents.backends.llama_sampling import TokenDrawer, batch_proposal, draw_token

INITIAL_SLOTS = 8
GATHER_S = 0.003
"""When the engine wakes from idle, it waits up to this long while requests keep arriving, so the
requests a program issues together start in the same step (throughput only: results do not depend
on how requests are grouped)."""


class Job:
    """One request inside the engine: its prompt, its chunk, its random stream, where it stands."""

    def __init__(self, tokens: list[int], settings: GenerationSettings, chunk: ChunkBuilder,
                 rng: np.random.Generator, drawer: TokenDrawer = draw_token) -> None:
        self.tokens = np.asarray(tokens, dtype=np.int32)
        self.settings = settings
        self.chunk = chunk
        self.rng = rng
        self.drawer = drawer
        self.future: concurrent.futures.Future[LlamaCppCompletion] = concurrent.futures.Future()
        self.started = time.perf_counter()
        self.slot: Any = None
        self.todo = self.tokens[:0]
        """Prompt tokens still to evaluate."""
        self.pending: int | None = None
        """A drawn, kept token to evaluate next."""
        self.row: np.ndarray | None = None
        """Logits to sample from now."""
        self.reused = self.prefilled = self.evictions = 0

    def attach(self, a: Assignment) -> None:
        self.slot, self.reused, self.evictions, self.row = a.slot, a.reused, a.evicted, a.logits
        self.todo = self.tokens[a.reused:] if a.logits is None else self.tokens[:0]


class DecodeEngine:
    """Serves `Job`s on one llama.cpp context from one thread (see the module docstring)."""

    def __init__(self, llama_cpp: Any, model: Any, *, n_ctx: int, n_seq_max: int, n_threads: int,
                 n_batch: int = 512, verbose: bool = False, name: str = "llama_cpp", model_name: str = "") -> None:
        self._lib, self._model = llama_cpp, model
        self.model_name = model_name
        self.n_ctx, self.n_seq_max, self.n_threads = n_ctx, n_seq_max, n_threads
        self.n_batch = max(n_batch, n_seq_max)
        self.verbose, self.name = verbose, name
        self.n_vocab = model.n_vocab()
        self._cond = threading.Condition()
        self._incoming: deque[Job] = deque()
        self._waiting: list[Job] = []
        self._active: list[Job] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._ctx: Any = None
        self._batch: Any = None
        self._cache: SequenceCache | None = None
        self.capacity = 0
        self.counts = {"requests": 0, "decode_steps": 0, "batch_tokens": 0, "prefilled_tokens": 0,
                       "generated_tokens": 0, "max_batch_sequences": 0, "context_resizes": 0}

    # ------------------------------------------------------------------ the public side (any thread)
    def submit(self, job: Job) -> concurrent.futures.Future[LlamaCppCompletion]:
        with self._cond:
            if self._closing:
                raise BackendError(f"{self.name}: the backend is closed")
            self._incoming.append(job)
            self.counts["requests"] += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"{self.name}-decode", daemon=True)
                self._thread.start()
            self._cond.notify()
        return job.future

    def stats(self) -> dict[str, int]:
        cache = self._cache.stats if self._cache is not None else {}
        return {**self.counts, **cache, "slots": self.capacity, "in_flight": len(self._active)}

    def close(self) -> None:
        """Stop the thread (requests still waiting fail with BackendError) and free the context."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._free_context()

    # ------------------------------------------------------------------ the loop (engine thread)
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._incoming or self._waiting or self._active or self._closing):
                        self._cond.wait()
                    if self._closing:
                        return
                    if not self._active and self._incoming:
                        self._gather_locked()
                    self._waiting.extend(self._incoming)
                    self._incoming.clear()
                self._step()
        except BaseException as exc:  # noqa: BLE001 - every waiting caller must hear about it
            self._fail_all(BackendError(f"{self.name}: the decode thread failed: {exc!r}"))
            raise
        finally:
            self._fail_all(BackendError(f"{self.name}: the backend was closed"))

    def _gather_locked(self) -> None:
        deadline, seen = time.perf_counter() + GATHER_S, -1
        while len(self._incoming) != seen and time.perf_counter() < deadline:
            seen = len(self._incoming)
            self._cond.wait(GATHER_S / 6)

    def _step(self) -> None:
        self._drop_cancelled()
        self._admit()
        entries = self._fill_batch()
        if entries:
            self._decode(entries)
        ready = [job for job in self._active if job.row is not None]
        if ready:
            self._sample(ready)

    def _admit(self) -> None:
        if not self._waiting:
            return
        if not self._active and len(self._waiting) > self.capacity:
            self._open(len(self._waiting))
        assert self._cache is not None
        ahead = {j.slot.seq: j.todo for j in self._active if j.todo.size}
        later: list[Job] = []
        for i, job in enumerate(self._waiting):
            if ahead and self._cache.pending_match(job.tokens, ahead) > self._cache.best_match(job.tokens)[1]:
                later.append(job)  # a prompt it shares is being evaluated now: copy it next step
                continue
            assignment = self._cache.assign(job.tokens)
            if assignment is None:  # every slot is busy: wait, in order
                later.extend(self._waiting[i:])
                break
            job.attach(assignment)
            self._active.append(job)
            if job.todo.size:
                ahead[job.slot.seq] = job.todo
        self._waiting = later

    def _fill_batch(self) -> list[tuple[Job, np.ndarray, bool]]:
        """(job, tokens to evaluate, logits wanted) for this step, decoding requests first."""
        entries = [(j, np.array([j.pending], dtype=np.int32), True) for j in self._active if j.pending is not None]
        budget = self.n_batch - len(entries)
        for job in self._active:
            if job.todo.size and budget > 0:
                take = job.todo[:budget]
                entries.append((job, take, take.size == job.todo.size))
                budget -= take.size
        return entries

    def _decode(self, entries: list[tuple[Job, np.ndarray, bool]]) -> None:
        b, i, outputs = self._batch, 0, []
        for job, tokens, wants in entries:
            start = job.slot.tokens.size
            for k, token in enumerate(tokens.tolist()):
                b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = token, start + k, 1, job.slot.seq
                b.logits[i] = wants and k == tokens.size - 1
                i += 1
            if wants:
                outputs.append((job, i - 1))
        b.n_tokens = i
        rc = self._lib.llama_decode(self._ctx, b)
        if rc != 0:
            for job, _, _ in entries:
                self._fail(job, BackendError(f"{self.name}: llama_decode returned {rc} on a batch of {i} tokens"))
            return
        self.counts["decode_steps"] += 1
        self.counts["batch_tokens"] += i
        self.counts["max_batch_sequences"] = max(self.counts["max_batch_sequences"], len(entries))
        for job, tokens, _ in entries:
            self._cache.commit(job.slot, tokens)
            if job.pending is not None:
                job.pending = None
                self.counts["generated_tokens"] += 1
            else:
                job.todo = job.todo[tokens.size:]
                job.prefilled += tokens.size
                self.counts["prefilled_tokens"] += tokens.size
        for job, index in outputs:
            ptr = self._lib.llama_get_logits_ith(self._ctx, index)
            job.row = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
            if job.slot.tokens.size == job.tokens.size:  # the end of the prompt: worth keeping
                self._cache.snapshot(job.slot, job.row)

    def _sample(self, ready: list[Job]) -> None:
        rows = batch_proposal(np.stack([j.row for j in ready]), [j.settings.temperature for j in ready],
                              [j.settings.top_p for j in ready])
        for job, proposal in zip(ready, rows):
            row, job.row = job.row, None
            try:
                draw = proposal.draw(job.rng, job.drawer)
                done = job.chunk.offer(draw, proposal, room=job.slot.tokens.size < self.n_ctx)
            except Exception as exc:  # noqa: BLE001 - a bad request fails alone
                self._fail(job, exc)
                continue
            if done:
                self._finish(job, row)
            else:
                job.pending = draw.token

    def _finish(self, job: Job, row: np.ndarray) -> None:
        self._cache.snapshot(job.slot, row, keep_prompt_end=job.tokens.size)
        self._cache.release(job.slot)
        self._active.remove(job)
        usage = Usage(input_tokens=int(job.tokens.size), output_tokens=len(job.chunk.pieces))
        completion = job.chunk.completion(usage=usage, latency_s=time.perf_counter() - job.started,
                                          model=self.model_name, backend=self.name, reused=job.reused,
                                          prefilled=job.prefilled, evictions=job.evictions)
        if not job.future.done():
            job.future.set_result(completion)

    def _fail(self, job: Job, exc: BaseException) -> None:
        if job.slot is not None:
            self._cache.forget(job.slot)
            self._cache.release(job.slot)
        if job in self._active:
            self._active.remove(job)
        if not job.future.done():
            job.future.set_exception(exc)

    def _fail_all(self, exc: BaseException) -> None:
        with self._cond:
            jobs = [*self._active, *self._waiting, *self._incoming]
            self._active, self._waiting = [], []
            self._incoming.clear()
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(exc)

    def _drop_cancelled(self) -> None:
        self._waiting = [j for j in self._waiting if not j.future.cancelled()]
        for job in [j for j in self._active if j.future.cancelled()]:
            self._cache.release(job.slot)  # its committed tokens are valid: it stays a cache entry
            self._active.remove(job)

    # ------------------------------------------------------------------ the llama.cpp context
    def _open(self, wanted: int) -> None:
        """(Re)create the context with enough slots for `wanted` requests (power of two, at least
        INITIAL_SLOTS, at most n_seq_max). Cached sequences are dropped; nothing is decoding."""
        capacity = INITIAL_SLOTS
        while capacity < wanted:
            capacity *= 2
        capacity = min(max(capacity, self.capacity), self.n_seq_max)
        if self._ctx is not None and capacity == self.capacity:
            return
        if self._ctx is not None:
            self.counts["context_resizes"] += 1
        self._free_context()
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
        self._ctx, self.capacity = ctx, capacity
        self._batch = lib.llama_batch_init(self.n_batch, 0, 1)
        previous = self._cache
        self._cache = SequenceCache(LlamaMemory(lib, lib.llama_get_memory(ctx)), capacity)
        if previous is not None:
            self._cache.stats = previous.stats

    def _free_context(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
            self._ctx = None
        self.capacity = 0
