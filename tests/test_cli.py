"""The `swarm` console script: --help, run (plain and on a pseudo-terminal), inspect, report."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from observability.trace_file import read_trace_file

SCRIPT = Path(sys.executable).parent / "swarm"
REPO = Path(__file__).resolve().parents[1]

PROGRAM = textwrap.dedent('''
    """A small example for the CLI tests: coins, a soft preference for heads, a hard guarantee."""
    from swarm import Bernoulli, factor, guarantee, sample

    DEFAULTS = {"particles": 120, "seed": 0}


    def program(n=4):
        heads = 0
        for t in range(n):
            heads += sample(f"flip{t}", Bernoulli(0.5))
            factor(f"prefer_heads{t}", 0.3 * heads)
        guarantee("at_least_two", heads >= 2)
        return heads


    def other():
        return sample("y", Bernoulli(0.25))
''')


def swarm(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the installed `swarm` script (or `python -m observability.cli` if it is not installed)."""
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "observability.cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO, env=env)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "coins.py"
    path.write_text(PROGRAM)
    return path


@pytest.fixture(scope="module")
def plain_run(example):
    """One `swarm run` with a trace file and a report, output piped (not a TTY)."""
    out = example.parent
    proc = swarm("run", str(example), "--trace", str(out / "out.jsonl"), "--html", str(out / "report.html"),
                 "--png-dir", str(out / "png"), "--arg", "n=5")
    return proc, out


def test_help():
    proc = swarm("--help")
    assert proc.returncode == 0, proc.stderr
    for word in ("run", "inspect", "report", "Exit status"):
        assert word in proc.stdout
    run_help = swarm("run", "--help")
    assert run_help.returncode == 0
    for option in ("--policy", "--particles", "--seed", "--runtime", "--trace", "--otlp", "--html", "--arg",
                   "POLICY", "DEFAULTS"):
        assert option in run_help.stdout
    assert "--max-particles" in swarm("inspect", "--help").stdout
    assert "--png-dir" in swarm("report", "--help").stdout


def test_the_help_s_examples_name_files_that_exist():
    """`swarm --help` shows commands to copy: every program file they name is in the repository
    (they once named examples/dice.py and examples/my_chat.py, which are not)."""
    root = Path(__file__).resolve().parents[1]
    commands = [line.split("#")[0].split() for line in swarm("--help").stdout.splitlines()
                if line.strip().startswith("swarm ")]
    programs = [word.split(":")[0] for words in commands for word in words if word.split(":")[0].endswith(".py")]
    assert len(programs) >= 2, commands
    assert [p for p in programs if not (root / p).is_file()] == []


def test_run_prints_plain_lines_and_writes_trace_and_report(plain_run):
    proc, out = plain_run
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stdout  # no terminal codes in a pipe
    steps = re.findall(r"^step (\d+) \| alive \d+/120 \| ESS [\d.]+ \| log Z -?[\d.]+ \|", proc.stdout, re.M)
    assert steps and steps == [str(i) for i in range(1, len(steps) + 1)]
    assert "answer marginal (top" in proc.stdout and re.search(r"^log Z = -?[\d.]+ +ESS = [\d.]+ / 120", proc.stdout, re.M)
    assert f"trace:  {out / 'out.jsonl'}" in proc.stdout and f"report: {out / 'report.html'}" in proc.stdout
    trace = read_trace_file(out / "out.jsonl")
    assert trace.complete and trace.run.num_particles == 120 and trace.run.config["seed"] == 0  # from DEFAULTS
    assert max(trace.final_marginal()) == 5  # --arg n=5 reached the program
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    assert sorted(p.name for p in (out / "png").iterdir()) == sorted(
        f"{n}.png" for n in ("ess", "log_evidence", "weights", "genealogy", "marginal"))


def test_run_named_function_and_policy(example, tmp_path):
    proc = swarm("run", f"{example}:other", "--policy", "enumerate", "--trace", str(tmp_path / "e.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"False\s+0\.7500", proc.stdout) and re.search(r"True\s+0\.2500", proc.stdout)
    assert read_trace_file(tmp_path / "e.jsonl").run.policy == "Enumerate"


def test_run_errors_name_what_is_wrong(example, tmp_path):
    missing = swarm("run", f"{example}:nope")
    assert missing.returncode == 1 and "has no function named 'nope'" in missing.stderr
    assert "its functions: other, program" in missing.stderr
    assert swarm("run", str(tmp_path / "absent.py")).returncode == 1
    bad = swarm("run", str(example), "--particles", "0")
    assert bad.returncode == 1 and "num_particles" in bad.stderr
    assert swarm("run", str(example), "--policy", "magic").returncode == 2
    unknown = swarm("run", str(example), "--arg", "nn=5")  # a usage error, before any run: no traceback
    assert unknown.returncode == 2 and "got an unexpected keyword argument 'nn'" in unknown.stderr
    assert "--arg NAME=VALUE" in unknown.stderr and "Traceback" not in unknown.stderr


def test_inspect_prints_the_genealogy(plain_run):
    _, out = plain_run
    proc = swarm("inspect", str(out / "out.jsonl"), "--max-particles", "5")
    assert proc.returncode == 0, proc.stderr
    trace = read_trace_file(out / "out.jsonl")
    assert proc.stdout.startswith(f"run {trace.run.run_id}: SMC on program")
    assert "N = 120" in proc.stdout and "log Z = " in proc.stdout and "ESS = " in proc.stdout
    shown = [int(i) for i in re.findall(r"^\s*- #(\d+) ", proc.stdout, re.M)]
    genealogy = trace.genealogy()
    assert shown and set(shown) <= set(genealogy)
    assert "✗ killed by guarantee 'at_least_two'" in proc.stdout
    assert "★ final" in proc.stdout
    # an indented child is an offspring of the line above it at the lower depth
    lines = [line for line in proc.stdout.splitlines() if re.match(r"^\s*- #\d+ ", line)]
    stack: list[tuple[int, int]] = []
    for line in lines:
        depth, pid = (len(line) - len(line.lstrip())) // 2, int(re.search(r"#(\d+)", line).group(1))
        stack = stack[:depth]
        if stack:
            assert genealogy[pid] == stack[-1][1]
        stack.append((depth, pid))
    final_id = trace.final_population()[0].id
    one = swarm("inspect", str(out / "out.jsonl"), "--particle", str(final_id))
    assert one.returncode == 0 and "lineage: " + " → ".join(f"#{i}" for i in trace.lineage(final_id)) in one.stdout
    absent = swarm("inspect", str(out / "out.jsonl"), "--particle", "999999")
    assert absent.returncode == 1 and "particle 999999 does not appear" in absent.stderr
    nofile = swarm("inspect", str(out / "nope.jsonl"))
    assert nofile.returncode == 1 and "nope.jsonl" in nofile.stderr


def test_report_writes_self_contained_html(plain_run, tmp_path):
    _, out = plain_run
    proc = swarm("report", str(out / "out.jsonl"), "--html", str(tmp_path / "r.html"), "--png-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("data:image/png;base64,") == 5
    assert "<script" not in html.lower() and not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "at_least_two" in html and "Deaths by cause" in html
    assert (tmp_path / "genealogy.png").read_bytes().startswith(b"\x89PNG")


def _run_on_pty(args: list[str], timeout: float = 60) -> str:
    """Run a command with stdout/stderr on a pseudo-terminal and return everything it wrote."""
    master, slave = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color", "COLUMNS": "120"}
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=REPO)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(timeout=10)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode("utf-8", errors="replace")


def test_run_on_a_terminal_shows_a_rich_progress_bar(example):
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "observability.cli"]
    out = _run_on_pty([*cmd, "run", str(example), "--particles", "60"])
    assert "\x1b[" in out  # ANSI styling
    assert "━" in out  # rich's bar
    assert re.search(r"step \d+", out) and "ESS" in out and "tok/s" in out
    assert not re.search(r"^step \d+ \| alive", out, re.M)  # not the plain lines
    assert "answer marginal" in out


def test_inspect_into_a_closed_pipe_is_quiet(plain_run):
    """`swarm inspect out.jsonl | head`: the reader leaves early; no traceback, exit 0."""
    _, out = plain_run
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "observability.cli"]
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([*cmd, "inspect", str(out / "out.jsonl")], stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    os.close(read_end)  # the reader is gone before the first line is written
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()


POLICY_MODULE = textwrap.dedent('''
    """--particles against a module POLICY whose population field is not num_particles."""
    import policies
    from swarm import Categorical, factor, sample

    POLICY = {policy}


    def program():
        x = sample("x", Categorical(["a", "b", "c"], probs=[0.5, 0.3, 0.2]))
        factor("likes_b", 1.0 if x == "b" else 0.0)
        return x
''')


@pytest.mark.parametrize("policy,field", [("policies.SelfConsistency(num_particles=3, seed=0)", "num_particles"),
                                          ("policies.BestOfN(num_particles=3, seed=0)", "num_particles"),
                                          ("policies.Forward(num_particles=3, seed=0)", "num_particles"),
                                          ("policies.Importance(num_particles=3, seed=0)", "num_particles")])
def test_particles_sets_every_policys_population_size(tmp_path, policy, field):
    """`swarm run --particles 7` reaches the policy's population field (issue 11 g: it was ignored
    for SelfConsistency, whose field was `n`; every policy now calls it `num_particles`); the run,
    its trace file and the summary line say 7."""
    path = tmp_path / "module_policy.py"
    path.write_text(POLICY_MODULE.replace("{policy}", policy))
    proc = swarm("run", str(path), "--particles", "7", "--trace", str(tmp_path / "t.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert "ignored" not in proc.stderr
    trace = read_trace_file(tmp_path / "t.jsonl")
    assert trace.run.num_particles == 7 and trace.run.config[field] == 7, (field, trace.run.config)
    assert re.search(r"^log Z = -?[\d.]+ +ESS = [\d.]+ / 7 ", proc.stdout, re.M), proc.stdout


def test_particles_for_a_policy_without_a_population_is_an_error(tmp_path):
    path = tmp_path / "module_policy.py"
    path.write_text(POLICY_MODULE.replace("{policy}", "policies.Enumerate()"))
    proc = swarm("run", str(path), "--particles", "7")
    assert proc.returncode == 1
    assert "--particles 7: Enumerate has no population size" in proc.stderr, proc.stderr
    assert swarm("run", str(path)).returncode == 0  # the built-in default of 100 is not an explicit request


def test_the_marginal_header_counts_what_it_shows(example, tmp_path):
    """"top k of n values" is followed by k = min(10, n) lines, n the number of distinct values
    (issue 11 g: "top 5 of 4" was printed)."""
    uniform = tmp_path / "uniform.py"
    uniform.write_text("from swarm import Uniform, sample\n\ndef program():\n    return sample('x', Uniform(range(15)))\n")
    few = swarm("run", f"{example}:other", "--policy", "enumerate")
    many = swarm("run", str(uniform), "--policy", "enumerate")
    for proc, expected in ((few, (2, 2)), (many, (10, 15))):
        assert proc.returncode == 0, proc.stderr
        header = re.search(r"answer marginal \(top (\d+) of (\d+) values\):\n", proc.stdout)
        assert header and tuple(map(int, header.groups())) == expected, proc.stdout
        shown = proc.stdout[header.end():].split("\nlog Z")[0].splitlines()
        assert len(shown) == expected[0], proc.stdout


@pytest.mark.ray
def test_a_program_that_imports_a_file_beside_it_runs_on_ray_workers(tmp_path):
    """Ray workers cannot import files from the program's folder (the repo and the driver's working
    directory are on their path; the command runs from the repo): the program's module and the
    modules it imported from beside it travel by value. Fails when only the program's own module is
    shipped (the helper's import fails on the worker)."""
    (tmp_path / "coin_helpers.py").write_text("def bias(heads):\n    return 0.5 * heads\n")
    (tmp_path / "biased.py").write_text(textwrap.dedent('''
        from coin_helpers import bias
        from swarm import Bernoulli, factor, sample

        def program():
            heads = sample("a", Bernoulli(0.5)) + sample("b", Bernoulli(0.5))
            factor("bias", bias(heads))
            return heads
    '''))
    proc = swarm("run", str(tmp_path / "biased.py"), "--runtime", "ray", "--particles", "8", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "answer marginal" in proc.stdout, proc.stdout


VECTOR_MODULE = '''
import numpy as np
from swarm import Bernoulli, factor, sample

def program(steps: int = 10):
    heads = 0
    for t in range(steps):
        heads = heads + sample(f"x{t}", Bernoulli(0.5))          # N draws in one statement
        factor(f"ahead{t}", np.where(2 * heads > t + 1, 0.0, -1.0))
    return heads
'''


def test_run_inspect_and_report_a_vectorised_population(tmp_path):
    """`--policy vectorized-smc` runs an array program for 20,000 particles; its trace file (step
    records without per-particle segments) reads back in `inspect` and `report`."""
    path = tmp_path / "coins.py"
    path.write_text(VECTOR_MODULE)
    trace = tmp_path / "v.jsonl"
    proc = swarm("run", str(path), "--policy", "vectorized-smc", "--particles", "20000", "--seed", "0",
                 "--trace", str(trace))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^log Z = -1\.8\d+ +ESS = [\d.]+ / 20000 ", proc.stdout, re.M), proc.stdout
    assert read_trace_file(trace).run.policy == "VectorizedSMC"
    inspected = swarm("inspect", str(trace))
    assert inspected.returncode == 0 and "★ final" in inspected.stdout, inspected.stderr
    report = swarm("report", str(trace), "--html", str(tmp_path / "r.html"))
    assert report.returncode == 0 and (tmp_path / "r.html").stat().st_size > 10_000, report.stderr
