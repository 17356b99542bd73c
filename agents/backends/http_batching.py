"""Autobatching of identical requests into one request with `n` (servers that honour `n`, e.g. vLLM).

After resampling, siblings (offspring of one parent) send the same prompt and prefix with
different seeds in the same step. On a server that honours `n`, the requests that arrive in one
turn of the event loop and differ only in their seed leave as *one* request with `n` = their number
(at most `MAX_N`): the prompt is sent, tokenised and prefilled once. The engine never sees it.

Seeds: the group's request carries the smallest of its seeds s (none if any request is unseeded);
vLLM seeds the i-th of n samples with s + i, so the group's samples are independent draws. The
choices go to the requests in increasing seed order, so the same set of requests gets the same
answers (as far as the server is deterministic: vLLM's numerics depend on the batch a sequence is
decoded in, so a request sent alone with seed s may draw other tokens than the group's first). Requests that differ in
anything else (prompt, prefix, settings) are *not* merged into one list-of-prompts request: vLLM
seeds every prompt of a list with the same seed, which would correlate particles.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from agents.backends.base import BackendError, Completion, GenerationRequest

if TYPE_CHECKING:
    from agents.backends.openai_compat import OpenAICompatible

MAX_N = 64


class SiblingBatcher:
    """Per backend and event loop: queues requests during one loop turn, then flushes them by group."""

    def __init__(self, backend: "OpenAICompatible") -> None:
        self.backend = backend
        self._queue: dict[str, list[tuple[GenerationRequest, asyncio.Future]]] = {}
        self._scheduled = False
        self._sending: set[asyncio.Task] = set()
        self.groups = 0
        """Requests sent with n > 1."""

    def submit(self, request: GenerationRequest, raw: bool) -> "asyncio.Future[Completion]":
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        key = f"{raw}|" + request.model_dump_json(exclude={"seed"})
        self._queue.setdefault(key, []).append((request, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        queue, self._queue, self._scheduled = self._queue, {}, False
        loop = asyncio.get_running_loop()
        for key, items in queue.items():
            raw_group = key.startswith("True|")
            items.sort(key=lambda item: (item[0].seed is None, item[0].seed or 0))
            for k in range(0, len(items), MAX_N):
                task = loop.create_task(self._send(items[k:k + MAX_N], raw_group))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    async def _send(self, items: list[tuple[GenerationRequest, asyncio.Future]], raw: bool) -> None:
        seeds = [r.seed for r, _ in items]
        lead = items[0][0] if None not in seeds else items[0][0].replaced(seed=None)
        if len(items) > 1:
            self.groups += 1
        try:
            out = await self.backend.generate(lead, n=len(items), raw=raw)
            if len(out) != len(items):
                raise BackendError(f"{self.backend.identity()}: asked for n={len(items)} choices, got {len(out)} "
                                   "(does the server honour n? pass n_supported=False)")
        except BaseException as exc:  # noqa: BLE001 - every request of the group sees the failure
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), completion in zip(items, out):
            if not future.done():
                future.set_result(completion)
