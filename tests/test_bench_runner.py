"""`python -m bench` on a fresh machine: every library a benchmark imports is installed by
`scripts/setup.sh --bench` (and `--test`), and a missing one stops the run before anything runs,
naming the benchmark, the library and the command that installs it."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bench import run as bench_run


def test_every_benchmark_s_libraries_are_installed():
    """setup.sh --test installs the bench extra: a benchmark importing a library that no extra
    installs (aiohttp and outlines-core were such, found on a fresh clone) fails here, not on the
    machine that reruns the benchmarks."""
    assert bench_run.missing_libraries(bench_run.BENCHMARKS) == {}


def _fake_bench_dir(tmp_path: Path, modules: dict[str, str]) -> Path:
    folder = tmp_path / "bench"
    folder.mkdir()
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


def test_imported_libraries_follow_bench_imports_and_leave_out_the_stdlib_and_the_project(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_run, "BENCH_DIR", _fake_bench_dir(tmp_path, {
        "top": """
            import json, os.path
            from bench import helper
            import swarm, policies.smc
            def later():
                import zzz_lazy_lib.sub
        """,
        "helper": "from .deeper import thing\nfrom bench.common import row\nimport numpy as np\n",
        "deeper": "from yyy_lib import thing\nimport sibling_script\n",
        "common": "import xxx_common_lib\n",
        "sibling_script": "import its_only_run_by_path\n",
        "unrelated": "import never_imported_by_top\n",
    }))
    assert bench_run.imported_libraries("top") == {"zzz_lazy_lib", "numpy", "yyy_lib", "xxx_common_lib"}


def test_main_stops_before_running_anything_when_a_library_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_run, "BENCH_DIR", _fake_bench_dir(tmp_path, {
        "needs_missing": "def run():\n    import no_such_library_for_plp_tests\n",
    }))
    fake = bench_run.Benchmark("needs_missing", "imports a library nobody installed")
    monkeypatch.setattr(bench_run, "BENCHMARKS", [fake])
    monkeypatch.setattr(bench_run, "BY_NAME", {fake.name: fake})
    monkeypatch.setattr(bench_run, "_available", lambda bench: True)
    monkeypatch.setattr(bench_run, "RESULTS_JSON", tmp_path / "results.json")
    ran = []
    monkeypatch.setattr(bench_run, "run_benchmark", lambda *args: ran.append(args))
    assert bench_run.main(["--only", "needs_missing"]) == 2
    err = capsys.readouterr().err
    assert "needs_missing imports no_such_library_for_plp_tests" in err
    assert "bash scripts/setup.sh --bench" in err
    assert ran == [] and not (tmp_path / "results.json").exists()

