"""`agents.sandbox`: hostile programs end as failed runs in bounded time and leave nothing behind.

Where a protection has several layers, the hostile program is run twice: with the audit-hook prelude
(defence in depth) and with `audit=False`, so the real boundary beneath it (uid, netns, rlimits) is
tested on its own.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import tempfile
import time

import pytest

from agents.sandbox import SandboxResult, run_untrusted, run_untrusted_async, sandboxed_test_potential

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="the uid switch needs a root parent")


def processes_of_uid(uid: int) -> int:
    """Live processes (zombies excluded) whose real uid is `uid`."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if line.startswith(("State:", "Uid:")))
        except (OSError, ValueError):
            continue
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            count += 1
    return count


def wait_for_baseline(uid: int, baseline: int, within_s: float = 5.0) -> int:
    deadline = time.monotonic() + within_s
    while (n := processes_of_uid(uid)) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


def assert_failed(r: SandboxResult, *errors: str) -> None:
    assert not r.ok, r
    assert r.killed_by is not None or (r.returncode not in (0, None) and any(e in r.stderr for e in errors)), r


# ---- well-behaved ------------------------------------------------------------------------------
def test_well_behaved_program_returns_stdout_stdin_and_files():
    code = "import sys, helper\nprint(helper.GREETING, sys.stdin.read().upper())"
    r = run_untrusted(code, stdin="world", files={"helper.py": "GREETING = 'hello'"})
    assert r.ok and r.returncode == 0 and r.killed_by is None and not r.truncated and not r.timed_out
    assert r.stdout == "hello WORLD\n" and r.stderr == ""
    assert r.duration_s < 5
    if IS_ROOT:
        assert r.privileges_dropped and r.uid not in (None, 0) and r.network_isolated


def test_environment_is_minimal_and_workdir_is_deleted(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-never-reach-the-child")
    r = run_untrusted("import os\nprint(os.getcwd())\nprint(sorted(os.environ.items()))")
    assert r.ok and "sk-should-never" not in r.stdout
    workdir = r.stdout.splitlines()[0]
    assert os.path.basename(workdir).startswith("plp-sandbox-") and not os.path.exists(workdir)
    assert f"('HOME', '{workdir}')" in r.stdout and "('PATH', '/usr/bin:/bin')" in r.stdout


def test_concurrent_async_runs_are_independent():
    async def main():
        return await asyncio.gather(*(run_untrusted_async(f"print({i} * 2)") for i in range(4)))
    results = asyncio.run(main())
    assert [r.stdout for r in results] == [f"{i * 2}\n" for i in range(4)]
    if IS_ROOT:
        assert len({r.uid for r in results}) == 4


# ---- hangs, memory, output ---------------------------------------------------------------------
def test_infinite_loop_is_killed_by_the_wall_clock():
    r = run_untrusted("while True: pass", timeout_s=1.5)
    assert_failed(r)
    assert r.killed_by in ("timeout", "cpu") and r.duration_s < 1.5 + 5


@pytest.mark.parametrize("prefix", ["", "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"],
                         ids=["sigxcpu", "sigxcpu-ignored"])
def test_infinite_loop_is_killed_by_the_cpu_limit(prefix):
    r = run_untrusted(prefix + "while True: pass", timeout_s=30, cpu_s=1)   # generous: shared CI cores
    assert_failed(r)
    assert r.killed_by == "cpu" and not r.timed_out and r.duration_s < 30


def test_sleeping_program_times_out():
    r = run_untrusted("import time\ntime.sleep(60)", timeout_s=1)
    assert r.killed_by == "timeout" and r.timed_out and r.duration_s < 1 + 5


def test_program_that_closes_its_pipes_and_keeps_running_times_out():
    r = run_untrusted("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)", timeout_s=1)
    assert r.killed_by == "timeout" and r.duration_s < 1 + 5


def test_ten_gigabyte_allocation_fails_with_memory_error():
    r = run_untrusted("x = bytearray(10 * 1024**3)")
    assert_failed(r, "MemoryError")
    assert r.killed_by == "memory" and "MemoryError" in r.stderr


def test_huge_output_is_truncated_at_the_cap():
    r = run_untrusted("print('x' * 10**8)", max_output_bytes=65536)
    assert_failed(r)
    assert r.killed_by == "output" and r.truncated and r.stdout == "x" * 65536
    assert r.duration_s < 5


# ---- fork bombs --------------------------------------------------------------------------------
FORK_BOMB = "import os\nwhile True: os.fork()"
SETSID_BOMB = """import os
while True:
    try:
        if os.fork() == 0:
            os.setsid()
    except OSError:
        pass
"""


def test_fork_bomb_is_blocked_by_the_audit_hook():
    r = run_untrusted(FORK_BOMB, timeout_s=3)
    assert_failed(r, "os.fork is not allowed")


@needs_root
@pytest.mark.parametrize("code", [FORK_BOMB, SETSID_BOMB], ids=["plain", "setsid"])
def test_fork_bomb_is_contained_by_nproc_and_uid_cleanup(code):
    start = time.monotonic()
    r = run_untrusted(code, timeout_s=2, audit=False, max_processes=32)
    # bounded, not timed: the 2 s limit plus the cleanup of up to 32 processes, with room for a loaded
    # machine (9 s seen with eight other jobs on 2 cores); a contained bomb never reaches the limit
    assert time.monotonic() - start < 2 + 30
    assert_failed(r, "BlockingIOError", "Resource temporarily unavailable")
    assert wait_for_baseline(r.uid, 0) == 0


@needs_root
def test_fork_bomb_under_a_shared_uid_is_killed_with_its_process_group():
    nobody = 65534
    baseline = processes_of_uid(nobody)
    r = run_untrusted(FORK_BOMB, timeout_s=2, audit=False, max_processes=32, run_as=nobody)
    assert_failed(r, "BlockingIOError")
    assert r.uid == nobody and r.duration_s < 2 + 5
    assert wait_for_baseline(nobody, baseline) <= baseline


# ---- files -------------------------------------------------------------------------------------
@pytest.fixture
def root_only_file():
    d = tempfile.mkdtemp()
    path = os.path.join(d, "secret.txt")
    with open(path, "w") as f:
        f.write("top secret")
    os.chmod(path, 0o600)
    yield path
    os.unlink(path)
    os.rmdir(d)


@pytest.mark.parametrize("audit", [True, False], ids=["hook", "uid"])
def test_reading_root_only_files_fails(audit, root_only_file):
    if not audit and not IS_ROOT:
        pytest.skip("without the hook only the uid switch protects these")
    for path in ("/etc/shadow", root_only_file):
        r = run_untrusted(f"print(open({path!r}).read())", audit=audit)
        assert_failed(r, "PermissionError")
        assert "top secret" not in r.stdout and "root:" not in r.stdout


def test_world_readable_file_is_blocked_by_the_audit_hook_only():
    r = run_untrusted("print(open('/etc/hostname').read())")
    assert_failed(r, "PermissionError: sandbox: open")
    r = run_untrusted("import os\nos.symlink('/etc/hostname', 'h')\nprint(open('h').read())")
    assert_failed(r, "PermissionError: sandbox")
    # Documented limit: beneath the hook, world-readable files stay readable.
    assert run_untrusted("print(open('/etc/hostname').read())", audit=False).ok


@needs_root
def test_files_left_in_tmp_by_the_ephemeral_uid_are_removed():
    name = f"/tmp/plp-sandbox-leftover-{os.getpid()}"
    r = run_untrusted(f"open({name!r}, 'w').write('x')", audit=False)
    assert r.ok and not os.path.exists(name)


# ---- network -----------------------------------------------------------------------------------
@pytest.fixture
def listener():
    srv = socket.create_server(("127.0.0.1", 0))
    srv.setblocking(False)
    yield srv
    srv.close()


def saw_connection(srv: socket.socket) -> bool:
    try:
        srv.accept()[0].close()
        return True
    except BlockingIOError:
        return False


@pytest.mark.parametrize("audit", [True, False], ids=["hook", "netns"])
def test_network_connection_fails_and_the_listener_sees_nothing(audit, listener):
    port = listener.getsockname()[1]
    probe = run_untrusted("pass")
    if not audit and not probe.network_isolated:
        pytest.skip("unshare(CLONE_NEWNET) is not permitted here; only the hook blocks sockets")
    r = run_untrusted(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)", audit=audit)
    assert_failed(r, "PermissionError: sandbox: socket", "Network is unreachable")
    time.sleep(0.1)
    assert not saw_connection(listener)


def test_network_control_with_network_allowed_connects(listener):
    """Shows the listener works, so the negative test above is not vacuous."""
    port = listener.getsockname()[1]
    r = run_untrusted(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()",
                      network=True)
    assert r.ok, r.stderr
    time.sleep(0.1)
    assert saw_connection(listener)


# ---- potential ---------------------------------------------------------------------------------
def test_sandboxed_test_potential():
    tests = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]
    assert sandboxed_test_potential("def add(a, b):\n    return a + b", tests) == 0.0
    assert sandboxed_test_potential("def add(a, b):\n    return a - b", tests) == -math.inf
    assert sandboxed_test_potential("def add(a, b):\n    while True: pass", tests, timeout_s=1) == -math.inf
    assert sandboxed_test_potential("def add(a, b) return", "\n".join(tests)) == -math.inf


# ---- hostile programs inside a run: each is a failed potential, the run finishes ------------------
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]


def hostile_programs(secret_path: str, port: int) -> dict[str, str]:
    """Candidate solutions an LLM might write: each defines a correct `add`, so it passes the tests
    unless its hostile part is stopped (and then fails them): a potential of 0 here would mean the
    sandbox let the hostile part through."""
    return {
        "correct": ADD,
        "fork_bomb": ADD + FORK_BOMB,
        "setsid_fork_bomb": ADD + SETSID_BOMB,
        "infinite_loop": ADD + "while True: pass",
        "ten_gigabytes": ADD + "hoard = bytearray(10 * 1024**3)",
        "read_outside": ADD + f"print(open({secret_path!r}).read())",
        "read_shadow": ADD + "print(open('/etc/shadow').read())",
        "network": ADD + f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()",
    }


@pytest.mark.parametrize("audit", [True, False], ids=["hook", "boundary-only"])
def test_hostile_candidates_end_as_failed_potentials_and_the_run_finishes(audit, root_only_file, listener):
    import policies
    from swarm import Uniform, factor, sample

    if not audit and not IS_ROOT:
        pytest.skip("without the hook the uid switch and netns (root) are the boundary")
    if not audit and not run_untrusted("pass").network_isolated:
        pytest.skip("unshare(CLONE_NEWNET) is not permitted here")
    candidates = hostile_programs(root_only_file, listener.getsockname()[1])
    potentials: dict[str, float] = {}

    def program():
        name = sample("candidate", Uniform(sorted(candidates)))
        potentials[name] = sandboxed_test_potential(candidates[name], ADD_TESTS, timeout_s=3, cpu_s=2,
                                                    max_processes=32, audit=audit)
        factor("tests_pass", potentials[name])
        return name

    start = time.monotonic()
    r = policies.Enumerate().run(program)
    elapsed = time.monotonic() - start
    assert potentials.keys() == candidates.keys()
    assert {k for k, v in potentials.items() if v == 0.0} == {"correct"}, potentials
    assert all(v == -math.inf for k, v in potentials.items() if k != "correct")
    assert r.marginal() == {"correct": pytest.approx(1.0)}
    assert r.log_evidence == pytest.approx(-math.log(len(candidates)))
    assert elapsed < len(candidates) * (3 + 5), "a hostile candidate hung the run"
    time.sleep(0.1)
    assert not saw_connection(listener)


def test_hostile_candidates_under_smc_with_concurrent_async_sandboxes(listener):
    """Async programs run their sandboxes concurrently (run_untrusted_async); the population still
    ends with every hostile candidate dead and the correct one surviving."""
    import policies
    from swarm import Uniform, factor, sample

    candidates = hostile_programs("/etc/shadow", listener.getsockname()[1])

    async def program():
        name = sample("candidate", Uniform(sorted(candidates)))
        result = await run_untrusted_async(candidates[name] + "\n" + "\n".join(ADD_TESTS) + "\n",
                                           timeout_s=3, cpu_s=2, max_processes=32)
        factor("tests_pass", 0.0 if result.ok else -math.inf)
        return name, result.killed_by

    r = policies.SMC(num_particles=16, ess_threshold=0.0, seed=2).run(program)   # keep the dead to inspect
    alive = [p for p in r.particles if p.log_weight > -math.inf]
    assert alive and all(p.value[0] == "correct" for p in alive)
    dead = {p.trace["candidate"].value for p in r.particles if p.log_weight == -math.inf}
    assert len(dead) >= 3 and "correct" not in dead
    assert r.diagnostics.deaths == {"tests_pass": len(r.particles) - len(alive)}
    time.sleep(0.1)
    assert not saw_connection(listener)
