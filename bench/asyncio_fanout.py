"""The fake model call and the plain-asyncio fan-out that the orchestration benchmarks compare
against (bench/orchestration.py in the project's virtualenv, bench/orchestration_langgraph.py in
.venv-bench): standard library only, so both sides import this one file.

`fake_reply(latency)` is one model call as a bare coroutine (a *test double*: sleeps `latency`
seconds, 0 means no sleep at all, and returns "ok ok"); `run_asyncio(N, K, latency)` is the
baseline workload: N members gathered at once, each making K calls one after the other.
"""

from __future__ import annotations

import asyncio

REPLY = ("ok", " ok")


async def fake_reply(latency: float) -> str:
    if latency > 0:
        await asyncio.sleep(latency)
    return "".join(REPLY)


def run_asyncio(n_agents: int, n_messages: int, latency: float) -> None:
    """N members × K sequential `fake_reply` calls with plain asyncio (no framework)."""

    async def member() -> list[str]:
        return [await fake_reply(latency) for _ in range(n_messages)]

    async def team() -> None:
        await asyncio.gather(*(member() for _ in range(n_agents)))

    asyncio.run(team())
