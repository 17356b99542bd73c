"""The setup's smoke test (scripts/smoke_llama.py): the real build decodes the recorded continuation,
and a crash or a wrong continuation fails it with a message naming the CPU and what to do."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "smoke_llama.py"


def _smoke_module():
    spec = importlib.util.spec_from_file_location("smoke_llama", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.llm
def test_the_build_decodes_the_recorded_continuation():
    """What setup runs last, run the same way (a subprocess of this interpreter)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/setup.sh)")
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "-> '13,14,15'" in proc.stdout and proc.stdout.rstrip().endswith(": ok")


def _fake_python(tmp_path: Path, body: str) -> str:
    """A test double for the child interpreter: a shell script that ignores its arguments."""
    path = tmp_path / "fake_python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_crash_fails_with_the_signal_the_cpu_flags_and_what_to_do(tmp_path):
    smoke = _smoke_module()
    ok, message = smoke.check(python=_fake_python(tmp_path, "kill -SEGV $$"))
    assert not ok
    assert "crashed with SIGSEGV" in message and "SIMD flags:" in message and "What to do" in message
    if os.path.exists("/proc/cpuinfo") and "avx2" in Path("/proc/cpuinfo").read_text():
        assert "avx2" in message.split("SIMD flags:")[1]


def test_a_wrong_continuation_fails_naming_both_texts(tmp_path):
    smoke = _smoke_module()
    wrong = '{"ids": [33, 35, 28, 33, 36, 28, 33, 38], "text": "13,14,16", "margins": [4, 4, 4, 4, 4, 4, 4, 4]}'
    ok, message = smoke.check(python=_fake_python(tmp_path, f"echo '{wrong}'"))
    assert not ok and "'13,14,16'" in message and "expected '13,14,15'" in message and "SIMD flags:" in message
    drift = wrong.replace("38]", "37]").replace("16", "15").replace("[4, 4, 4, 4,", "[4, 1.5, 4, 4,")
    ok, message = smoke.check(python=_fake_python(tmp_path, f"echo '{drift}'"))
    assert not ok and "margins" in message and "below 2.0" in message
    ok, message = smoke.check(python=_fake_python(tmp_path, "echo 'Traceback: boom' >&2; exit 3"))
    assert not ok and "exit 3" in message and "boom" in message
