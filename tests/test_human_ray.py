"""A run that pauses for a person on Ray segment workers: the answers reach the workers (in the run
scope's plain values) and the resumed run equals the uninterrupted local one."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from tests import human_driver  # noqa: E402
from tests.ray_fixtures import local_ray  # noqa: E402

pytestmark = pytest.mark.ray


def test_a_run_paused_on_ray_resumes_on_ray_to_the_uninterrupted_local_result(tmp_path):
    policy = human_driver.make_policy("smc").model_copy(update={"runtime": "ray"})
    with local_ray(num_cpus=2):
        waiting = policy.run(human_driver.program, *human_driver.ARGS)
        assert waiting.status == "waiting" and {q.name for q in waiting.pending} == {"keep"}
        done = policy.resume(waiting.checkpoint, human_driver.program, *human_driver.ARGS,
                             answers=human_driver.ANSWERS)  # both answers: the second is asked later
    assert done.status == "finished"
    local = human_driver.make_policy("smc").model_copy(update={"answers": human_driver.ANSWERS})
    assert human_driver.summary(done) == human_driver.summary(local.run(human_driver.program, *human_driver.ARGS))
