"""The error contract: every error the framework defines derives from `swarm.SwarmError`, and
`swarm.ParticleLost` marks the ones that lose a particle instead of aborting the run.

Found by walking every module of the four packages, so a new error class that forgets the root
fails here without anyone having to list it. Classes that derive from `BaseException` but not
`Exception` are control signals (a suspended segment, a killed particle, an enumeration branch),
not errors, and are left out.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import warnings

import pytest

import swarm
from swarm.errors import ParticleLost, SwarmError

PACKAGES = ("swarm", "agents", "policies", "observability")


def _modules():
    for name in PACKAGES:
        package = importlib.import_module(name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            with warnings.catch_warnings():  # deprecated shims (agents.hosting) are modules too
                warnings.simplefilter("ignore", DeprecationWarning)
                yield importlib.import_module(info.name)


def _error_classes() -> dict[str, type]:
    found = {}
    for module in _modules():
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_framework_error_derives_from_swarm_error():
    classes = _error_classes()
    assert len(classes) >= 20, f"the walk found too few error classes to be trusted: {sorted(classes)}"
    strays = sorted(name for name, cls in classes.items() if not issubclass(cls, SwarmError))
    assert not strays, f"error classes outside the SwarmError root: {strays}"


def test_the_errors_that_lose_a_particle_are_the_infrastructure_ones():
    lost = sorted(name for name, cls in _error_classes().items() if issubclass(cls, ParticleLost))
    assert lost == ["agents.backends.base.BackendError", "agents.backends.llama_context.DecodeFailed",
                    "agents.mcp.errors.MCPCallFailed", "swarm.errors.ParticleLost"]


@pytest.mark.parametrize(("path", "old_base"), [
    ("agents.backends.embedded.EmbeddedModelNotFound", FileNotFoundError),
    ("agents.sandbox.SandboxUnavailable", RuntimeError),
    ("agents.ray_hosting.AgentHostingError", RuntimeError),
    ("swarm.errors.InvalidPotentialError", ValueError),
])
def test_errors_keep_their_old_bases_so_existing_except_clauses_still_catch_them(path, old_base):
    module, name = path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, SwarmError) and issubclass(cls, old_base)


def test_one_except_clause_catches_a_backend_failure_and_its_fields_survive_pickling():
    from agents import BackendError

    err = BackendError("server said 503", status_code=503, retryable=True, source="openai:m")
    with pytest.raises(swarm.SwarmError):
        raise err
    copy = pickle.loads(pickle.dumps(err))  # errors cross process boundaries under Ray
    assert type(copy) is BackendError and str(copy) == "server said 503"
    assert (copy.status_code, copy.retryable, copy.source) == (503, True, "openai:m")


def test_swarm_errors_with_their_own_init_survive_pickling_with_their_fields():
    """`NoSurvivingParticles(causes, ...)` did not unpickle (pickle called `__init__(message)`): a run
    ending that way inside a Ray task or another process raised a ValueError about a dictionary."""
    from swarm.errors import BackendUnavailable, NoSurvivingParticles, ParticleLost, UnawaitedSampleError

    errors = [NoSurvivingParticles({"KeyError after f": 3, "fit": 1}, policy="SMC", detail="2 lost",
                                   examples={"KeyError after f": "KeyError: 'a'"}),
              ParticleLost("tool server gone", source="mcp:calc"),
              BackendUnavailable("4 of 4 lost", site="s", source="m", last_error="503"),
              UnawaitedSampleError("sample 'x' never awaited")]
    for err in errors:
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is type(err) and str(copy) == str(err) and copy.args == err.args
        assert copy.__dict__ == err.__dict__
    assert "(first: KeyError: 'a')" in str(errors[0]) and pickle.loads(pickle.dumps(errors[0])).causes["fit"] == 1


def test_a_tool_lets_the_frameworks_own_errors_through_but_returns_its_own_failures():
    import asyncio

    from agents import BackendError, tool

    @tool
    def flaky(x: int) -> str:
        if x == 0:
            raise BackendError("the model behind this tool is gone")
        raise KeyError(x)

    assert asyncio.run(flaky.call({"x": 1})).startswith("error: KeyError")
    with pytest.raises(BackendError):
        asyncio.run(flaky.call({"x": 0}))
