"""What the `swarm serve` tests share: a served program over a TEST DOUBLE backend, and a helper
that starts `swarm serve` on a free port of 127.0.0.1 and always stops it.

The program writes a sentence one word per step with a `Scripted` backend (no model): each word
continues one of a few fixed sentences, chosen by the request seed (so by the particle's random
stream and the site), and a `guarantee` forbids the letter "e" in every word and requires a complete
sentence at the end. The posterior is over the sentences without an "e" that the particles reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from bench.common import stop_process

from agents import Agent, GenerationSettings
from agents.backends.scripted import Scripted
from swarm import guarantee, sample

SENTENCES = ["A cat is happy.", "The cat sleeps.", "A dog runs far.", "My cat was lost.", "Cats are cute.",
             "A cat naps all day.", "A cat sat on a mat."]
REPO = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 60.0


def reply(request) -> str:
    """A TEST DOUBLE's reply: a sentence that continues the assistant prefix, picked by the seed."""
    options = [s for s in SENTENCES if s.startswith(request.assistant_prefix)] or SENTENCES
    return options[(request.seed or 0) % len(options)]


WRITER = Agent(name="writer", backend=Scripted(reply), settings=GenerationSettings(max_tokens=8))
DEFAULTS = {"particles": 12}


def satisfies_guarantee(text: str, letter: str = "e") -> bool:
    """What the program's guarantees accept: no `letter` anywhere, a complete sentence."""
    return letter not in text.lower() and text.rstrip().endswith(".")


async def program(messages, letter: str = "e", max_words: int = 8, delay: float = 0.0) -> str:
    """One word per step; `delay` seconds of waiting per word (to test time limits)."""
    text = ""
    for i in range(max_words):
        if delay:
            await asyncio.sleep(delay)
        word = await sample(f"word{i}", WRITER.generate(messages=messages, prefix=text, unit="word"))
        text += word
        guarantee(f"no_{letter}/word{i}", letter not in word.lower())
        if text.rstrip().endswith("."):
            break
    guarantee("complete", text.rstrip().endswith("."))
    return text


def swarm_command() -> list[str]:
    script = Path(sys.executable).parent / "swarm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "observability.cli"]


@contextlib.contextmanager
def run_server(*args: str, env: dict[str, str] | None = None,
               timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """`swarm serve ARGS --port 0`; yields (base URL ending in /v1, the process, its log file). The
    log (stdout and stderr) is a file, so the server never blocks on a full pipe; it is removed when
    the block ends, and kept (its path printed) when the block raised, to read what the server said."""
    log = Path(tempfile.mkstemp(prefix="swarm-serve-", suffix=".log")[1])
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    with open(log, "w") as out:
        proc = subprocess.Popen([*swarm_command(), "serve", *args, "--port", "0"], stdout=out,
                                stderr=subprocess.STDOUT, env=full_env, cwd=REPO)
    failed = False
    try:
        url = _wait_ready(proc, log, timeout_s)
        yield url, proc, log
    except BaseException:
        failed = True
        print(f"swarm serve's log is kept in {log}", file=sys.stderr)
        raise
    finally:
        stop(proc)
        if not failed:
            log.unlink(missing_ok=True)


@contextlib.contextmanager
def keyed_server(key_env: str, key: str) -> Iterator[tuple[str, Path]]:
    """The served `program` behind an API key (the environment variable `key_env` holds `key`), at
    most 4000 tokens a request; yields (base URL, log file). For a test module's one server."""
    with run_server(str(REPO / "tests" / "serve_fixtures.py"), "--max-tokens", "4000", "--api-key-env", key_env,
                    env={key_env: key}) as (url, _, log):
        yield url, log


def _wait_ready(proc: subprocess.Popen, log: Path, timeout_s: float) -> str:
    """The server's URL once it accepts connections (its ready line, then a /health answer)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"swarm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        found = re.search(r"on (http://127\.0\.0\.1:\d+/v1)", log.read_text())
        if found:
            try:
                with urllib.request.urlopen(found.group(1).removesuffix("/v1") + "/health", timeout=2):
                    return found.group(1)
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"swarm serve did not start in {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    stop_process(proc, grace_s=15)


async def lone_surrogate(messages) -> str:
    """A TEST DOUBLE program whose reply cannot be written as UTF-8 (it holds a lone surrogate)."""
    return "broken \ud800 text"


class Unrenderable:
    """A TEST DOUBLE return value whose text raises an error that quotes the server's API key."""

    def __str__(self) -> str:
        raise ValueError(f"cannot render with key {os.environ.get('SERVE_EDGES_KEY', '')}")


async def unrenderable(messages) -> Unrenderable:
    """A TEST DOUBLE program whose reply fails to render (an internal error, logged)."""
    return Unrenderable()


async def asks_a_person(messages) -> str:
    """A TEST DOUBLE program that asks a person before it answers (`swarm.ask_human`)."""
    from swarm import ask_human

    fine = await ask_human("ok", "Is this fine?", schema=bool)
    return "yes" if fine else "no"
