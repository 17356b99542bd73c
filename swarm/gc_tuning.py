"""Garbage-collector tuning for population runs.

A population run allocates millions of short-lived, acyclic objects (events, messages, segments,
spans); the cyclic collector's default young-generation threshold (700) makes it rescan the whole
population thousands of times (measured: 1.6x slower at N = 10,000; an end-of-run span drain 2.1x
slower). `relaxed_gc` collects less often, never not at all. Used by the policies' run loop, the Ray
segment workers and the OpenTelemetry span worker.

Runs overlap: a server runs many requests at once on one event loop (their blocks interleave, so
one may end while another is still inside), and the span worker is a thread. The blocks therefore
share one count of open blocks: the first to open raises the threshold and remembers the old one,
the last to close restores it. (A save-and-restore per block, as before, restored the raised value
whenever blocks interleaved, leaving the threshold raised after every run had ended.)
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from typing import Iterator

_lock = threading.Lock()
_open = 0
_saved: tuple[int, ...] | None = None


def _new_lock_in_child() -> None:
    """A process forked while another thread held the lock gets it locked forever: give the child a
    fresh one (the count stays: a child forked inside a block closes that block itself)."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


@contextlib.contextmanager
def relaxed_gc(threshold: int = 200_000) -> Iterator[None]:
    """Raise the young-generation threshold to at least `threshold` while any such block is open;
    the last block to close restores the threshold from before the first opened."""
    global _open, _saved
    with _lock:
        if _open == 0:
            _saved = gc.get_threshold()
        _open += 1
        current = gc.get_threshold()
        if current[0] < threshold:
            gc.set_threshold(threshold, *current[1:])
    try:
        yield
    finally:
        with _lock:
            _open -= 1
            if _open == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
