"""`OrderedWorker`: run submitted calls in submission order on one background thread, in the time
the submitting thread leaves idle.

What `OTelListener` uses to take span construction off the coordinator's critical path: the
coordinator submits a record (O(1)) and goes on with the next step; the worker builds the spans
while the coordinator waits for LLM calls. Guarantees:

- Order: calls run one at a time, in the order they were submitted (a step's spans are built after
  its run span opened and before the run span ends).
- Nothing is dropped: when the backlog exceeds `max_backlog` (in units of the submitters'
  `weight`, e.g. particle steps), `submit` blocks until the worker has caught up (backpressure
  bounds the memory held by pending records).
- `drain()` returns once every call submitted before it (or up to call number `until`) has finished.
- A call that raises is logged (the first time with its traceback) and the worker goes on.
- The thread is a daemon started on demand; it exits after `idle_s` seconds without work, so an
  idle listener holds no thread.

Politeness (CPython's GIL). A thread that wants the GIL takes it from the running one after the
switch interval (5 ms), and asyncio's event loop releases it at every `select`, even a
non-blocking one; so a naive worker takes about half of the interpreter from a busy coordinator
(measured under load, N = 200, 50 ms LLM: ×1.46 run time vs ×1.28 with spans built inline, ×1.15-1.18
with the politeness below). So a call may be a generator, and the
worker runs it in quanta of `quantum_s` (between two of its yields); before each quantum it
sleeps (which really releases the GIL) and reads the process's CPU clock: if the process's other
threads used more than `busy_fraction` of the pause, the coordinator is computing, not waiting,
and the worker sleeps again (pauses doubling from `pause_s` to `max_pause_s`). A worker that only
watches costs the coordinator at most a thread switch per pause. While someone waits in `drain()`
(or is blocked by backpressure) the submitter is idle by definition and the worker runs flat out.
"""

from __future__ import annotations

import collections
import inspect
import logging
import threading
import time
from typing import Any, Callable

log = logging.getLogger("observability.otel")


class OrderedWorker:
    """One background thread running calls in order (see the module docstring)."""

    def __init__(self, name: str, max_backlog: int = 50_000, idle_s: float = 1.0, *, quantum_s: float = 1e-3,
                 pause_s: float = 2e-4, max_pause_s: float = 2e-3, busy_fraction: float = 0.25) -> None:
        self.name = name
        self.max_backlog = max_backlog
        self.idle_s = idle_s
        self.quantum_s, self.pause_s, self.max_pause_s = quantum_s, pause_s, max_pause_s
        self.busy_fraction = busy_fraction
        self.quanta = self.busy_pauses = self.failures = 0
        self._draining = 0
        self._quantum_end = 0.0
        self._items: collections.deque[tuple[Callable[..., Any], tuple, int]] = collections.deque()
        self._cond = threading.Condition()
        self._backlog = 0
        self._submitted = 0
        self._done = 0
        self._blocked = 0
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any, weight: int = 1) -> int:
        """Queue `fn(*args)`; blocks while the backlog is over `max_backlog`. Returns the call's
        number, for `drain(until=...)`."""
        if threading.current_thread() is self._thread:  # from a call the worker is running
            self._call(fn, args)
            return self._done
        with self._cond:
            while self._backlog > 0 and self._backlog + weight > self.max_backlog:
                self._blocked += 1   # the submitter waits for the worker: no reason to be polite
                try:
                    self._cond.wait()
                finally:
                    self._blocked -= 1
            self._items.append((fn, args, weight))
            self._backlog += weight
            self._submitted += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._cond.notify_all()
            return self._submitted

    def drain(self, timeout_s: float | None = None, until: int | None = None) -> bool:
        """Wait until every call submitted so far (or up to call number `until`) has run; False if
        `timeout_s` passed first."""
        if threading.current_thread() is self._thread:
            return True
        with self._cond:
            target = self._submitted if until is None else until
            self._draining += 1
            try:
                return self._cond.wait_for(lambda: self._done >= target, timeout_s)
            finally:
                self._draining -= 1

    @property
    def pending(self) -> int:
        """Calls submitted and not finished yet."""
        with self._cond:
            return self._submitted - self._done

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._items and not self._cond.wait_for(lambda: bool(self._items), self.idle_s):
                    self._thread = None   # idle: a later submit starts a new thread
                    return
                fn, args, weight = self._items.popleft()
            self._call(fn, args, polite=True)
            with self._cond:
                self._backlog -= weight
                self._done += 1
                self._cond.notify_all()

    def _call(self, fn: Callable[..., Any], args: tuple, polite: bool = False) -> None:
        try:
            result = fn(*args)
            if inspect.isgenerator(result):
                for _ in result:
                    if polite and time.perf_counter() >= self._quantum_end:
                        self._wait_for_idle()
        except Exception:  # an observer must never cost the user the run
            self.failures += 1
            if self.failures == 1:
                log.exception("%s: %s failed; later failures are counted, not logged", self.name,
                              getattr(fn, "__name__", fn))

    def _wait_for_idle(self) -> None:
        """Between quanta: sleep until the submitting thread is not computing (see the module
        docstring), unless it is waiting for this worker anyway."""
        pause = self.pause_s
        while not (self._draining or self._blocked):
            others, start = time.process_time() - time.thread_time(), time.perf_counter()
            time.sleep(pause)
            elapsed = time.perf_counter() - start
            if time.process_time() - time.thread_time() - others <= self.busy_fraction * elapsed:
                break
            self.busy_pauses += 1
            pause = min(2 * pause, self.max_pause_s)
        self.quanta += 1
        self._quantum_end = time.perf_counter() + self.quantum_s
