"""The response cache: identical requests (backend, model, prompt, settings *and seed*) cost one call.

The key includes the request's seed, which the generation derives from the particle's random
stream and the site address, so independent particles never share a response: caching can make a
repeated or replayed call free, never two particles identical. Concurrent identical requests are
coalesced into one backend call. The cache can be saved to and loaded from JSONL (checkpoints).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Awaitable, Callable

from agents.backends.base import Completion, GenerationRequest


def request_key(identity: str, request: GenerationRequest) -> str:
    text = identity + "\n" + request.model_dump_json()
    return hashlib.sha256(text.encode()).hexdigest()


class ResponseCache:
    def __init__(self) -> None:
        self._done: dict[str, Completion] = {}
        self._pending: dict[str, asyncio.Future] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._done)

    async def get_or_call(self, key: str, call: Callable[[], Awaitable[Completion]]) -> Completion:
        if key in self._done:
            self.hits += 1
            return self._done[key]
        pending = self._pending.get(key)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        self.misses += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            completion = await call()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            self._pending.pop(key, None)
        self._done[key] = completion
        future.set_result(completion)
        return completion

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temp file + rename): a crash leaves the previous file intact."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for key, completion in self._done.items():
                fh.write(json.dumps({"key": key, "completion": completion.model_dump(mode="json")}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def load(self, path: str | os.PathLike[str]) -> int:
        """Add the entries of a saved cache; returns how many were read."""
        count = 0
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    self._done[row["key"]] = Completion.model_validate(row["completion"])
                    count += 1
        return count
