"""The `swarm` command on bad input and at the edges: each failure is one line on stderr naming the
culprit, with a nonzero exit and no traceback unless `--debug` asks for it. Real subprocesses of
the installed script, real files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "swarm"
REPO = Path(__file__).resolve().parents[1]

COINS = textwrap.dedent('''
    from swarm import Bernoulli, factor, guarantee, sample

    DEFAULTS = {"particles": 30, "seed": 0}


    def program(n=3):
        heads = 0
        for t in range(n):
            heads += sample(f"flip{t}", Bernoulli(0.5))
            factor(f"prefer_heads{t}", 0.3 * heads)
        guarantee("at_least_one", heads >= 1)
        return heads
''')


def swarm(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the installed `swarm` script (or `python -m observability.cli` if it is not installed)."""
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "observability.cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO, env=env)


def one_line_error(proc: subprocess.CompletedProcess, command: str = "run") -> str:
    """The single stderr line of a failed command (asserting there is no traceback)."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"swarm {command}: error: "), proc.stderr
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "coins.py").write_text(COINS)
    (tmp_path / "raises.py").write_text("X = 1\nraise RuntimeError('boom at import')\n\ndef program():\n    return 1\n")
    (tmp_path / "missing_import.py").write_text("import no_such_module_xyz\n\ndef program():\n    return 1\n")
    (tmp_path / "broken.py").write_text("def program(:\n    return 1\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    return tmp_path


@pytest.mark.parametrize("name, culprit", [
    ("raises.py", "raises.py, line 2: importing it raised RuntimeError: boom at import"),
    ("missing_import.py", "missing_import.py, line 1: importing it raised ModuleNotFoundError: "
                          "No module named 'no_such_module_xyz'"),
    ("broken.py", "broken.py, line 1: SyntaxError: invalid syntax"),
    ("exits.py", "exits.py, line 2: importing it called sys.exit(3)"),
])
def test_a_program_file_that_fails_at_import_is_one_line(files, name, culprit):
    """A program file that raises, fails an import, does not compile or exits while it is imported:
    one line naming the file and line (it was a raw traceback), the traceback under --debug."""
    for command in ("run", "mcp"):
        line = one_line_error(swarm(command, name, cwd=files), command)
        assert culprit in line and line.endswith("(--debug shows the traceback)"), line
    debug = swarm("run", name, "--debug", cwd=files)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("swarm run: error: ")
    assert "Traceback" in swarm("--debug", "run", name, cwd=files).stderr  # before the command, too


@pytest.mark.parametrize("args, culprit", [
    (["--particles", "0"], "--particles 0: invalid SMC.num_particles: Input should be greater than 0"),
    (["--particles", "-3", "--policy", "importance"], "--particles -3: invalid Importance.num_particles"),
])
def test_an_invalid_policy_setting_is_one_line_naming_the_option(files, args, culprit):
    """It was pydantic's four-line ValidationError with a URL."""
    assert culprit in one_line_error(swarm("run", "coins.py", *args, cwd=files))


def test_an_invalid_default_names_the_defaults(files):
    (files / "bad_defaults.py").write_text("DEFAULTS = {'particles': -1}\n\ndef program():\n    return 1\n")
    assert "DEFAULTS['particles'] = -1: invalid SMC.num_particles" in one_line_error(
        swarm("run", "bad_defaults.py", cwd=files))


@pytest.mark.parametrize("option, culprit", [
    (["--trace", "coins.py/out.jsonl"], "trace file coins.py/out.jsonl: cannot create it: coins.py is a file, "
                                        "not a directory"),
    (["--html", "coins.py/report.html"], "cannot write the report file coins.py/report.html: coins.py is a file"),
    (["--html", "."], "cannot write the report file .: it is a directory (give a file name)"),
    (["--html", "r.html", "--png-dir", "coins.py/png"], "cannot write the report file coins.py/png/ess.png"),
])
def test_an_output_that_cannot_be_written_fails_before_the_run(files, option, culprit):
    """It used to run the whole program first (hours, with an LLM), then fail on the output, with
    mkdir's bare "File exists" as the reason and the unwritten trace's path printed as if written."""
    proc = swarm("run", "coins.py", *option, cwd=files)
    assert culprit in one_line_error(proc)
    assert "step 1" not in proc.stdout and "answer marginal" not in proc.stdout  # the run did not start


def test_a_usage_error_leaves_an_existing_trace_file_alone(files):
    old = files / "old.jsonl"
    assert swarm("run", "coins.py", "--trace", str(old), cwd=files).returncode == 0
    before = old.read_bytes()
    assert swarm("run", "coins.py", "--trace", str(old), "--particles", "0", cwd=files).returncode == 1
    assert swarm("run", "coins.py", "--trace", str(old), "--arg", "nope=1", cwd=files).returncode == 2
    assert old.read_bytes() == before


def test_png_dir_without_html_is_a_usage_error(files):
    """--png-dir writes the report's plots; without --html it was silently ignored."""
    proc = swarm("run", "coins.py", "--png-dir", "png", cwd=files)
    assert proc.returncode == 2 and "give --html too" in proc.stderr and not (files / "png").exists()


def test_report_into_a_directory_names_it(files):
    """`swarm report T --html .` was a ValueError from pathlib ("has an empty name")."""
    assert swarm("run", "coins.py", "--trace", "t.jsonl", cwd=files).returncode == 0
    for target in (".", str(files)):
        line = one_line_error(swarm("report", "t.jsonl", "--html", target, cwd=files), "report")
        assert f"cannot write the report file {target}: it is a directory" in line


@pytest.mark.parametrize("name, data, culprit", [
    ("absent.jsonl", None, "cannot read it: No such file or directory"),
    ("empty.jsonl", b"", "the file holds no complete record"),
    ("binary.jsonl", b"\x89PNG\x00\x01", "the file holds no complete record (only 6 bytes without a newline)"),
    ("text.txt", b"hello\n", "line 1 is not valid JSON"),
    ("other.jsonl", b'{"kind": "span"}\n', "line 1: 'kind' must be one of"),
    ("adir", "dir", "cannot read it: Is a directory"),
])
def test_inspect_and_report_refuse_what_is_not_a_trace_file(tmp_path, name, data, culprit):
    path = tmp_path / name
    if data == "dir":
        path.mkdir()
    elif data is not None:
        path.write_bytes(data)
    for command in ("inspect", "report"):
        line = one_line_error(swarm(command, str(path), cwd=tmp_path), command)
        assert f"trace file {path}: {culprit}" in line, line
    assert not (tmp_path / f"{path.stem}.html").exists()


SLEEPY = textwrap.dedent('''
    import time
    from swarm import Bernoulli, factor, sample

    def program(steps=3):
        for t in range(steps):
            x = sample(f"x{t}", Bernoulli(0.5))
            time.sleep(0.02)
            factor(f"f{t}", 0.1 * x)
        return x
''')


def test_the_progress_times_are_the_run_s_own(tmp_path):
    """A plain (non-async) program's events reach the display only when the run yields to the event
    loop, here all at the end: the times were measured from when the display saw the first event,
    so a run of at least 10 particles × 3 sleeps of 20 ms "finished in 0.01 s"."""
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    proc = swarm("run", "sleepy.py", "--particles", "10", "--seed", "0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    finished = re.search(r"^run finished in ([\d.]+) s", proc.stdout, re.M)
    step_times = [float(t) for t in re.findall(r"^step \d+ \|.* \| ([\d.]+) s$", proc.stdout, re.M)]
    assert finished and float(finished.group(1)) >= 0.6, proc.stdout
    assert step_times == sorted(step_times) and step_times[-1] >= 0.6, proc.stdout


ASYNC_SLOW = textwrap.dedent('''
    import asyncio
    from swarm import Bernoulli, factor, sample

    async def program(steps=400):
        heads = 0
        for t in range(steps):
            heads += sample(f"x{t}", Bernoulli(0.5))
            await asyncio.sleep(0.02)
            factor(f"f{t}", 0.1 * heads)
        return heads
''')


def test_ctrl_c_keeps_the_trace_and_writes_the_report_of_the_run_so_far(tmp_path):
    """SIGINT mid-run: exit 130, "interrupted" (not "failed: KeyboardInterrupt: "), the trace file
    closed and readable, the report written and both paths printed (they were not)."""
    import signal

    from observability.trace_file import read_trace_file

    (tmp_path / "slow.py").write_text(ASYNC_SLOW)
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "observability.cli"]
    proc = subprocess.Popen([*cmd, "run", "slow.py", "-n", "8", "--trace", "t.jsonl", "--html", "r.html"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    while not any(line.startswith("step 3 ") for line in seen):
        line = proc.stdout.readline()
        assert line, (seen, proc.stderr.read())
        seen.append(line)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "swarm run: interrupted (the run so far is in the trace file and the report below)", err
    assert re.search(r"^run interrupted after [\d.]+ s$", out, re.M), out
    assert "trace:  t.jsonl" in out and "report: r.html" in out
    trace = read_trace_file(tmp_path / "t.jsonl")
    assert trace.complete and 3 <= len(trace.steps) < 400 and trace.finished.error
    assert "plp-swarm run report" in (tmp_path / "r.html").read_text()


def test_inspect_and_report_of_a_run_that_failed_say_so(tmp_path):
    """A run whose particles all die: no log Z and no "★ final" population in `inspect` (the last
    recorded step's were shown as the run's), and the report says the run failed."""
    (tmp_path / "doomed.py").write_text(textwrap.dedent('''
        from swarm import Bernoulli, factor, guarantee, sample

        def program():
            x = sample("x", Bernoulli(0.5))
            factor("f", 0.0)
            sample("y", Bernoulli(0.5))
            guarantee("never", False)
            return x
    '''))
    run = swarm("run", "doomed.py", "-n", "5", "--trace", "t.jsonl", "--html", "r.html", cwd=tmp_path)
    assert run.returncode == 1 and "no surviving particles" in run.stderr and "Traceback" not in run.stderr
    assert run.stderr.startswith("swarm run: error: NoSurvivingParticles")
    shown = swarm("inspect", "t.jsonl", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "log Z = -, ESS = -" in shown.stdout and "run failed: NoSurvivingParticles" in shown.stdout
    assert "★ final" not in shown.stdout and "deaths: 5 (guarantee 'never': 5)" in shown.stdout
    assert shown.stdout.count("✗ killed by guarantee 'never'") == 5  # the step they died in is recorded
    html = (tmp_path / "r.html").read_text()
    assert "The run failed: NoSurvivingParticles" in html and "<td>log Z</td><td>-</td>" in html


@pytest.mark.parametrize("steps", [4, 120])
def test_the_genealogy_plot_labels_whole_steps_and_particles_readably(tmp_path, steps):
    """With many steps every step got its own x label, overprinted into a black smear, and the
    particle index axis had ticks such as 2.5."""
    import numpy as np

    import policies
    from observability.html_report import genealogy_figure
    from observability.trace_file import TraceFileWriter, read_trace_file
    from swarm import Bernoulli, factor, sample

    def walk():
        heads = 0
        for t in range(steps):
            heads += sample(f"x{t}", Bernoulli(0.5))
            factor(f"f{t}", 0.2 * heads)
        return heads

    with TraceFileWriter(tmp_path / "t.jsonl") as writer:
        policies.SMC(num_particles=7, seed=0, listeners=[writer]).run(walk)
    fig = genealogy_figure(read_trace_file(tmp_path / "t.jsonl"))
    ax = fig.axes[0]
    xticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    yticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert len(xticks) <= 25 and np.allclose(xticks, np.round(xticks)), xticks
    assert np.allclose(yticks, np.round(yticks)), yticks
    if steps <= 25:
        assert [int(t) for t in xticks] == list(range(1, len(xticks) + 1))  # every step, when few


def test_inspect_of_a_tempered_smc_run_shows_its_final_particles(tmp_path):
    """TemperedSMC's step records gave the population's ids after resampling where the contract says
    before, so each offspring was read as its own parent: a cycle, no root, and `swarm inspect`
    printed "genealogy (20 of 1200 particles shown)" over an empty tree. The records now follow the
    contract: every final particle's lineage reaches a first-step particle."""
    (tmp_path / "dice.py").write_text(textwrap.dedent('''
        import policies
        from swarm import Categorical, factor, sample

        POLICY = policies.TemperedSMC(num_particles=30, rejuvenation_steps=1, seed=0)

        def program():
            total = sum(sample(f"d{i}", Categorical([1, 2, 3, 4, 5, 6])) for i in range(3))
            factor("near_15", -2.0 * abs(total - 15))
            return total
    '''))
    assert swarm("run", "dice.py", "--trace", "t.jsonl", cwd=tmp_path).returncode == 0
    from observability.trace_file import read_trace_file

    trace = read_trace_file(tmp_path / "t.jsonl")
    assert trace.steps and all(parent != pid for pid, parent in trace.genealogy().items())
    shown = swarm("inspect", "t.jsonl", "--max-particles", "3", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("★ final") >= 3, shown.stdout
    assert trace.inconsistent_steps() == [] and "lineages are cut there" not in shown.stdout
    first = {ps.particle_id for ps in trace.steps[0].particles} | set(trace.steps[0].particle_ids)
    assert all(trace.lineage(p.id)[0] in first for p in trace.final_population())


@pytest.mark.parametrize("args", [["run", "coins.py", "--arg", "junk"], ["run", "coins.py", "--arg", "2x=1"],
                                  ["run", "coins.py", "--answer", "novalue"], ["resume", ".", "--answer", "=1"]])
def test_a_malformed_option_value_is_a_usage_error(files, args):
    """Exit 2, as the help says for a usage error and as argparse's own errors do (it was 1)."""
    proc = swarm(*args, cwd=files)
    assert proc.returncode == 2 and "expected NAME=VALUE" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


SYNC_SLOW = textwrap.dedent('''
    import time
    from swarm import Bernoulli, factor, sample

    def program(steps=2000):
        heads = 0
        for t in range(steps):
            heads += sample(f"x{t}", Bernoulli(0.5))
            time.sleep(0.005)
            factor(f"f{t}", 0.01 * heads)
        return heads
''')


def test_ctrl_c_twice_on_a_plain_program_is_one_line(tmp_path):
    """A plain `def` program does not yield to the event loop, so the first Ctrl-C waits; the second
    stops it at once. That left asyncio's "Task exception was never retrieved" and a traceback of
    some 40 lines on stderr."""
    import signal

    (tmp_path / "slow.py").write_text(SYNC_SLOW)
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "observability.cli"]
    proc = subprocess.Popen([*cmd, "run", "slow.py", "-n", "4", "--trace", "t.jsonl"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    while not (tmp_path / "t.jsonl").exists() and time.monotonic() < deadline:  # opened just before the run
        time.sleep(0.05)
    for _ in range(2):
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert err.strip().splitlines() == ["swarm run: interrupted (the run so far is in the trace file below)"]


@pytest.mark.parametrize("url", ["notaurl", "127.0.0.1:6006/v1/traces", "ftp://127.0.0.1/x", "http://"])
def test_an_otlp_value_that_is_no_url_is_a_usage_error(files, url):
    """It ran the whole program, then failed every export ("No scheme supplied") and exited 0."""
    proc = swarm("run", "coins.py", "--otlp", url, cwd=files)
    assert proc.returncode == 2 and f"--otlp {url!r}: expected an http(s) URL" in proc.stderr, proc.stderr
    assert "answer marginal" not in proc.stdout


@pytest.mark.parametrize("defaults, culprit", [
    ("['x']", "DEFAULTS must be a dict with keys among policy, particles, seed, runtime, args, got list"),
    ("{'args': 5}", "DEFAULTS['args'] must be a dict of keyword arguments (name: value), got int"),
    ("{'particle': 5}", "DEFAULTS has unknown key(s) 'particle'; the keys are policy, particles, seed, runtime, args"),
])
def test_malformed_defaults_are_named(files, defaults, culprit):
    """A DEFAULTS that is no dict, or whose args are not, was an unexpected ValueError/TypeError; a
    misspelt key was silently ignored."""
    (files / "odd.py").write_text(f"DEFAULTS = {defaults}\n\ndef program():\n    return 1\n")
    for command in ("run", "mcp"):
        assert culprit in one_line_error(swarm(command, "odd.py", cwd=files), command)


def test_inspect_shows_at_most_k_dead_particles(tmp_path):
    """--max-particles K: "at most K final and K dead"; with six causes of death a round of one per
    cause ran past K (K=2 showed six dead)."""
    (tmp_path / "six.py").write_text(textwrap.dedent('''
        from swarm import Categorical, guarantee, sample

        def program():
            x = sample("x", Categorical([0, 1, 2, 3, 4, 5, 6, 7]))
            for k in range(6):
                guarantee(f"not_{k}", x != k)
            return x
    '''))
    assert swarm("run", "six.py", "-n", "80", "--seed", "1", "--trace", "t.jsonl", cwd=tmp_path).returncode == 0
    shown = swarm("inspect", "t.jsonl", "--max-particles", "2", cwd=tmp_path)
    assert shown.returncode == 0 and "deaths: " in shown.stdout
    assert 1 <= shown.stdout.count("✗ killed by") <= 2, shown.stdout
    assert shown.stdout.count("★ final") <= 2


def test_the_report_is_never_written_over_its_trace_file(files):
    """`swarm report t.jsonl --html t.jsonl` replaced the trace with the HTML page (and a trace
    named t.html did so by default): the run's only record was lost."""
    assert swarm("run", "coins.py", "--trace", "t.jsonl", cwd=files).returncode == 0
    (files / "t.html").write_bytes((files / "t.jsonl").read_bytes())
    before = (files / "t.jsonl").read_bytes()
    for args in (["report", "t.jsonl", "--html", "t.jsonl"], ["report", "t.html"],
                 ["run", "coins.py", "--trace", "t.jsonl", "--html", "./t.jsonl"]):
        proc = swarm(*args, cwd=files)
        assert proc.returncode == 2 and "that is the trace file; the report would overwrite it" in proc.stderr, args
    assert (files / "t.jsonl").read_bytes() == before == (files / "t.html").read_bytes()


@pytest.mark.parametrize("name", ["json", "logging", "policies", "swarm"])
def test_a_program_file_named_like_a_module_the_cli_uses_runs(tmp_path, name):
    """The program's module was registered under its file's stem, replacing the real module of that
    name: json.py, logging.py or policies.py failed with an unexpected AttributeError."""
    (tmp_path / f"{name}.py").write_text(COINS)
    proc = swarm("run", f"{name}.py", "--trace", "t.jsonl", "--html", "r.html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "answer marginal" in proc.stdout and (tmp_path / "r.html").exists()


def test_the_report_s_step_table_keeps_the_last_steps_of_a_long_run(tmp_path):
    """The table stopped at step 200 without a word: a longer run's last steps, where it ended,
    were missing."""
    (tmp_path / "long.py").write_text(textwrap.dedent('''
        from swarm import Bernoulli, factor, sample

        def program(steps=230):
            for t in range(steps):
                factor(f"f{t}", 0.01 * sample(f"x{t}", Bernoulli(0.5)))
            return 0
    '''))
    assert swarm("run", "long.py", "-n", "3", "--html", "r.html", cwd=tmp_path, timeout=120).returncode == 0
    html = (tmp_path / "r.html").read_text()
    table = html[html.index("<h2>Steps</h2>"):]
    assert "<td>231</td>" in table and "<td>1</td>" in table and "… 31 steps not shown …" in table
    assert table.count("<tr>") == 1 + 200 + 1  # the header, 200 steps, the gap


def test_a_file_of_several_runs_says_which_one_is_shown(tmp_path):
    """A writer appends every run it sees; inspect and report showed the last without a word."""
    import policies
    from observability.trace_file import TraceFileWriter
    from swarm import Bernoulli, sample

    def coin():
        return sample("x", Bernoulli(0.5))

    writer = TraceFileWriter(tmp_path / "t.jsonl")
    ids = [policies.SMC(num_particles=4, seed=s, listeners=[writer]).run(coin).run_id for s in (0, 1)]
    writer.close()
    for command in ("inspect", "report"):
        proc = swarm(command, "t.jsonl", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert f"note: t.jsonl holds 2 runs ({ids[0]}, {ids[1]}); showing the last" in proc.stderr
        named = swarm(command, "t.jsonl", "--run", ids[0], cwd=tmp_path)
        assert named.returncode == 0 and "note:" not in named.stderr
    assert f"run {ids[0]}:" in swarm("inspect", "t.jsonl", "--run", ids[0], cwd=tmp_path).stdout


def test_a_run_that_waits_for_a_person_is_not_shown_as_finished(tmp_path):
    """The display's last line said "run finished in 0.07 s: log Z 0.0000" for a run that paused."""
    (tmp_path / "ask.py").write_text(textwrap.dedent('''
        from swarm import Bernoulli, ask_human, guarantee, sample

        async def program():
            x = sample("x", Bernoulli(0.5))
            answer = await ask_human("keep", f"Keep {x}?", schema={"enum": ["yes", "no"]})
            guarantee("kept", answer == "yes" or x == 1)
            return x
    '''))
    proc = swarm("run", "ask.py", "-n", "10", "--seed", "0", "--checkpoint", "ck", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert re.search(r"^run paused after [\d.]+ s: waiting for a person \(2 question\(s\)\)$", proc.stdout, re.M)
    assert "run finished" not in proc.stdout


def test_debug_shows_the_traceback_of_a_run_that_fails(tmp_path):
    """--debug printed nothing more when the run itself failed (cmd_run reports that error)."""
    (tmp_path / "doomed.py").write_text("from swarm import guarantee\n\ndef program():\n"
                                        "    guarantee('never', False)\n")
    plain = swarm("run", "doomed.py", "-n", "3", cwd=tmp_path)
    debug = swarm("run", "doomed.py", "-n", "3", "--debug", cwd=tmp_path)
    assert plain.returncode == debug.returncode == 1
    assert "Traceback" not in plain.stderr and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()
