"""What a reader sees first in Phoenix (issue 19): OpenInference input/output of the run, step and
particle spans, lineage on every particle span, the final population with its final weights,
sessions; and the run's context while it goes on (what agents propagate to their actors).

Uses the synthetic run of tests/test_otel.py: 4 particles, particle 2 killed by the guarantee
`valid` at step 1, resampled there with ancestors [0, 0, 3, 1] into ids 4..7, which finish at
step 2 with values v0..v3.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace

import policies
from agents.agent_actor import trace_carrier
from observability.exporters import instrument
from swarm import Bernoulli, factor, sample
from tests.test_otel import replay, synthetic_run


def _export(records, capture_content: bool = False, **kw):
    inst = instrument("memory", register=False, capture_content=capture_content, **kw)
    replay(records, inst.listener)
    inst.shutdown()
    return list(inst.memory_exporter.get_finished_spans())


def _one(spans, name):
    (span,) = [s for s in spans if s.name == name]
    return span


def _particle(spans, step, pid):
    (span,) = [s for s in spans if s.name == f"plp.particle {pid}" and s.attributes["plp.step"] == step]
    return span


@pytest.fixture(scope="module")
def plain():
    records = synthetic_run()
    return _export(records), records


def test_run_input_and_output_without_content(plain):
    spans, records = plain
    run, end = _one(spans, "plp.run SMC"), records[-1][1]
    assert run.attributes["input.mime_type"] == run.attributes["output.mime_type"] == "application/json"
    assert json.loads(run.attributes["input.value"]) == {"program": "tests.synthetic", "policy": "SMC",
                                                         "num_particles": 4, "runtime": "local"}
    out = json.loads(run.attributes["output.value"])
    assert out == {"log_evidence": end.log_evidence, "ess": end.ess, "num_particles": 4, "deaths": {"valid": 1}}


def test_run_output_with_content_lists_the_top_answers():
    records = synthetic_run()
    end = records[-1][1]
    end.values = ["v0", "v1", "v0", ("t", 1)]   # the marginal groups equal values; a tuple as JSON
    run = _one(_export(records, capture_content=True), "plp.run SMC")
    w = np.exp(np.array(end.log_weights) - max(end.log_weights))
    w /= w.sum()
    want = sorted([["v0", w[0] + w[2]], ["v1", w[1]], [["t", 1], w[3]]], key=lambda kv: -kv[1])
    got = json.loads(run.attributes["output.value"])["answers"]
    assert [v for v, _ in got] == [v for v, _ in want]
    assert [p for _, p in got] == pytest.approx([p for _, p in want], abs=1e-6)   # rounded to 6 places
    assert "answers" not in json.loads(_one(_export(synthetic_run()), "plp.run SMC").attributes["output.value"])


def test_particle_and_step_outputs(plain):
    spans, records = plain
    assert _particle(spans, 1, 2).attributes["output.value"] == "killed by valid"
    assert _particle(spans, 1, 0).attributes["output.value"] == "at check"
    assert _particle(spans, 2, 4).attributes["output.value"] == "finished"   # the value is content
    assert _particle(_export(synthetic_run(), capture_content=True), 2, 4).attributes["output.value"] == "v0"
    step1, rec = _one(spans, "plp.step 1"), records[2][1]
    assert step1.attributes["plp.ess_fraction"] == pytest.approx(rec.ess / 4, rel=1e-12)
    assert step1.attributes["output.value"] == f"ESS {rec.ess:.4g}/4 | log Z {rec.log_evidence:.6g} | 1 died | resampled"


def test_lineage_and_ancestor_span_ids(plain):
    spans, _ = plain
    for step in (0, 1):
        for pid in range(4):
            assert tuple(_particle(spans, step, pid).attributes["plp.lineage"]) == (pid,)
            assert "plp.ancestor_span_id" not in _particle(spans, step, pid).attributes
    for j, parent in enumerate([0, 0, 3, 1]):
        child = _particle(spans, 2, 4 + j)
        assert tuple(child.attributes["plp.lineage"]) == (parent, 4 + j)
        assert child.attributes["plp.lineage_path"] == f"/{parent}/{4 + j}/"
        assert child.attributes["plp.ancestor_span_id"] == format(_particle(spans, 1, parent).context.span_id, "016x")


def test_final_population_spans_carry_the_final_weights(plain):
    spans, records = plain
    run, end = _one(spans, "plp.run SMC"), records[-1][1]
    w = np.exp(np.array(end.log_weights) - max(end.log_weights))
    w /= w.sum()
    for j, parent in enumerate([0, 0, 3, 1]):
        final = _one(spans, f"plp.final {4 + j}")
        assert final.parent.span_id == run.context.span_id and final.attributes["plp.final"] is True
        assert final.attributes["plp.normalized_weight"] == pytest.approx(w[j], rel=1e-12)
        assert tuple(final.attributes["plp.lineage"]) == (parent, 4 + j)
        assert final.links[0].context.span_id == _particle(spans, 2, 4 + j).context.span_id
        assert final.start_time == final.end_time == end.ended_at_ns


def test_sessions_group_the_runs_of_one_listener():
    inst = instrument("memory", register=False)
    replay(synthetic_run(run_id="a"), inst.listener)
    replay(synthetic_run(run_id="b"), inst.listener)
    token = otel_context.attach(otel_context.set_value("session.id", "chat-42"))  # OpenInference using_session
    try:
        replay(synthetic_run(run_id="c"), inst.listener)
    finally:
        otel_context.detach(token)
    inst.shutdown()
    runs = {s.attributes["plp.run_id"]: s for s in inst.memory_exporter.get_finished_spans()
            if s.name.startswith("plp.run")}
    assert runs["a"].attributes["session.id"] == runs["b"].attributes["session.id"] == inst.listener.session_id
    assert runs["c"].attributes["session.id"] == "chat-42"
    other = _one(_export(synthetic_run()), "plp.run SMC")
    assert other.attributes["session.id"] != inst.listener.session_id   # one session per listener
    assert _one(_export(synthetic_run(), session_id="mine"), "plp.run SMC").attributes["session.id"] == "mine"


def test_the_run_context_is_current_while_the_run_goes_on():
    """What an async program (and so an agent) sees during the run: the run span, flagged for
    agents; `trace_carrier` names a fresh span id per call in the run's trace. Afterwards: nothing."""
    seen = []

    async def program():
        seen.append((trace.get_current_span().get_span_context(), trace_carrier(), trace_carrier()))
        x = sample("x", Bernoulli(0.5))
        factor("f", 0.0 if x else -1.0)
        return x

    inst = instrument("memory", register=False)
    policies.SMC(num_particles=3, seed=0, listeners=[inst.listener]).run(program)
    inst.shutdown()
    run = _one(inst.memory_exporter.get_finished_spans(), "plp.run SMC")
    assert len(seen) >= 3   # every particle, at each segment (an async program re-executes, replaying)
    for current, first, second in seen:
        assert (current.trace_id, current.span_id) == (run.context.trace_id, run.context.span_id)
        assert current.trace_state.get("plp") == "run"
        versions = [c["traceparent"].split("-") for c in (first, second)]
        assert all(v[1] == format(run.context.trace_id, "032x") for v in versions)
        assert len({v[2] for v in versions} | {format(run.context.span_id, "016x")}) == 3   # new ids
    assert not trace.get_current_span().get_span_context().is_valid and trace_carrier() == {}


def test_runs_nest_under_a_run_that_is_going_on():
    """A run started inside a program of another run is a child of that run's span."""
    inner_policy = policies.SMC(num_particles=2, seed=1)

    async def outer():
        result = await inner_policy.model_copy(update={"listeners": [inst.listener]}).run_async(_inner)
        factor("f", 0.0)
        return len(result.particles)

    inst = instrument("memory", register=False)
    policies.SMC(num_particles=1, seed=0, listeners=[inst.listener]).run(outer)
    inst.shutdown()
    runs = [s for s in inst.memory_exporter.get_finished_spans() if s.name.startswith("plp.run")]
    (parent,) = [s for s in runs if s.parent is None]
    children = [s for s in runs if s.parent is not None]   # the program re-executes at each step
    assert children and len(runs) == 1 + len(children)
    assert all(c.parent.span_id == parent.context.span_id and c.context.trace_id == parent.context.trace_id
               for c in children)


def _inner():
    x = sample("x", Bernoulli(0.5))
    factor("g", math.log(0.5) if x else 0.0)
    return x
