"""Run untrusted (LLM-written) Python in a child process with layered, best-effort isolation.

NOT a container or a VM. Layers 1-4 are the boundary; layer 6 is defence in depth.

1. Unprivileged uid/gid (parent is root), set last in `preexec_fn`. Stops: reading root-only files
   (/etc/shadow, 0600 files, 0700 dirs), signalling/ptracing the caller, raising rlimits again.
   Does NOT stop: reading world-readable files (/etc/passwd, /proc/<pid>/cmdline of every process),
   writing world-writable dirs (/tmp, /dev/shm), filesystem UNIX sockets with loose permissions,
   kernel bugs. Each run gets a fresh *ephemeral* uid (no passwd entry), so concurrent runs share
   no RLIMIT_NPROC budget and cannot signal each other, and afterwards every process of that uid
   (even setsid'd ones outside the process group) dies by `kill -9 -1` run as that uid, and its
   files in /tmp, /var/tmp, /dev/shm are deleted. `run_as=65534` (nobody) shares a uid: then only
   the process group is killed.
2. Network namespace. Python 3.11 has no `os.unshare`, so `preexec_fn` calls
   `libc.unshare(CLONE_NEWNET)` via ctypes while still root (non-root: `CLONE_NEWUSER|CLONE_NEWNET`).
   The child sees only a loopback that is down: no TCP/UDP anywhere, no abstract UNIX sockets;
   filesystem UNIX sockets are not covered. Probed once per process; if not permitted, the child
   shares the host network, `network_isolated=False`, and only the audit hook blocks sockets.
3. rlimits: RLIMIT_AS (memory), RLIMIT_CPU (SIGXCPU at `cpu_s`, SIGKILL 1 s later), RLIMIT_NPROC
   (fork bombs; per real uid, threads included, ignored for root: hence layer 1), RLIMIT_FSIZE,
   RLIMIT_NOFILE, RLIMIT_CORE=0. Not covered: many small files filling the disk, I/O load.
4. New session; the process group (and the ephemeral uid) is SIGKILLed on the wall-clock timeout,
   when a stream exceeds `max_output_bytes` (read incrementally), or when the main process exits
   while descendants linger.
5. Minimal environment (PATH, HOME=work dir; no inherited API keys) and a fresh 0700 work dir owned
   by the sandbox uid, deleted afterwards.
6. Audit-hook prelude, run by the same interpreter just before the code (`python -I -S -B -c
   PRELUDE`): `sys.addaudithook` refuses open/listdir/rename/... outside the work dir (the stdlib on
   `sys.path` stays readable), `socket.*` (unless `network`), subprocess/exec/spawn/fork/kill (unless
   `allow_subprocess`), ctypes and gc introspection. It stops naive access such as reading
   /etc/hostname. NOT a security boundary: `_posixsubprocess.fork_exec`, C extensions, calls
   without events and symlink races get around it, and it does not follow exec'd programs.

The interpreter must be runnable by the sandbox uid (a pyenv Python under a 0700 /root is not): it
is probed once, else /usr/bin/python3 is used (reported in `SandboxResult.python`); if none works,
`SandboxUnavailable` is raised rather than running as root. `preexec_fn` is documented as unsafe
with threads; ours only makes plain syscalls (setsid, setrlimit, unshare, setgroups, setres[ug]id).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import functools
import json
import math
import os
import random
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from pydantic import BaseModel

from swarm.errors import SwarmError

__all__ = ["SandboxResult", "SandboxUnavailable", "run_untrusted", "run_untrusted_async",
           "sandboxed_test_potential"]

CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
_EPHEMERAL_UIDS = (1_500_000_000, 1_510_000_000)   # no passwd entry; one fresh uid per run
_FALLBACK_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")
_MAIN = "_sandbox_main.py"
_libc = ctypes.CDLL(None, use_errno=True)
_uid_rng = random.SystemRandom()   # never touch the global `random` state user programs seed
_uids_in_use: set[int] = set()
_uid_lock = threading.Lock()


class SandboxUnavailable(SwarmError, RuntimeError):
    """The sandbox cannot run safely here (e.g. no interpreter the unprivileged uid can execute).

    A `SwarmError`: it aborts the run. A sandbox that cannot start is the machine's problem, not the
    program's; counting it as failed tests would turn an infrastructure failure into evidence."""


class SandboxResult(BaseModel):
    """What happened. `stdout`/`stderr` hold at most `max_output_bytes` each (decoded leniently);
    `ok` means exit code 0 and nothing killed the run."""

    ok: bool
    returncode: int | None
    stdout: str
    stderr: str
    truncated: bool = False
    timed_out: bool = False
    killed_by: str | None = None   # "timeout" | "memory" | "cpu" | "output" | "signal:N" | None
    duration_s: float
    network_isolated: bool = False
    privileges_dropped: bool = False
    uid: int | None = None
    python: str = ""


# ---- the in-child prelude (defence in depth, runs before the untrusted code) -------------------
_PRELUDE = r'''
def _plp_sandbox_boot():
    import json, os, sys
    cfg = json.loads(sys.argv[1])
    root = os.path.realpath(os.getcwd())
    ro = tuple(os.path.realpath(p) for p in sys.path) + ("/dev/null", "/dev/urandom")
    deny = cfg["deny"]
    paths = {"open": 1, "os.listdir": 1, "os.scandir": 1, "os.chdir": 1, "os.mkdir": 1,
             "os.remove": 1, "os.rmdir": 1, "os.truncate": 1, "os.chmod": 1, "os.chown": 1,
             "os.utime": 1, "os.rename": 2, "os.symlink": 2, "os.link": 2}
    reads = ("open", "os.listdir", "os.scandir")
    busy = []
    def inside(p, roots):
        return any(p == r or p.startswith(r.rstrip("/") + "/") for r in roots)
    def hook(event, args):
        if busy:
            return
        busy.append(1)
        try:
            if any(event == d or (d.endswith(".") and event.startswith(d)) for d in deny):
                raise PermissionError(f"sandbox: {event} is not allowed")
            for a in args[:paths.get(event, 0)]:
                if isinstance(a, int) or a is None:
                    continue
                p = os.path.realpath(os.fsdecode(a))
                if not (inside(p, (root,)) or (event in reads and inside(p, ro))):
                    raise PermissionError(f"sandbox: {event} of {p!r} outside the work dir")
        finally:
            busy.pop()
    if cfg["audit"]:
        sys.addaudithook(hook)
    sys.path.append(root)
    main = os.path.join(root, cfg["main"])
    sys.argv = [main]
    with open(main, encoding="utf-8") as f:
        return compile(f.read(), main, "exec"), main
_plp_code, _plp_main = _plp_sandbox_boot()
del _plp_sandbox_boot
exec(_plp_code, {"__name__": "__main__", "__file__": _plp_main, "__builtins__": __builtins__})
'''
_DENY_ALWAYS = ["ctypes.", "gc.get_objects", "gc.get_referrers", "gc.get_referents"]
_DENY_NET = ["socket."]
_DENY_PROC = ["subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
              "os.forkpty", "os.kill", "os.killpg", "pty.spawn"]


# ---- privileges, namespaces, limits ------------------------------------------------------------
def _make_preexec(limits: dict[int, tuple[int, int]], unshare_flags: int, uid: int | None):
    """Build the child-side setup: new session, rlimits, netns, then drop to `uid` (in that order:
    unshare needs root, rlimits are lowered while privileged so the child cannot raise them)."""
    unshare = _libc.unshare

    def preexec() -> None:
        os.setsid()
        for which, (soft, hard) in limits.items():
            resource.setrlimit(which, (soft, hard))
        if unshare_flags and unshare(unshare_flags) != 0:
            raise OSError(ctypes.get_errno(), "unshare failed")
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
    return preexec


def _succeeds(argv: list[str], preexec) -> bool:
    try:
        subprocess.run(argv, preexec_fn=preexec, check=True, env={}, cwd="/", stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=20)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=None)
def _netns_flags() -> int:
    """Probe once which unshare works here: CLONE_NEWNET (root), then with a user namespace; 0: none."""
    candidates = ([CLONE_NEWNET] if os.geteuid() == 0 else []) + [CLONE_NEWUSER | CLONE_NEWNET]
    return next((f for f in candidates if _succeeds(["/bin/true"], _make_preexec({}, f, None))), 0)


@functools.lru_cache(maxsize=None)
def _usable_python(python: str) -> str | None:
    """The first of `python` and the fallbacks that an unprivileged uid can run with its stdlib."""
    uid = _allocate_uid()
    try:
        return next((exe for exe in (python, *_FALLBACK_PYTHONS) if _succeeds(
            [exe, "-I", "-S", "-B", "-c", "import json, sysconfig"], _make_preexec({}, 0, uid))), None)
    finally:
        _release_uid(uid)


def _allocate_uid() -> int:
    with _uid_lock:
        while True:
            uid = _uid_rng.randrange(*_EPHEMERAL_UIDS)
            if uid not in _uids_in_use and not _pids_of_uid(uid):
                _uids_in_use.add(uid)
                return uid


def _release_uid(uid: int) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is `uid`, read from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    fields = dict(ln.split(":", 1) for ln in f if ln.startswith(("State:", "Uid:")))
            except (OSError, ValueError):
                continue
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                pids.append(int(entry))
    return pids


def _kill_uid(uid: int, attempts: int = 20) -> None:
    """SIGKILL every process of `uid` (kill(-1) as that uid reaches all of them, even setsid'd
    ones, and is atomic with respect to fork). Only for ephemeral uids nobody else uses."""
    for _ in range(attempts):
        if not _pids_of_uid(uid):
            return
        subprocess.run(["/bin/kill", "-9", "-1"], user=uid, group=uid, extra_groups=[], env={},
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        time.sleep(0.02)


def _sweep_tmp(uid: int) -> None:
    """Delete what an ephemeral uid left in the shared world-writable directories."""
    for base in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for e in entries:
            try:
                if e.stat(follow_symlinks=False).st_uid == uid:
                    shutil.rmtree(e.path) if e.is_dir(follow_symlinks=False) else os.unlink(e.path)
            except OSError:
                pass


# ---- work dir, output pump, classification -----------------------------------------------------
def _prepare_workdir(code: str, files: dict[str, str] | None, uid: int | None) -> str:
    """A fresh 0700 dir holding the code and `files`, owned by the sandbox uid."""
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="plp-sandbox-"))
    try:
        for rel, content in {**(files or {}), _MAIN: code}.items():
            path = os.path.realpath(os.path.join(workdir, rel))
            if os.path.isabs(rel) or not path.startswith(workdir + os.sep):
                raise ValueError(f"files: {rel!r} must be a relative path inside the work dir")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)
        if uid is not None:
            for dirpath, _dirs, names in os.walk(workdir):
                for p in [dirpath, *(os.path.join(dirpath, n) for n in names)]:
                    os.chown(p, uid, uid)
        os.chmod(workdir, 0o700)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return workdir


def _pump(proc: subprocess.Popen, deadline: float, cap: int,
          on_leader_exit) -> tuple[bytes, bytes, str | None, bool]:
    """Read stdout/stderr until both hit EOF and the main process has exited, the deadline passes or
    a stream exceeds the cap. Returns (out, err, reason, truncated). When the main process exits,
    `on_leader_exit` kills its leftovers, so pipe ends they hold close."""
    fds = (proc.stdout.fileno(), proc.stderr.fileno())
    bufs = {fd: bytearray() for fd in fds}
    sel = selectors.DefaultSelector()
    for fd in fds:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    reason, truncated, leader_done = None, False, False
    while reason is None and (sel.get_map() or not leader_done):
        if not leader_done and _leader_exited(proc):
            leader_done = True
            on_leader_exit()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            reason = "timeout"
            break
        for key, _ in sel.select(min(remaining, 0.25 if sel.get_map() else 0.01)):
            chunk = os.read(key.fd, 1 << 16)
            if not chunk:
                sel.unregister(key.fd)
                continue
            buf = bufs[key.fd]
            buf += chunk[: cap + 1 - len(buf)]
            if len(buf) > cap:
                del buf[cap:]
                reason, truncated = "output", True
    sel.close()
    return bytes(bufs[fds[0]]), bytes(bufs[fds[1]]), reason, truncated


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (the unreaped leader keeps the pgid from being reused)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _leader_exited(proc: subprocess.Popen) -> bool:
    """True once the main process has exited; it is left unreaped (WNOWAIT) so its pgid stays ours."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _reap(proc: subprocess.Popen) -> tuple[int, float]:
    """Reap the (exited or SIGKILLed) main process: (returncode, its cpu seconds)."""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _classify(reason: str | None, rc: int | None, cpu: float, cpu_s: int, stderr: str) -> str | None:
    if reason:
        return reason
    if rc == -signal.SIGXCPU or (rc == -signal.SIGKILL and cpu >= cpu_s):
        return "cpu"
    last_line = (stderr.rstrip().splitlines() or [""])[-1]
    if rc and last_line.startswith("MemoryError"):
        return "memory"
    return f"signal:{-rc}" if rc is not None and rc < 0 else None


# ---- public API --------------------------------------------------------------------------------
def run_untrusted(code: str, *, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 512,
                  cpu_s: int = 5, max_output_bytes: int = 65536, max_processes: int = 64,
                  files: dict[str, str] | None = None, python: str = sys.executable,
                  network: bool = False, audit: bool = True, allow_subprocess: bool = False,
                  max_file_bytes: int = 16 * 1024 * 1024, run_as: int | None = None) -> SandboxResult:
    """Run `code` with `python -I -S -B` in a fresh temp dir under the layers described in the module
    docstring. Never raises for anything the code does (crash, hang, bomb, flood): that is a failed
    result. Raises `SandboxUnavailable` when the child cannot be started safely (e.g. as root, no
    interpreter is usable by the sandbox uid), `ValueError` for a `files` path outside the dir.

    `max_output_bytes` caps stdout and stderr each. `audit=False` disables only the audit-hook
    prelude (to test the boundary beneath it); `allow_subprocess` lets the code fork/exec (still
    bounded by `max_processes`); `run_as` uses a fixed uid (e.g. 65534) instead of a fresh ephemeral
    one, which disables uid-wide cleanup."""
    is_root = os.geteuid() == 0
    uid = (run_as if run_as is not None else _allocate_uid()) if is_root else None
    ephemeral = is_root and run_as is None
    try:
        exe = _usable_python(python) if is_root else python
        if exe is None:
            raise SandboxUnavailable(f"no Python usable by an unprivileged uid ({python!r} and "
                                     f"{_FALLBACK_PYTHONS} failed); pass python=...")
        limits = {resource.RLIMIT_AS: memory_mb * 1024 * 1024, resource.RLIMIT_NPROC: max_processes,
                  resource.RLIMIT_FSIZE: max_file_bytes, resource.RLIMIT_NOFILE: 256,
                  resource.RLIMIT_CORE: 0}
        deny = _DENY_ALWAYS + ([] if network else _DENY_NET) + ([] if allow_subprocess else _DENY_PROC)
        plan = _Plan(exe=exe, uid=uid, ephemeral=ephemeral, netns=0 if network else _netns_flags(),
                     limits={**{k: (v, v) for k, v in limits.items()},
                             resource.RLIMIT_CPU: (int(cpu_s), int(cpu_s) + 1)},  # SIGXCPU, then SIGKILL
                     config=json.dumps({"audit": audit, "deny": deny, "main": _MAIN}),
                     timeout_s=timeout_s, cpu_s=int(cpu_s), cap=max_output_bytes)
        return _execute(plan, code, stdin, files)
    finally:
        if ephemeral:
            _release_uid(uid)


@dataclasses.dataclass(frozen=True)
class _Plan:
    exe: str
    uid: int | None
    ephemeral: bool
    netns: int
    limits: dict[int, tuple[int, int]]
    config: str
    timeout_s: float
    cpu_s: int
    cap: int


def _spawn(plan: _Plan, workdir: str, stdin: str) -> subprocess.Popen:
    with tempfile.TemporaryFile() as stdin_file:   # a file, so a big stdin can never block us
        stdin_file.write(stdin.encode())
        stdin_file.seek(0)
        try:
            return subprocess.Popen(
                [plan.exe, "-I", "-S", "-B", "-c", _PRELUDE, plan.config], cwd=workdir, stdin=stdin_file,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                env={"PATH": "/usr/bin:/bin", "HOME": workdir, "PYTHONDONTWRITEBYTECODE": "1"},
                preexec_fn=_make_preexec(plan.limits, plan.netns, plan.uid))
        except (OSError, subprocess.SubprocessError) as e:
            raise SandboxUnavailable(f"could not start the sandboxed child: {e}") from e


def _execute(plan: _Plan, code: str, stdin: str, files: dict[str, str] | None) -> SandboxResult:
    workdir = _prepare_workdir(code, files, plan.uid)
    start = time.monotonic()
    deadline = start + plan.timeout_s

    def kill_all() -> None:
        _kill_group(proc)
        if plan.ephemeral:
            _kill_uid(plan.uid)
    try:
        with _spawn(plan, workdir, stdin) as proc:
            out, err, reason, truncated = _pump(proc, deadline, plan.cap, kill_all)
            kill_all()
            rc, cpu = _reap(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if plan.ephemeral:
            _sweep_tmp(plan.uid)
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    killed_by = _classify(reason, rc, cpu, plan.cpu_s, stderr)
    return SandboxResult(ok=rc == 0 and killed_by is None, returncode=rc, stdout=stdout, stderr=stderr,
                         truncated=truncated, timed_out=reason == "timeout", killed_by=killed_by,
                         duration_s=time.monotonic() - start, network_isolated=bool(plan.netns),
                         privileges_dropped=plan.uid is not None, uid=plan.uid, python=plan.exe)


async def run_untrusted_async(code: str, **kwargs) -> SandboxResult:
    """`run_untrusted` in a worker thread, so an event loop keeps running meanwhile."""
    return await asyncio.to_thread(run_untrusted, code, **kwargs)


def sandboxed_test_potential(code: str, tests: str | list[str], **kwargs) -> float:
    """A log-potential for `factor`: 0.0 when `code` followed by `tests` (assert statements) exits
    cleanly in the sandbox, −inf when anything fails, times out or is killed. Untrusted behaviour
    never raises; only a missing sandbox (`SandboxUnavailable`) or bad arguments do."""
    body = tests if isinstance(tests, str) else "\n".join(tests)
    result = run_untrusted(f"{code}\n\n{body}\n", **kwargs)
    return 0.0 if result.ok else -math.inf

