"""End to end through a real Arize Phoenix: export a synthetic SMC run over OTLP/HTTP with
`instrument("otlp")`, read the spans back through Phoenix's REST API, compare with the records; and
a real SMC run (a Scripted TEST DOUBLE agent) whose run span shows its input and output in Phoenix's
own trace list (headless Chromium), and on which every span filter of docs/observability.md returns
exactly the spans it should (through Phoenix's GraphQL API, as its UI runs them).

Needs `.venv-phoenix` (scripts/install_phoenix.sh); skipped otherwise. Phoenix takes about 10 s to
start, so one server serves the module.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

try:  # tests/ is not a package: pytest puts it on sys.path (rootdir-relative if it becomes one)
    from phoenix_server import phoenix_available, phoenix_server
    from test_otel import replay, synthetic_run
except ImportError:  # pragma: no cover
    from tests.phoenix_server import phoenix_available, phoenix_server
    from tests.test_otel import replay, synthetic_run

import policies
from observability.exporters import instrument
from swarm import factor, guarantee, sample
from tests.run_records import RunRecords

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


# -- a real run in Phoenix: what the UI shows and what the documented filters return (issue 19) ----
DOC = Path(__file__).resolve().parents[1] / "docs" / "observability.md"
WORDS = ["sunny", "rainy", "windy", "cloudy", "snowy"]


def weather_program():
    """Three days of weather, one word a day from a Scripted TEST DOUBLE agent (so the run has LLM
    spans); snowy and cloudy days are forbidden (deaths), sunny ones preferred (weights)."""
    from agents import Agent, GenerationSettings
    from agents.backends import Scripted

    writer = Agent(name="writer", backend=Scripted(lambda r: WORDS[(r.seed or 0) % 5]),
                   settings=GenerationSettings(max_tokens=4))

    async def weather(days: int):
        words = []
        for t in range(days):
            word = await sample(f"day{t}", writer.generate(f"Day {t}, the weather in one word:"))
            guarantee(f"no_snow/day{t}", word not in ("snowy", "cloudy"))
            factor(f"likes_sun/day{t}", 2.0 if word == "sunny" else 0.0)
            words.append(word)
        factor("variety", 1.5 * len(set(words)))   # mild: final weights differ, no resampling after it
        return " ".join(words)

    return weather


@pytest.fixture(scope="module")
def weather_run(phoenix):
    """(project, RunRecords, spans in Phoenix) of one real SMC run with content, exported over OTLP."""
    project = f"plp-weather-{uuid.uuid4().hex[:8]}"
    inst = instrument("otlp", endpoint=phoenix.otlp_endpoint, project=project, register=False, capture_content=True)
    records = RunRecords()
    policies.SMC(num_particles=24, seed=0, listeners=[inst.listener, records]).run(weather_program(), 3)
    inst.shutdown()
    sent = inst.sink.spans_sent
    spans = phoenix.wait_for_spans(project, sent, timeout_s=90)
    assert len(spans) == sent, f"Phoenix has {len(spans)} of {sent} spans:\n{phoenix.log_tail()}"
    return project, records, spans


def documented_filters() -> dict[str, str]:
    """{name: expression} of every filter in docs/observability.md (`<!-- filter: name -->`)."""
    found = dict(re.findall(r"<!-- filter: ([\w-]+) -->\s*```\w*\n(.+?)\n```", DOC.read_text()))
    assert set(found) >= {"heaviest", "deaths", "deaths-by-cause", "low-ess", "resampled", "history", "descendants"}
    return found


def _keys(spans) -> set[tuple[str, int | None]]:
    return {(s["name"], s["attributes"].get("plp", {}).get("step")) for s in spans}


def test_run_span_has_input_output_and_particles_have_lineage(weather_run):
    _, records, spans = weather_run
    (run,) = [s for s in spans if s["name"] == "plp.run SMC"]
    a = run["attributes"]
    assert json.loads(a["input.value"])["program"] == "weather_program.<locals>.weather"
    out = json.loads(a["output.value"])
    assert out["log_evidence"] == records.end.log_evidence and out["answers"] and a["session.id"]
    assert out["deaths"] == dict(Counter(p.killed_by for s in records.steps for p in s.particles if p.status == "dead"))
    particles = [s for s in spans if s["name"].startswith("plp.particle ")]
    assert len(particles) == sum(len(s.particles) for s in records.steps)
    for s in particles:
        pid = s["attributes"]["plp.particle_id"]
        assert list(s["attributes"]["plp.lineage"]) == records.lineage(pid)
        assert s["attributes"]["plp.lineage_path"] == "/" + "/".join(map(str, records.lineage(pid))) + "/"


def test_documented_filters_return_the_right_spans(phoenix, weather_run):
    project, records, _ = weather_run
    filters = documented_filters()
    weights = records.final_weights()
    heaviest = max(weights, key=weights.get)
    lineage = records.lineage(heaviest)
    root = lineage[0]
    filters["history"] = re.sub(r"\[[\d, ]+\]", str(lineage), filters["history"])
    filters["descendants"] = re.sub(r"'/\d+/'", f"'/{root}/'", filters["descendants"])
    moved = [(p, s) for s in records.steps for p in s.particles]
    n = len(records.end.particle_ids)
    expected = {
        "heaviest": {(f"plp.final {pid}", None) for pid, w in weights.items() if w >= 0.05},
        "deaths": {(f"plp.particle {p.particle_id}", s.step) for p, s in moved if p.status == "dead"},
        "deaths-by-cause": {(f"plp.particle {p.particle_id}", s.step) for p, s in moved
                            if p.status == "dead" and p.killed_by == "no_snow/day1"},
        "low-ess": {(f"plp.step {s.step}", s.step) for s in records.steps if s.ess / n < 0.5},
        "resampled": {(f"plp.step {s.step}", s.step) for s in records.steps if s.resampled},
        "history": {(f"plp.particle {p.particle_id}", s.step) for p, s in moved if p.particle_id in lineage}
        | {(f"plp.final {heaviest}", None)},
        "descendants": {(f"plp.particle {p.particle_id}", s.step) for p, s in moved
                        if records.lineage(p.particle_id)[0] == root}
        | {(f"plp.final {pid}", None) for pid in weights if records.lineage(pid)[0] == root},
    }
    for name, want in expected.items():
        got = _keys(phoenix.filter_spans(project, filters[name]))
        assert got == want, f"{name}: {filters[name]!r}"
        assert 0 < len(want) < len(moved), f"{name} selects nothing or everything: it tests nothing"
    assert 0 < len(expected["heaviest"]) < n and 0 < len(expected["low-ess"]) < len(records.steps)


def test_phoenix_trace_list_in_chromium_shows_input_and_output(phoenix, weather_run):
    """Phoenix's own UI, in headless Chromium: the project's trace list has the run with its input
    and output columns filled, and the page logs no error (console, uncaught, failed load)."""
    from tests.devtools import ARTIFACTS, CHROMIUM, chromium, open_page, screenshot

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/setup.sh --test installs it as root)")
    project, records, spans = weather_run
    (run,) = [s for s in spans if s["name"] == "plp.run SMC"]
    with chromium() as base:
        page, _ = open_page(base, f"{phoenix.base_url}/projects/{phoenix.project_id(project)}/traces")
        try:
            table = _wait_for_table(page, "plp.run SMC")
            data = screenshot(page, ARTIFACTS / "phoenix-traces.png")
        finally:
            page.ws.close()
    header, rows = table
    (row,) = [r for r in rows if "plp.run SMC" in r]
    cells = dict(zip(header, row))
    assert cells["input"] and run["attributes"]["input.value"].startswith(cells["input"].removesuffix("..."))
    assert cells["output"] and run["attributes"]["output.value"].startswith(cells["output"].removesuffix("..."))
    assert cells["output"].startswith('{"answers"')
    assert _errors(page.events) == [], _errors(page.events)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


_TABLE_JS = """(() => {
  const header = [...document.querySelectorAll('table thead th')].map(th => th.innerText.trim());
  const rows = [...document.querySelectorAll('table tbody tr')].map(tr => [...tr.children].map(td => td.innerText.trim()));
  return [header, rows];
})()"""


def _wait_for_table(page, text: str, timeout_s: float = 60.0):
    """Poll the page's table until a row contains `text` (the SPA loads its data after `load`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        header, rows = page.call("Runtime.evaluate", expression=_TABLE_JS, returnByValue=True)["result"]["value"]
        if any(text in cell for row in rows for cell in row) or time.monotonic() > deadline:
            page.settle(1.0)
            return header, rows
        time.sleep(0.5)


def _errors(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and failed loads. A request the page itself cancelled
    (net::ERR_ABORTED, e.g. on a client-side redirect) is not a failure; warnings are Phoenix's own
    (React Router's hydration notice) and not checked."""
    from tests.devtools import problems

    return [p for p in problems(events) if not p.startswith(("console.warning", "log warning"))
            and "ERR_ABORTED" not in p]
