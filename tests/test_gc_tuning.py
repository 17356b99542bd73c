"""`relaxed_gc`: the threshold is raised while any block is open and restored when the last closes,
however the blocks of concurrent runs interleave (the old save-and-restore per block left it raised)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading

import pytest

import policies
from swarm import Bernoulli, factor, sample
from swarm.gc_tuning import relaxed_gc


@pytest.fixture(autouse=True)
def default_threshold():
    old = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*old)


def test_interleaved_blocks_restore_the_threshold_when_the_last_closes():
    first, second = relaxed_gc(), relaxed_gc()
    first.__enter__()
    second.__enter__()
    assert gc.get_threshold()[0] == 200_000
    first.__exit__(None, None, None)  # the first closes while the second is still open
    assert gc.get_threshold()[0] == 200_000
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)


def test_an_exception_in_the_block_still_restores():
    with pytest.raises(RuntimeError):
        with relaxed_gc():
            raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_is_kept_and_restored():
    gc.set_threshold(500_000, 10, 10)
    with relaxed_gc():
        assert gc.get_threshold()[0] == 500_000
    assert gc.get_threshold() == (500_000, 10, 10)


def test_blocks_in_threads():
    inside, release = threading.Barrier(5), threading.Event()

    def worker() -> None:
        with relaxed_gc():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    inside.wait()
    assert gc.get_threshold()[0] == 200_000
    release.set()
    for t in threads:
        t.join()
    assert gc.get_threshold() == (700, 10, 10)


def _program():
    x = sample("x", Bernoulli(0.5))
    factor("f", 0.1 * x)
    y = sample("y", Bernoulli(0.5))
    return int(x) + int(y)


def test_concurrent_runs_leave_the_default_threshold():
    """64 overlapping SMC runs on one event loop (a server's load): afterwards the threshold is the
    one from before (with per-block save-and-restore it stayed at 200,000)."""

    async def many() -> None:
        await asyncio.gather(*(policies.SMC(num_particles=4, seed=i).run_async(_program) for i in range(64)))

    asyncio.run(many())
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # Python >= 3.12 warns of fork with threads: the point here
def test_a_child_forked_while_the_lock_is_held_can_still_open_blocks():
    """Fork while another thread is inside the lock (e.g. the span worker opening its block): the
    child's copy of the lock would stay locked and its first run would hang; it gets a fresh lock."""
    from swarm import gc_tuning

    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with gc_tuning._lock:
            holding.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait()
    pid = os.fork()
    if pid == 0:  # the child: a block must open and close within 5 s
        signal.alarm(5)
        with relaxed_gc():
            pass
        os._exit(0 if gc.get_threshold()[0] == 700 else 3)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
