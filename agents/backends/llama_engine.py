"""The decode loop of the batched llama.cpp backend: one thread, one `llama_decode` per step for
every request in flight, whatever agent or particle it comes from.

Each step (the shape of llama.cpp's `examples/parallel`, with requests joining and leaving):

 1. admit waiting requests: each gets a sequence slot from the prefix-sharing cache
    (`agents.backends.llama_kv`), which leaves only the prompt's unseen tail to evaluate (or
    nothing, when a snapshot holds the logits after the whole prompt);
 2. sample every request that has logits (from the last decode or a snapshot): the proposal rows
    of the whole batch at once (`agents.backends.llama_sampling`), then each request's
    `ChunkBuilder` draws its token from its row with the request's drawer (the proposal itself, or
    guided by a constraint: `agents.backends.llama_guided`); a finished request leaves (its slot
    stays as a cache entry with its last logits);
 3. one batch: the kept token of every request still generating (one position each, logits out)
    and, within `n_batch`, the next chunk of every prompt being prefilled (logits out only at the
    prompt's last token), evaluated by the context in one `llama_decode`.

The context (`agents.backends.llama_context`) gives every slot its own KV stream, with flash
attention: the configuration in which a sequence's logits are the same bit for bit whatever else is
in the batch (see `agents.backends.llama_cpp`), so how requests are grouped into steps changes
throughput, never results.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import Counter, deque
from typing import Any

import numpy as np

from agents.backends.base import BackendError, GenerationSettings, Usage
from agents.backends.llama_chunks import ChunkBuilder
from agents.backends.llama_context import BatchContext, DecodeFailed
from agents.backends.llama_kv import Assignment
from agents.backends.llama_sampling import batch_proposal

GATHER_GAP = 0.1
GATHER_CAP = 0.5
ARRIVAL_GAPS = 4.0
"""Gathering: when fewer requests are in flight than half the recent widest batch and requests are
still arriving, the engine waits while they keep coming: it stops at the first silence longer than
ARRIVAL_GAPS × the usual interval between two requests of a burst (an exponential average of the
intervals under 50 ms) or GATHER_GAP × the recent step time, whichever is shorter, and after
GATHER_CAP × the step time at most (2 ms and 10 ms before any step was timed). So requests a program
issues together (an SMC step's particles) decode together instead of one step apart, while a
request that comes alone waits only a few of its usual intervals. Throughput only: results do not
depend on how requests are grouped."""

WANTED_LOOKAHEAD = 32
"""Admission spares the idle slots that the next WANTED_LOOKAHEAD waiting requests will reuse (a
resampled particle's parent stays until its offspring are admitted); bounded because each costs a
scan of the slots, and a queue of thousands (10,000 particles on 256 slots) needs no more."""

SHAPES_KEPT = 1 << 16
"""Decode steps whose shape (sequences, tokens) `DecodeEngine.shapes` keeps."""


class Job:
    """One request inside the engine: its prompt, its chunk (which draws its tokens), its random
    stream, where it stands."""

    def __init__(self, tokens: list[int], settings: GenerationSettings, chunk: ChunkBuilder,
                 rng: np.random.Generator, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.tokens = np.asarray(tokens, dtype=np.int32)
        self.settings = settings
        self.chunk = chunk
        self.rng = rng
        self.loop = loop
        """The event loop of an async caller (call from it): the job's future is then that loop's,
        and the engine wakes the loop once per step for all its finished jobs."""
        self.future: Any = loop.create_future() if loop is not None else concurrent.futures.Future()
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
    """Serves `Job`s on one batch context from one thread (see the module docstring).

    `context`: a `BatchContext` (llama.cpp), or anything with its interface (`ensure`, `evaluate`,
    `close`, `cache`, `capacity`, `resizes`, `n_ctx`, `n_batch`): the test double of
    tests/toy_llama.py evaluates a table instead of a model, through this same loop."""

    def __init__(self, context: BatchContext, *, name: str = "llama_cpp", model_name: str = "") -> None:
        self.model_name, self.name = model_name, name
        self.n_ctx, self.n_batch = context.n_ctx, context.n_batch
        self._cond = threading.Condition()
        self._incoming: deque[Job] = deque()
        self._waiting: list[Job] = []
        self._active: list[Job] = []
        self._closing = False
        self._outbox: dict[Any, list[tuple[Any, Any, BaseException | None]]] = {}
        self._last_arrival = 0.0
        self._arrival_gap = 0.0
        """Exponential moving average of the interval between two requests of a burst (seconds)."""
        self._step_time = 0.0
        """Exponential moving average of a decode step's wall time (seconds)."""
        self._width = 0.0
        """The recent widest batch (decays by 10% a step)."""
        self._thread: threading.Thread | None = None
        self._kv = context
        self.counts = {"requests": 0, "decode_steps": 0, "batch_tokens": 0, "prefilled_tokens": 0,
                       "generated_tokens": 0, "completion_tokens": 0, "max_batch_sequences": 0,
                       "longest_sequence": 0}
        self.seconds = {"decode": 0.0, "sample": 0.0, "step": 0.0}
        self.shapes: deque[tuple[int, int]] = deque(maxlen=SHAPES_KEPT)
        """(sequences, tokens) of the recent decode steps, oldest first (benchmarks replay them)."""

    # ------------------------------------------------------------------ the public side (any thread)
    def submit(self, job: Job) -> Any:
        """Queue a job; returns its future (the caller's loop's, or a concurrent.futures one)."""
        with self._cond:
            if self._closing:
                raise BackendError(f"{self.name}: the backend is closed")
            self._incoming.append(job)
            now = time.perf_counter()
            interval, self._last_arrival = now - self._last_arrival, now
            if interval < 0.05:
                self._arrival_gap = interval if not self._arrival_gap else 0.8 * self._arrival_gap + 0.2 * interval
            self.counts["requests"] += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"{self.name}-decode", daemon=True)
                self._thread.start()
            self._cond.notify()
        return job.future

    def stats(self) -> dict[str, int]:
        cache = self._kv.cache.stats if self._kv.cache is not None else {}
        seconds = {f"{k}_seconds": round(v, 3) for k, v in self.seconds.items()}
        return {**self.counts, **cache, **seconds, "slots": self._kv.capacity, "context_resizes": self._kv.resizes,
                "micro_batches": getattr(self._kv, "micro_batches", 0),
                "in_flight": len(self._active)}

    def close(self) -> None:
        """Stop the thread (requests still waiting fail with BackendError) and free the context."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        self._kv.close()

    # ------------------------------------------------------------------ the loop (engine thread)
    def _run(self) -> None:
        """The thread: wait for work, gather, step. If a step raises, every request in flight fails
        with that error, the context (whose cache may no longer match its bookkeeping) is dropped,
        and the next request starts a new thread."""
        try:
            while True:
                with self._cond:
                    while not (self._incoming or self._waiting or self._active or self._closing):
                        self._cond.wait()
                    if self._closing:
                        break
                    self._gather_locked()
                    self._waiting.extend(self._incoming)
                    self._incoming.clear()
                self._step()
        except BaseException as exc:  # noqa: BLE001 - every caller in flight hears about it
            self._stop(BackendError(f"{self.name}: the decode loop failed: {exc!r}"), drop_context=True)
        else:
            self._stop(BackendError(f"{self.name}: the backend was closed"), drop_context=False)

    def _stop(self, error: BackendError, drop_context: bool) -> None:
        """End this thread: fail every request it holds; a request submitted after this starts a new one."""
        with self._cond:
            jobs = [*self._active, *self._waiting, *self._incoming]
            self._active, self._waiting = [], []
            self._incoming.clear()
            if drop_context:
                self._kv.close()
            self._thread = None
        for job in jobs:
            self._resolve(job, None, error)
        self._flush()

    def _gather_locked(self) -> None:
        """Wait while requests keep arriving, if the batch would be narrow (see GATHER_GAP)."""
        gap = GATHER_GAP * self._step_time if self._step_time else 0.002
        if self._arrival_gap:
            gap = min(gap, ARRIVAL_GAPS * self._arrival_gap)
        cap = GATHER_CAP * self._step_time if self._step_time else 0.01
        in_flight = len(self._active) + len(self._waiting) + len(self._incoming)
        now = time.perf_counter()
        if (self._active and in_flight >= self._width / 2) or now - self._last_arrival > gap:
            return
        deadline = now + cap
        while not self._closing and now < deadline and now - self._last_arrival <= gap:
            self._cond.wait(min(gap - (now - self._last_arrival), deadline - now) + 1e-4)
            now = time.perf_counter()

    def _step(self) -> None:
        """Admit, sample every request with logits (from the last decode or a snapshot), then decode
        the drawn tokens and the prompts' next chunks in one batch."""
        t0 = time.perf_counter()
        self._drop_cancelled()
        self._admit()
        ready = [job for job in self._active if job.row is not None]
        if ready:
            self._sample(ready)
        t1 = time.perf_counter()
        entries = self._fill_batch()
        if entries:
            self._decode(entries)
            self._width = max(0.9 * self._width, float(len(entries)))
        t2 = time.perf_counter()
        self._step_time = t2 - t0 if not self._step_time else 0.8 * self._step_time + 0.2 * (t2 - t0)
        self.seconds["sample"] += t1 - t0
        self.seconds["step"] += t2 - t0
        self._flush()

    def _admit(self) -> None:
        if not self._waiting:
            return
        if not self._active and len(self._waiting) > self._kv.capacity:
            self._kv.ensure(len(self._waiting))
        cache = self._kv.cache
        ahead = {j.slot.seq: j.todo for j in self._active if j.todo.size}
        later: list[Job] = []
        # idle slots that the next requests in line will reuse: spared if possible
        wants = cache.wanted([j.tokens for j in self._waiting[:min(cache.idle_count(), WANTED_LOOKAHEAD)]])
        waiting_for = Counter(wants)
        for i, job in enumerate(self._waiting):
            if ahead and cache.pending_reuse(job.tokens, ahead) > cache.best_reuse(job.tokens):
                later.append(job)  # a prompt it shares is being evaluated now: copy it next step
                continue
            if i < len(wants):
                waiting_for[wants[i]] -= 1
            assignment = cache.assign(job.tokens, frozenset(seq for seq, n in waiting_for.items() if n > 0))
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
        t0 = time.perf_counter()
        try:
            rows = self._kv.evaluate([(job.slot.seq, job.slot.tokens.size, tokens, wants)
                                      for job, tokens, wants in entries])
        except DecodeFailed as exc:
            for job, _, _ in entries:
                self._fail(job, exc)
            return
        finally:
            self.seconds["decode"] += time.perf_counter() - t0
        n_tokens = sum(tokens.size for _, tokens, _ in entries)
        self.counts["decode_steps"] += 1
        self.counts["batch_tokens"] += n_tokens
        self.counts["max_batch_sequences"] = max(self.counts["max_batch_sequences"], len(entries))
        self.shapes.append((len(entries), n_tokens))
        for job, tokens, _ in entries:
            self._kv.cache.commit(job.slot, tokens)
            if job.pending is not None:
                job.pending = None
                self.counts["generated_tokens"] += 1
            else:
                job.todo = job.todo[tokens.size:]
                job.prefilled += tokens.size
                self.counts["prefilled_tokens"] += tokens.size
        for (job, _, _), row in zip([e for e in entries if e[2]], rows):
            job.row = row
            if job.slot.tokens.size == job.tokens.size:  # the end of the prompt: worth keeping
                self._kv.cache.snapshot(job.slot, job.row)

    def _sample(self, ready: list[Job]) -> None:
        rows = batch_proposal(np.stack([j.row for j in ready]), [j.settings.temperature for j in ready],
                              [j.settings.top_p for j in ready])
        for job, proposal in zip(ready, rows):
            row, job.row = job.row, None
            try:
                token = job.chunk.step(proposal, job.rng, room=job.slot.tokens.size < self.n_ctx)
            except Exception as exc:  # noqa: BLE001 - a bad request (e.g. a failing constraint) fails alone
                self._fail(job, exc)
                continue
            if token is None:
                self._finish(job, row)
            else:
                job.pending = token

    def _finish(self, job: Job, row: np.ndarray) -> None:
        self._kv.cache.snapshot(job.slot, row, keep_prompt_end=job.tokens.size)
        self._kv.cache.release(job.slot)
        self._active.remove(job)
        self.counts["completion_tokens"] += len(job.chunk.ids)
        self.counts["longest_sequence"] = max(self.counts["longest_sequence"], job.slot.tokens.size + 1)
        usage = Usage(input_tokens=int(job.tokens.size), output_tokens=len(job.chunk.pieces))
        completion = job.chunk.completion(usage=usage, latency_s=time.perf_counter() - job.started,
                                          model=self.model_name, backend=self.name, reused=job.reused,
                                          prefilled=job.prefilled, evictions=job.evictions)
        self._resolve(job, completion, None)

    def _fail(self, job: Job, exc: BaseException) -> None:
        if job.slot is not None:
            self._kv.cache.forget(job.slot)
            self._kv.cache.release(job.slot)
        if job in self._active:
            self._active.remove(job)
        self._resolve(job, None, exc)

    def _resolve(self, job: Job, result: Any, error: BaseException | None) -> None:
        """Settle a job's future: a concurrent one now, a loop's one at the end of the step."""
        if job.loop is not None:
            self._outbox.setdefault(job.loop, []).append((job.future, result, error))
        elif not job.future.done():
            (job.future.set_result(result) if error is None else job.future.set_exception(error))

    def _flush(self) -> None:
        """One wake-up per event loop for all the jobs of this step (not one per job)."""
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # the caller's loop is closed: nobody waits any more
                pass

    def _drop_cancelled(self) -> None:
        self._waiting = [j for j in self._waiting if not j.future.cancelled()]
        for job in [j for j in self._active if j.future.cancelled()]:
            self._kv.cache.release(job.slot)  # its committed tokens are valid: it stays a cache entry
            self._active.remove(job)


def _settle(items: list[tuple[Any, Any, BaseException | None]]) -> None:
    """In the caller's event loop: set each future that is still waiting."""
    for future, result, error in items:
        if not future.done():
            (future.set_result(result) if error is None else future.set_exception(error))
