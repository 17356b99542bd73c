"""A clear ImportError when another top-level `agents` package (openai-agents installs one) is the
one Python imports: from `swarm.agents_package.require_own_agents`, the `swarm run` CLI and the
examples. The shadowing package is a fake written to a temporary directory put first on the path of
a subprocess, as a site-packages install of openai-agents would be.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from swarm import SwarmError
from swarm import agents_package
from swarm.agents_package import AgentsShadowedError, require_own_agents

REPO = pathlib.Path(__file__).resolve().parents[1]
FAKE = '''"""Not plp-swarm: what openai-agents' top-level package looks like from outside."""
class Agent:
    def __init__(self, name, instructions=None, **kwargs):
        self.name = name
class Runner:
    pass
'''


@pytest.fixture
def shadow(tmp_path) -> pathlib.Path:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "__init__.py").write_text(FAKE)
    return tmp_path


def _run(args: list[str], shadow_dir: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow_dir), str(REPO)])}
    return subprocess.run([sys.executable, *args], cwd=shadow_dir, env=env, capture_output=True, text=True,
                          timeout=120)


def test_our_agents_package_is_found_when_nothing_shadows_it():
    assert require_own_agents() == REPO / "agents"


def test_the_check_names_both_packages_and_the_fix(shadow):
    done = _run(["-c", "from swarm.agents_package import require_own_agents; require_own_agents()"], shadow)
    assert done.returncode != 0
    assert "AgentsShadowedError" in done.stderr and "openai-agents" in done.stderr
    assert str(shadow / "agents" / "__init__.py") in done.stderr and str(REPO / "agents") in done.stderr


def test_an_example_stops_at_once_with_the_clear_error(shadow):
    done = _run([str(REPO / "examples" / "constrained_smc.py")], shadow)
    assert done.returncode != 0
    assert "AgentsShadowedError" in done.stderr, done.stderr[-2000:]
    assert "cannot import name" not in done.stderr  # the confusing error it replaces


def test_the_cli_refuses_a_program_that_imports_agents(shadow):
    """A user's program that imports `agents` without checking: the CLI checks before loading it."""
    (shadow / "prog.py").write_text("from agents import Agent, GenerationSettings\n\ndef program():\n    return 1\n")
    done = _run(["-m", "observability.cli", "run", str(shadow / "prog.py")], shadow)
    assert done.returncode == 1
    assert "swarm run: error: plp-swarm needs its own 'agents' package" in done.stderr, done.stderr[-2000:]


def test_the_cli_only_checks_programs_that_import_agents():
    from observability.programs import _imports_agents

    assert _imports_agents(REPO / "examples" / "debate.py")
    assert not _imports_agents(REPO / "examples" / "tempering.py")


def test_a_package_installed_over_ours_in_the_same_place_is_caught(shadow, monkeypatch):
    """pip installing openai-agents into the same site-packages replaces agents/__init__.py: the
    directory is ours, the file is not (it lacks the marker)."""
    monkeypatch.setattr(agents_package, "own_agents_dir", lambda: (shadow / "agents").resolve())
    monkeypatch.syspath_prepend(str(shadow))
    monkeypatch.delitem(sys.modules, "agents", raising=False)
    with pytest.raises(AgentsShadowedError) as info:
        require_own_agents()
    assert isinstance(info.value, ImportError) and isinstance(info.value, SwarmError)
