"""End to end through a real Arize Phoenix: export a synthetic SMC run over OTLP/HTTP with
`instrument("otlp")`, read the spans back through Phoenix's REST API, compare with the records.

Needs `.venv-phoenix` (scripts/install_phoenix.sh); skipped otherwise. Phoenix takes about 10 s to
start, so one server serves the module.
"""

from __future__ import annotations

import math
import uuid

import pytest

try:  # tests/ is not a package: pytest puts it on sys.path (rootdir-relative if it becomes one)
    from phoenix_server import phoenix_available, phoenix_server
    from test_otel import replay, synthetic_run
except ImportError:  # pragma: no cover
    from tests.phoenix_server import phoenix_available, phoenix_server
    from tests.test_otel import replay, synthetic_run

from observability.exporters import instrument

pytestmark = [
    pytest.mark.phoenix,
    pytest.mark.server,
    pytest.mark.skipif(not phoenix_available(),
                       reason="Phoenix is not installed: run scripts/install_phoenix.sh "
                              "(creates .venv-phoenix/bin/phoenix)"),
]
NUM_SPANS = 22  # run + 3 steps + 12 particle steps + 1 LLM + 1 tool + 4 final particles


@pytest.fixture(scope="module")
def phoenix():
    with phoenix_server(timeout_s=120) as server:
        yield server


@pytest.fixture(scope="module")
def exported(phoenix):
    """(spans read back from Phoenix, records sent) for one synthetic run in a fresh project."""
    project = f"plp-test-{uuid.uuid4().hex[:8]}"
    inst = instrument("otlp", endpoint=phoenix.otlp_endpoint, project=project, register=False)
    records = synthetic_run()
    replay(records, inst.listener)
    inst.shutdown()  # flushes the BatchSpanProcessor
    spans = phoenix.wait_for_spans(project, NUM_SPANS, timeout_s=60)
    assert len(spans) == NUM_SPANS, f"Phoenix has {len(spans)} spans:\n{phoenix.log_tail()}"
    return spans, records


def _particle(spans, step, pid):
    (s,) = [s for s in spans if s["name"].startswith("plp.particle ")
            and s["attributes"]["plp.step"] == step and s["attributes"]["plp.particle_id"] == pid]
    return s


def _steps(records):
    return [r for m, r in records if m == "on_step"]


def test_weights_round_trip_exactly(exported):
    spans, records = exported
    for rec in _steps(records):
        (step,) = [s for s in spans if s["name"] == f"plp.step {rec.step}"]
        assert step["attributes"]["plp.ess"] == rec.ess
        assert step["attributes"]["plp.log_evidence"] == rec.log_evidence
        for p in rec.particles:
            a = _particle(spans, rec.step, p.particle_id)["attributes"]
            assert a["plp.normalized_weight"] == p.normalized_weight
            if math.isfinite(p.log_weight):
                assert a["plp.log_weight"] == p.log_weight
            else:
                assert "plp.log_weight" not in a and a["plp.dead"] is True
        total = sum(_particle(spans, rec.step, p.particle_id)["attributes"]["plp.normalized_weight"]
                    for p in rec.particles)
        assert total == pytest.approx(1.0, abs=1e-12)


def test_tree_kinds_and_ancestry(exported):
    spans, records = exported
    (run,) = [s for s in spans if s["name"] == "plp.run SMC"]
    assert run["parent_id"] is None and run["span_kind"] == "CHAIN"
    assert run["attributes"]["plp.log_evidence"] == records[-1][1].log_evidence
    steps = {s["attributes"]["plp.step"]: s for s in spans if s["name"].startswith("plp.step ")}
    assert all(s["parent_id"] == run["context"]["span_id"] for s in steps.values())
    for s in spans:
        if s["name"].startswith("plp.particle "):
            assert s["parent_id"] == steps[s["attributes"]["plp.step"]]["context"]["span_id"]
    kinds = {s["name"].split(" ")[0]: s["span_kind"] for s in spans}
    assert kinds["chat"] == "LLM" and kinds["tool"] == "TOOL" and kinds["plp.particle"] == "CHAIN"
    for j, parent in enumerate([0, 0, 3, 1]):  # links are dropped; the attribute survives
        assert _particle(spans, 2, 4 + j)["attributes"]["plp.parent_particle_id"] == parent
    (resample,) = [e for e in steps[1]["events"] if e["name"] == "plp.resample"]
    assert list(resample["attributes"]["plp.ancestors"]) == [0, 0, 3, 1]
    assert resample["attributes"]["plp.ess"] == _steps(records)[1].ess


def test_llm_span_in_phoenix(exported):
    spans, _ = exported
    (llm,) = [s for s in spans if s["span_kind"] == "LLM"]
    a = llm["attributes"]
    assert a["llm.token_count.prompt"] == 17 and a["llm.token_count.completion"] == 5
    assert a["gen_ai.request.model"] == "smollm2-135m"
    assert "input.value" not in a and "SECRET" not in str(spans)
