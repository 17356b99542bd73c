"""Start and stop a real `llama_cpp.server` (OpenAI-compatible) on 127.0.0.1 for tests.

    with start_llama_server(model_path) as (base_url, process):
        backend = OpenAICompatible(base_url, "smollm2", mode="completions")
        ...

The server runs in a subprocess on a free port with `--logits_all true` (needed for logprobs);
readiness is polled on `GET /v1/models`. The process is always terminated (then killed) on exit,
and its log is kept in a temporary file whose tail is quoted when startup fails.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Iterator

STARTUP_TIMEOUT_S = 120.0


def llama_server_available() -> bool:
    """Whether `python -m llama_cpp.server` can run in this interpreter (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("llama_cpp.server") is not None
    except ModuleNotFoundError:
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _tail(path: pathlib.Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def start_llama_server(
    model_path: str | os.PathLike[str],
    *,
    extra_args: tuple[str, ...] = (),
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run `python -m llama_cpp.server` for `model_path`; yields `(base_url, process)`.

    `base_url` ends in `/v1`. Raises RuntimeError (quoting the server log) if the process exits or
    is not ready within `timeout_s`. `process.startup_s` records how long readiness took.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log_file = tempfile.NamedTemporaryFile(prefix="llama_server_", suffix=".log", delete=False)
    log_path = pathlib.Path(log_file.name)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
           "--port", str(port), "--logits_all", "true", *extra_args]
    started = time.monotonic()
    process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        while not _ready(base_url):
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with code {process.returncode} before it was "
                                   f"ready; command: {' '.join(cmd)}\n{_tail(log_path)}")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"llama_cpp.server was not ready on {base_url} within {timeout_s:g}s\n"
                                   f"{_tail(log_path)}")
            time.sleep(0.25)
        process.startup_s = time.monotonic() - started  # type: ignore[attr-defined]
        yield base_url, process
    finally:
        _stop(process)
        log_file.close()
        with contextlib.suppress(OSError):
            log_path.unlink()


SERVER_LOGPROB_TOLERANCE = 0.15
"""How far (nats) the server's token log-probabilities may lie from in-process `LlamaCpp`'s.

Not bit-identical by design: llama.cpp's CPU kernels for a 1-token batch differ from those for larger
batches. The server evaluates each generated token alone; `LlamaCpp` evaluates every position in a
batch of at least two tokens (see `LlamaCpp._eval_from`) so that its logits depend on the token
sequence only. Measured on this machine: differences up to 0.07 nats. An off-by-one token, a
proposal/base mix-up or a missing BOS token gives differences of order 1."""
