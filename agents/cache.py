"""The response cache: identical requests (backend, model, prompt, settings *and seed*) cost one call.

The key includes the request's seed, which the generation derives from the particle's random
stream and the site address, so independent particles never share a response: caching can make a
repeated or replayed call free, never two particles identical. Concurrent identical requests are
coalesced into one backend call. The cache can be saved to and loaded from JSONL (checkpoints).

Journal: `ResponseCache(journal=path)` first loads the responses already in `path`, then appends every
new completion to it as soon as the call completes (one `os.write` of a whole line, in append mode),
so a process killed at any moment loses no completed call: a resumed run finds them all (the
checkpoint directory's `responses.jsonl`, see `swarm.checkpoint`). A last line without its newline
(the process died mid-write) is ignored; a write that fails (disk full) raises `CacheJournalError`.
Lines are not fsynced one by one (`fsync=True` does): a killed process loses nothing, a power cut
may lose the last calls, which are then made again.

Memory: the cache keeps at most `max_entries` new completions in memory (least recently used first
out), plus every completion read back from a journal (the calls a resumed run must not repeat).
Replay reads recorded values from the global trace, never from the cache, so an evicted response
costs nothing but a repeated call in the rare case the same request (same seed and site) is made
again; the journal on disk keeps every one.

`run_cache()` is the cache of the current run: one per policy run (process-wide outside runs),
journaled into the run's checkpoint directory when the run checkpoints (`swarm.checkpoint`), so a
resumed run repeats no call. Local and Ray-hosted agents both call through `journaled`, which
within a run uses only the journal (recorded completions on resume, new ones appended) and neither
the in-memory entries nor the coalescing above: no request recurs within a run.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Awaitable, Callable

from agents.backends.base import Completion, GenerationRequest
from agents.json_codec import dumps_exact, loads
from swarm.checkpoint import CHECKPOINT_DIR_KEY, RESPONSE_JOURNAL
from swarm.errors import SwarmError
from swarm.effects import run_scope


class CacheJournalError(SwarmError):
    """The response journal could not be written or read (the path and the cause are named)."""


def request_key(identity: str, request: GenerationRequest) -> str:
    text = identity + "\n" + request.model_dump_json()
    return hashlib.sha256(text.encode()).hexdigest()


def _line(key: str, completion: Completion) -> bytes:
    """One JSONL record: the completion's fields (what `model_dump(mode="python")` gives for these
    plain models, at a third of the cost), -inf log-probabilities written as -Infinity (pydantic's
    JSON would write null), through orjson when that writes the same (`agents.json_codec`)."""
    return dumps_exact({"key": key, "completion": completion.__dict__}) + b"\n"


class ResponseCache:
    def __init__(self, journal: str | os.PathLike[str] | None = None, *, fsync: bool = False,
                 max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError(f"ResponseCache: max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._done: OrderedDict[str, Completion] = OrderedDict()
        self._loaded: dict[str, Completion] = {}
        self._pending: dict[str, asyncio.Future | None] = {}
        """Requests in flight; a future once a second caller waits for the same one."""
        self.hits = 0
        self.misses = 0
        self.journal = Path(journal) if journal is not None else None
        self.fsync = fsync
        self.loaded = 0
        """Responses read back from the journal when the cache was created."""
        self._fd: int | None = None
        if self.journal is not None and self.journal.exists():
            self.loaded = self.load(self.journal)

    def __len__(self) -> int:
        return len(self._done) + len(self._loaded)

    async def get_or_call(self, key: str, call: Callable[[], Awaitable[Completion]]) -> Completion:
        done = self._done.get(key) or self._loaded.get(key)
        if done is not None:
            self.hits += 1
            if key in self._done:
                self._done.move_to_end(key)
            return done
        if key in self._pending:  # the same request is in flight: wait for its completion
            self.hits += 1
            future = self._pending[key]
            if future is None:  # the first waiter makes the future the call will resolve
                future = self._pending[key] = asyncio.get_running_loop().create_future()
            return await asyncio.shield(future)
        self.misses += 1
        self._pending[key] = None
        try:
            completion = await call()
        except BaseException as exc:
            future = self._pending.pop(key, None)
            if future is not None:
                future.set_exception(exc)
                future.exception()  # mark retrieved: waiters re-raise it, nobody logs it as lost
            raise
        future = self._pending.pop(key, None)
        self._remember(key, completion)
        if future is not None:
            future.set_result(completion)
        if self.journal is not None:
            self._append(key, completion)
        return completion

    async def journaled(self, identity: str, request: GenerationRequest,
                        call: Callable[[], Awaitable[Completion]]) -> Completion:
        """A run's call (`run_cache`): straight to `call()` when the run journals nothing; in a
        checkpointed run, the completion read back from the journal (a resumed run repeats no
        call), else `call()`, journaled as soon as it completes. No in-memory entry and no
        coalescing: within a run no request is made twice (its seed is the particle's stream and
        site, and replay reads recorded values from the global trace), so they would only cost."""
        if self.journal is None:
            return await call()
        key = request_key(identity, request)
        done = self._loaded.get(key)
        if done is not None:
            self.hits += 1
            return done
        self.misses += 1
        completion = await call()
        self._append(key, completion)
        return completion

    def _remember(self, key: str, completion: Completion) -> None:
        self._done[key] = completion
        if len(self._done) > self.max_entries:
            self._done.popitem(last=False)

    def _append(self, key: str, completion: Completion) -> None:
        assert self.journal is not None
        try:
            if self._fd is None:
                self._fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            view = memoryview(_line(key, completion))
            while view:
                view = view[os.write(self._fd, view):]
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            raise CacheJournalError(f"response journal {self.journal}: could not record a completed call: "
                                    f"{exc.strerror or exc}") from exc

    def close(self) -> None:
        """Close the journal's descriptor (it is reopened by the next write)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temp file + rename): a crash leaves the previous file intact."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as fh:
            for key, completion in [*self._loaded.items(), *self._done.items()]:
                fh.write(_line(key, completion))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def load(self, path: str | os.PathLike[str]) -> int:
        """Add the entries of a saved cache or journal; returns how many were read. A last line
        without its newline (a writer killed mid-line) is skipped; any other bad line raises."""
        count = 0
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        for number, line in enumerate(lines[:-1], start=1):  # lines[-1] is "" or a torn tail
            if not line.strip():
                continue
            try:
                row = loads(line)
                self._loaded[row["key"]] = Completion.model_validate(row["completion"])
            except (ValueError, KeyError, TypeError) as exc:
                raise CacheJournalError(f"response cache {path}, line {number}: {type(exc).__name__}: {exc}") from None
            count += 1
        return count


# -- the run's cache --------------------------------------------------------------------------------
def run_cache() -> ResponseCache:
    """The response cache of the current run (one per policy run, and per run in each Ray worker
    process; process-wide outside runs), journaled to the run's checkpoint directory when it has one
    (`swarm.checkpoint`). The run scope carries the directory wherever the particle executes."""
    scope = run_scope()
    cache = scope.get("agents.cache")
    if cache is None:
        directory = scope.get(CHECKPOINT_DIR_KEY)
        journal = os.path.join(directory, RESPONSE_JOURNAL) if directory else None
        cache = scope["agents.cache"] = ResponseCache(journal=journal)
    return cache
