"""The public surface, by kind: algorithms in `policies`, potentials in `policies.potentials`,
utilities in their own modules, built-in backends through one lazy registry, and the old names
still working with a DeprecationWarning that names the new home.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings

import pytest

import agents
import agents.backends
import policies
import policies.potentials
from agents import Agent, RayHosting
from agents.backends.base import Backend

BUILDING_BLOCKS = {"Budget", "Policy", "RunContext"}
"""What `policies` exports besides algorithms: what a user needs to configure or write one."""


def test_policies_exports_algorithms_and_their_building_blocks_only():
    for name in policies.__all__:
        obj = getattr(policies, name)
        assert name in BUILDING_BLOCKS or (inspect.isclass(obj) and issubclass(obj, policies.Policy)), name


def test_every_policy_class_is_exported_from_policies():
    defined = set()
    for info in pkgutil.iter_modules(policies.__path__, "policies."):
        module = importlib.import_module(info.name)
        defined |= {name for name, obj in vars(module).items()
                    if inspect.isclass(obj) and issubclass(obj, policies.Policy) and obj is not policies.Policy
                    and obj.__module__ == module.__name__ and not name.startswith("_")}
    assert defined and defined <= set(policies.__all__), sorted(defined - set(policies.__all__))


def test_potentials_namespace_holds_judges_calibration_and_critics():
    from policies.critics import RolloutCritic
    from policies.judges import Judge, point_estimate

    assert policies.potentials.Judge is Judge and policies.potentials.RolloutCritic is RolloutCritic
    assert policies.potentials.point_estimate is point_estimate
    assert not any(inspect.isclass(getattr(policies.potentials, n)) and issubclass(getattr(policies.potentials, n),
                                                                                    policies.Policy)
                   for n in policies.potentials.__all__)


@pytest.mark.parametrize(("name", "home"), [
    ("Judge", "policies.potentials"), ("Calibration", "policies.potentials"),
    ("RolloutCritic", "policies.potentials"), ("EnumerationCritic", "policies.potentials"),
    ("JudgeCritic", "policies.potentials"), ("diagnose", "policies.diagnostics"),
])
def test_moved_names_still_work_and_warn_with_their_new_home(name, home):
    with pytest.warns(DeprecationWarning, match=home.replace(".", r"\.")):
        old = getattr(policies, name)
    assert old is getattr(importlib.import_module(home), name)
    assert name not in policies.__all__


def test_mellowmax_is_a_module_of_utilities_and_calling_it_still_works_with_a_warning():
    from policies.mellowmax import mellowmax

    assert inspect.ismodule(policies.mellowmax) and "mellowmax" not in policies.__all__
    with pytest.warns(DeprecationWarning, match="from policies.mellowmax import mellowmax"):
        value = policies.mellowmax([0.0, 1.0], 2.0)
    assert value == mellowmax([0.0, 1.0], 2.0)


def test_unknown_names_are_attribute_errors_naming_the_module():
    for module in (policies, agents, agents.backends):
        with pytest.raises(AttributeError, match=f"module '{module.__name__}' has no attribute 'Nope'"):
            module.Nope


# -- the backend registry ---------------------------------------------------------------------------
def test_one_lazy_registry_serves_both_agents_and_agents_backends():
    for name in agents.backends.BUILT_IN:
        assert getattr(agents, name) is getattr(agents.backends, name)
        assert issubclass(getattr(agents, name), Backend)
        assert name in agents.__all__ and name in agents.backends.__all__


def test_every_built_in_backend_class_is_in_the_registry():
    found = set()
    for info in pkgutil.iter_modules(agents.backends.__path__, "agents.backends."):
        module = importlib.import_module(info.name)
        found |= {name for name, obj in vars(module).items() if inspect.isclass(obj) and issubclass(obj, Backend)
                  and obj is not Backend and obj.__module__ == module.__name__ and not name.startswith("_")}
    assert found == set(agents.backends.BUILT_IN)


def test_the_default_backend_has_one_home():
    assert agents.default_backend is agents.backends.default_backend


# -- Agent no longer repeats RayHosting's fields ----------------------------------------------------
def test_agent_pool_keywords_are_deprecated_and_fold_into_a_ray_hosting():
    with pytest.warns(DeprecationWarning, match="hosting=RayHosting"):
        agent = Agent(name="a", hosting="ray", replicas=3, max_concurrency=2, resources={"num_gpus": 1, "llm": 2})
    assert agent.hosting == RayHosting(replicas=3, max_concurrency=2, num_gpus=1, resources={"llm": 2})
    assert agent.hosted_on_ray()
    with pytest.warns(DeprecationWarning, match=r"ray_hosting\(\)\.replicas"):
        assert agent.replicas == 3
    assert not {"replicas", "max_concurrency", "resources"} & set(Agent.model_fields)


def test_auto_hosting_with_a_pool_shape_keeps_its_local_fallback():
    with pytest.warns(DeprecationWarning):
        agent = Agent(name="auto", replicas=2)  # hosting "auto", the default
    assert agent.hosting == RayHosting(replicas=2, local_fallback=True)
    assert not agent.hosted_on_ray()  # Ray is not initialised in this test process
    assert agent.ray_hosting() == RayHosting(replicas=2)  # the fallback is not part of the pool's identity
    assert Agent(name="r", hosting=RayHosting(replicas=2)).hosted_on_ray()


def test_pool_keywords_beside_a_ray_hosting_are_refused_naming_them():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match="max_concurrency: give the pool's shape in hosting=RayHosting"):
            Agent(name="x", hosting=RayHosting(), max_concurrency=4)
