"""OTelListener and instrument(): span tree, attributes, links, content gating, -inf handling.

Uses synthetic records (a 3-step, 4-particle SMC run with one resampling, one dead particle, one
LLM generation and one tool call) fed through the in-memory exporter; `synthetic_run()` is also
used by the Phoenix end-to-end test.
"""

from __future__ import annotations

import re

import math
import time

import numpy as np
import pytest

from observability.exporters import instrument, resolve_endpoint
from observability.otel import attributes
from swarm.listeners import (Broadcaster, ParticleStep, RunFinished, RunStarted, StepRecord,
                             global_listeners)
from swarm.trace import FactorEvent, GuaranteeEvent, InteractEvent, SampleEvent

PROMPT = "SECRET-PROMPT: what is the capital of France?"
COMPLETION = "SECRET-COMPLETION: Paris"
TOOL_ARGS = "SECRET-TOOL-ARGS"
MS = 1_000_000


def _normalise(log_w: list[float]) -> tuple[list[float], float, float]:
    """(normalised weights, ESS, log mean weight) of a population, in log space."""
    lw = np.asarray(log_w, dtype=float)
    m = lw[np.isfinite(lw)].max()
    w = np.exp(lw - m)
    w /= w.sum()
    return w.tolist(), float(1.0 / np.sum(w**2)), float(m + np.log(np.mean(np.exp(lw - m))))


def _step0_events(p: int, t: int) -> list:
    """Particle 0 calls an LLM, particle 1 calls a tool; every particle then meets `score`."""
    events: list = []
    if p == 0:
        info = {"backend": "llama_cpp", "model": "smollm2-135m", "latency_s": 0.25,
                "usage": {"input_tokens": 17, "output_tokens": 5}, "started_at_ns": t + 10 * MS,
                "prompt": [{"role": "user", "content": PROMPT}], "completion": COMPLETION,
                "finish_reason": "stop"}
        events.append(SampleEvent(address="answer", value=COMPLETION, log_prob=-7.5, dist="llm",
                                  info=info))
    if p == 1:
        events.append(InteractEvent(address="search/call", sender="planner", receiver="search",
                                    content={"q": TOOL_ARGS}, kind="tool_call",
                                    info={"tool_call_id": "c1", "started_at_ns": t + 20 * MS}))
        events.append(InteractEvent(address="search/result", sender="search", receiver="planner",
                                    content="result text", kind="tool_result",
                                    info={"tool_call_id": "c1", "started_at_ns": t + 70 * MS}))
    events.append(FactorEvent(address="score", log_potential=[-0.5, -1.0, -0.2, -2.0][p]))
    return events


def _step(run_id: str, step: int, t: int, log_w: list[float], particles: list[dict], **kw):
    """An ("on_step", StepRecord) whose weights, ESS and evidence follow from `log_w`."""
    norm, ess, log_z = _normalise(log_w)
    parts = [ParticleStep(index=i, step=step, log_weight=log_w[i], normalized_weight=norm[i], **p)
             for i, p in enumerate(particles)]
    return ("on_step", StepRecord(run_id=run_id, step=step, particles=parts, ess=ess,
                                  log_evidence=log_z, started_at_ns=t, **kw))


def synthetic_run(run_id: str = "run-1", t0: int | None = None) -> list[tuple[str, object]]:
    """[(listener method, record), ...] of a 3-step, 4-particle SMC run.

    Step 0: all live; particle 0 makes an LLM call, particle 1 a tool call. Step 1: particle 2
    fails a guarantee (log weight -inf); ESS is low, so the population is resampled into ids 4..7
    with ancestors [0, 0, 3, 1]. Step 2: the offspring meet `final` and finish.
    """
    t0 = t0 if t0 is not None else time.time_ns() - 10_000 * MS
    start = RunStarted(run_id=run_id, policy="SMC", program="tests.synthetic", num_particles=4,
                       config={"ess_threshold": 0.5, "resampling": "systematic"}, started_at_ns=t0)
    t, inc0 = t0 + MS, [-0.5, -1.0, -0.2, -2.0]
    step0 = _step(run_id, 0, t, inc0, [dict(
        particle_id=p, status="running", site="score", log_increment=inc0[p],
        new_events=_step0_events(p, t), started_at_ns=t + p * MS, ended_at_ns=t + (400 + p) * MS)
        for p in range(4)], resampled=False, ended_at_ns=t + 500 * MS, tokens=22, llm_calls=1)
    t, inc1 = t0 + 1000 * MS, [0.3, -3.0, -math.inf, -0.1]
    log_w1 = [a + b for a, b in zip(inc0, inc1)]
    step1 = _step(run_id, 1, t, log_w1, [dict(
        particle_id=p, status="dead" if p == 2 else "running", site="valid" if p == 2 else "check",
        log_increment=inc1[p], killed_by="valid" if p == 2 else None,
        new_events=[GuaranteeEvent(address="valid", satisfied=False)] if p == 2 else
        [FactorEvent(address="check", log_potential=inc1[p])],
        started_at_ns=t + p * MS, ended_at_ns=t + 300 * MS) for p in range(4)],
        resampled=True, ancestors=[0, 0, 3, 1], offspring_ids=[4, 5, 6, 7], ended_at_ns=t + 350 * MS)
    t, inc2, log_z1 = t0 + 2000 * MS, [0.1, -0.4, 0.2, -1.5], step1[1].log_evidence
    log_w2 = [log_z1 + d for d in inc2]  # offspring restart from the mean weight
    step2 = _step(run_id, 2, t, log_w2, [dict(
        particle_id=4 + j, parent_id=[0, 0, 3, 1][j], status="finished", site="final",
        log_increment=inc2[j], new_events=[FactorEvent(address="final", log_potential=inc2[j])],
        started_at_ns=t + j * MS, ended_at_ns=t + 200 * MS, value=f"v{j}") for j in range(4)],
        resampled=False, ended_at_ns=t + 250 * MS)
    end = RunFinished(run_id=run_id, policy="SMC", log_evidence=step2[1].log_evidence,
                      ess=step2[1].ess, num_particles=4, log_weights=log_w2, particle_ids=[4, 5, 6, 7],
                      values=["v0", "v1", "v2", "v3"], ended_at_ns=t + 300 * MS, tokens=22, llm_calls=1)
    return [("on_run_start", start), step0, step1, step2, ("on_run_end", end)]


def replay(records: list[tuple[str, object]], listener: object) -> None:
    """Feed records to one listener, in order."""
    for method, record in records:
        getattr(listener, method)(record)


def _run(capture_content: bool = False):
    """Instrument with the memory exporter, replay the synthetic run, return (spans, records)."""
    inst = instrument("memory", capture_content=capture_content, register=False)
    records = synthetic_run()
    replay(records, inst.listener)
    inst.shutdown()
    return list(inst.memory_exporter.get_finished_spans()), records


@pytest.fixture(scope="module")
def run():
    return _run()


def _steps(records):
    return [r for m, r in records if m == "on_step"]


def _by_name(spans, prefix):
    return [s for s in spans if s.name.startswith(prefix)]


def _particle(spans, step, pid):
    (s,) = [s for s in _by_name(spans, "plp.particle ")
            if s.attributes["plp.step"] == step and s.attributes["plp.particle_id"] == pid]
    return s


def test_span_tree_shape(run):
    spans, records = run
    (root,) = _by_name(spans, "plp.run")
    assert root.parent is None and root.name == "plp.run SMC"
    steps = sorted(_by_name(spans, "plp.step "), key=lambda s: s.attributes["plp.step"])
    assert [s.name for s in steps] == ["plp.step 0", "plp.step 1", "plp.step 2"]
    assert all(s.parent.span_id == root.context.span_id for s in steps)
    particles = _by_name(spans, "plp.particle ")
    assert len(particles) == 12
    for p in particles:
        assert p.parent.span_id == steps[p.attributes["plp.step"]].context.span_id
    (llm,) = _by_name(spans, "chat ")
    (tool,) = _by_name(spans, "tool ")
    assert llm.parent.span_id == _particle(spans, 0, 0).context.span_id
    assert tool.parent.span_id == _particle(spans, 0, 1).context.span_id
    assert len(spans) == 1 + 3 + 12 + 2 + 4   # run, steps, particle steps, LLM + tool, final population
    assert len({s.context.trace_id for s in spans}) == 1
    kinds = {s.name.split(" ")[0]: s.attributes["openinference.span.kind"] for s in spans}
    assert kinds == {"plp.run": "CHAIN", "plp.step": "CHAIN", "plp.particle": "CHAIN",
                     "chat": "LLM", "tool": "TOOL", "plp.final": "CHAIN"}
    assert all(s.parent.span_id == root.context.span_id for s in _by_name(spans, "plp.final "))


def test_exact_times(run):
    spans, records = run
    (root,) = _by_name(spans, "plp.run")
    assert root.start_time == records[0][1].started_at_ns
    assert root.end_time == records[-1][1].ended_at_ns
    for rec in _steps(records):
        (s,) = [s for s in _by_name(spans, "plp.step ") if s.attributes["plp.step"] == rec.step]
        assert (s.start_time, s.end_time) == (rec.started_at_ns, rec.ended_at_ns)
        for p in rec.particles:
            ps = _particle(spans, rec.step, p.particle_id)
            assert (ps.start_time, ps.end_time) == (p.started_at_ns, p.ended_at_ns)


def test_particle_attributes_equal_records(run):
    spans, records = run
    for rec in _steps(records):
        for p in rec.particles:
            a = _particle(spans, rec.step, p.particle_id).attributes
            assert a["plp.particle_id"] == p.particle_id and a["plp.index"] == p.index
            assert a["plp.step"] == p.step and a["plp.status"] == p.status
            assert a.get("plp.site") == p.site and a.get("plp.killed_by") == p.killed_by
            assert a["plp.normalized_weight"] == p.normalized_weight
            assert a.get("plp.parent_particle_id") == p.parent_id
            if math.isfinite(p.log_weight):
                assert a["plp.log_weight"] == p.log_weight
                assert a["plp.log_increment"] == p.log_increment


def test_step_attributes_and_weights_sum_to_one(run):
    spans, records = run
    for rec in _steps(records):
        (s,) = [s for s in _by_name(spans, "plp.step ") if s.attributes["plp.step"] == rec.step]
        assert s.attributes["plp.ess"] == rec.ess
        assert s.attributes["plp.log_evidence"] == rec.log_evidence
        assert s.attributes["plp.resampled"] == rec.resampled
        assert s.attributes["plp.num_moved"] == 4
        assert s.attributes["plp.num_died"] == (1 if rec.step == 1 else 0)
        total = sum(_particle(spans, rec.step, p.particle_id).attributes["plp.normalized_weight"]
                    for p in rec.particles)
        assert total == pytest.approx(1.0, abs=1e-12)


def test_run_attributes(run):
    spans, records = run
    (root,) = _by_name(spans, "plp.run")
    end = records[-1][1]
    assert root.attributes["plp.policy"] == "SMC"
    assert root.attributes["plp.num_particles"] == 4
    assert root.attributes["plp.config.ess_threshold"] == 0.5
    assert root.attributes["plp.log_evidence"] == end.log_evidence
    assert root.attributes["plp.ess"] == end.ess
    assert root.resource.attributes["service.name"] == "plp-swarm"
    assert root.resource.attributes["openinference.project.name"] == "default"


def test_resample_event(run):
    spans, records = run
    rec = _steps(records)[1]
    (s,) = [s for s in _by_name(spans, "plp.step ") if s.attributes["plp.step"] == 1]
    (ev,) = [e for e in s.events if e.name == "plp.resample"]
    assert list(ev.attributes["plp.ancestors"]) == [0, 0, 3, 1]
    assert list(ev.attributes["plp.offspring_ids"]) == [4, 5, 6, 7]
    assert ev.attributes["plp.ess"] == rec.ess
    assert ev.timestamp == rec.ended_at_ns
    other = [e for s in _by_name(spans, "plp.step ") if s.attributes["plp.step"] != 1 for e in s.events]
    assert not [e for e in other if e.name == "plp.resample"]


def test_links_after_resampling(run):
    spans, _ = run
    for j, parent in enumerate([0, 0, 3, 1]):
        child = _particle(spans, 2, 4 + j)
        (link,) = child.links
        assert link.context.span_id == _particle(spans, 1, parent).context.span_id
        assert link.attributes["plp.link.type"] == "resampled_from"
        assert child.attributes["plp.parent_particle_id"] == parent
    for pid in range(4):  # a continuing particle links to its own previous step
        (link,) = _particle(spans, 1, pid).links
        assert link.context.span_id == _particle(spans, 0, pid).context.span_id
        assert link.attributes["plp.link.type"] == "previous_step"
    assert all(not _particle(spans, 0, pid).links for pid in range(4))


def test_ancestry_from_ancestors_when_parent_id_missing():
    """Links and plp.parent_particle_id follow StepRecord.ancestors even without ParticleStep.parent_id."""
    inst = instrument("memory", register=False)
    records = synthetic_run()
    for p in records[3][1].particles:
        p.parent_id = None
    replay(records, inst.listener)
    inst.shutdown()
    spans = inst.memory_exporter.get_finished_spans()
    for j, parent in enumerate([0, 0, 3, 1]):
        child = _particle(spans, 2, 4 + j)
        assert child.attributes["plp.parent_particle_id"] == parent
        assert child.links[0].context.span_id == _particle(spans, 1, parent).context.span_id


def test_llm_span(run):
    spans, records = run
    (llm,) = _by_name(spans, "chat ")
    info = _steps(records)[0].particles[0].new_events[0].info
    a = llm.attributes
    assert llm.name == "chat smollm2-135m"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "smollm2-135m"
    assert a["gen_ai.system"] == a["gen_ai.provider.name"] == "llama_cpp"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (17, 5)
    assert (a["llm.token_count.prompt"], a["llm.token_count.completion"]) == (17, 5)
    assert a["plp.log_prob"] == -7.5 and a["plp.site"] == "answer"
    assert llm.start_time == info["started_at_ns"]
    assert llm.end_time == info["started_at_ns"] + 250 * MS


def test_tool_span_pairs_call_and_result(run):
    spans, records = run
    (tool,) = _by_name(spans, "tool ")
    call, result = _steps(records)[0].particles[1].new_events[:2]
    assert tool.name == "tool search"
    assert tool.attributes["tool.name"] == "search" and tool.attributes["plp.tool.paired"] is True
    assert tool.attributes["gen_ai.tool.call.id"] == "c1"
    assert (tool.start_time, tool.end_time) == (call.info["started_at_ns"], result.info["started_at_ns"])


def test_factors_are_span_events(run):
    spans, records = run
    for rec in _steps(records):
        for p in rec.particles:
            evs = [e for e in _particle(spans, rec.step, p.particle_id).events
                   if e.name in ("plp.factor", "plp.guarantee")]
            assert [e.attributes["plp.site"] for e in evs] == [p.site]
            assert evs[0].timestamp == p.ended_at_ns
            if evs[0].name == "plp.factor":
                assert evs[0].attributes["plp.log_potential"] == p.log_increment
            else:
                assert evs[0].attributes["plp.satisfied"] is False and evs[0].attributes["plp.dead"]


def _all_values(spans):
    """Every attribute value of every span, span event and link."""
    for s in spans:
        yield from s.attributes.values()
        for e in s.events:
            yield from e.attributes.values()
        for link in s.links:
            yield from (link.attributes or {}).values()


def test_no_content_by_default(run):
    spans, _ = run
    assert "SECRET" not in " ".join(str(v) for v in _all_values(spans))
    (llm,) = _by_name(spans, "chat ")
    assert "input.value" not in llm.attributes and "output.value" not in llm.attributes


def test_content_with_capture_content():
    spans, _ = _run(capture_content=True)
    (llm,) = _by_name(spans, "chat ")
    assert llm.attributes["llm.input_messages.0.message.content"] == PROMPT
    assert llm.attributes["llm.input_messages.0.message.role"] == "user"
    assert llm.attributes["output.value"] == COMPLETION
    (tool,) = _by_name(spans, "tool ")
    assert TOOL_ARGS in tool.attributes["input.value"]
    assert tool.attributes["output.value"] == "result text"


def test_dead_particle_neg_inf(run):
    spans, _ = run
    a = _particle(spans, 1, 2).attributes
    assert "plp.log_weight" not in a and "plp.log_increment" not in a
    assert a["plp.dead"] is True and a["plp.status"] == "dead" and a["plp.killed_by"] == "valid"
    assert set(a["plp.nonfinite"]) == {"plp.log_weight=-inf", "plp.log_increment=-inf"}
    assert a["plp.normalized_weight"] == 0.0
    for v in _all_values(spans):  # nothing non-finite reaches the exporter
        vs = v if isinstance(v, (list, tuple)) else [v]
        assert all(math.isfinite(x) for x in vs if isinstance(x, float))
    assert "plp.dead" not in _particle(spans, 1, 0).attributes


def test_attributes_sanitiser():
    a = attributes({"plp.log_weight": -math.inf, "plp.ess": math.nan, "x": None, "ok": 1.5,
                    "l": [1, 2], "mixed": [1, "a"], "obj": {"k": 1}})
    assert a == {"plp.dead": True, "plp.nonfinite": ["plp.log_weight=-inf", "plp.ess=nan"],
                 "ok": 1.5, "l": [1, 2], "mixed": '[1, "a"]', "obj": '{"k": 1}'}
    assert "plp.dead" not in attributes({"plp.ess": math.nan})


def test_instrument_registers_globally_and_shutdown_detaches(monkeypatch):
    monkeypatch.setenv("PLP_OTEL_EXPORTER", "memory")
    inst = instrument(project="proj-x")
    assert inst.exporter == "memory" and inst.listener in global_listeners()
    b = Broadcaster()
    for method, record in synthetic_run(run_id="global"):
        b.emit(method, record)
    inst.shutdown()
    inst.shutdown()  # idempotent
    assert inst.listener not in global_listeners()
    spans = inst.memory_exporter.get_finished_spans()
    assert len(spans) == 22
    assert spans[0].resource.attributes["openinference.project.name"] == "proj-x"


def test_instrument_none_and_bad_name():
    inst = instrument("none")
    assert inst.listener is None and inst.listener not in global_listeners()
    inst.shutdown()
    with pytest.raises(ValueError, match="exporter"):
        instrument("zipkin")


def test_endpoint_resolution(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert resolve_endpoint() == "http://127.0.0.1:6006/v1/traces"
    assert resolve_endpoint("http://h:1") == "http://h:1/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:2/")
    assert resolve_endpoint() == "http://h:2/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://h:3/custom")
    assert resolve_endpoint() == "http://h:3/custom"
    assert resolve_endpoint("http://h:4/v1/traces") == "http://h:4/v1/traces"
    assert resolve_endpoint("https://collector.example:4318") == "https://collector.example:4318/v1/traces"


@pytest.mark.parametrize("bad", ["not a url", "localhost:4318", "ftp://h/v1/traces", "http://"])
def test_an_endpoint_that_is_no_http_url_is_refused_when_instrumenting(bad, monkeypatch):
    """Before: instrument() accepted it and every export failed after the run, one warning a batch,
    the spans lost. From the environment too (a scheme-less OTEL_EXPORTER_OTLP_ENDPOINT)."""
    with pytest.raises(ValueError, match=rf"OTLP endpoint {re.escape(repr(bad))}: expected an http\(s\) URL"):
        instrument("otlp", endpoint=bad)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", bad)
    with pytest.raises(ValueError, match="OTLP endpoint"):
        resolve_endpoint()


def test_close_ends_unfinished_run():
    inst = instrument("memory", register=False)
    records = synthetic_run()[:2]  # started, one step, never finished
    replay(records, inst.listener)
    assert not _by_name(inst.memory_exporter.get_finished_spans(), "plp.run")
    inst.shutdown()
    (root,) = _by_name(inst.memory_exporter.get_finished_spans(), "plp.run")
    assert root.status.status_code.name == "ERROR"
    assert root.end_time == records[1][1].ended_at_ns


def test_real_smc_engine():
    """The spans of a real policies.SMC run agree with its Result and diagnostics."""
    import policies
    from swarm import Categorical, factor, guarantee, sample

    def model():
        x = sample("x", Categorical(["a", "b", "c"], probs=[0.5, 0.3, 0.2]))
        factor("likes_b", 1.0 if x == "b" else 0.0)
        y = sample("y", Categorical(["a", "b", "c"]))
        guarantee("not_c", y != "c")
        factor("same", 0.5 if x == y else 0.0)
        return x + y

    inst = instrument("memory")
    try:
        result = policies.SMC(num_particles=8, seed=3, ess_threshold=0.9).run(model)
    finally:
        inst.shutdown()
    spans = inst.memory_exporter.get_finished_spans()
    (root,) = _by_name(spans, "plp.run")
    assert root.attributes["plp.log_evidence"] == result.log_evidence
    stats = result.diagnostics.steps
    steps = {s.attributes["plp.step"]: s for s in _by_name(spans, "plp.step ")}
    assert sorted(steps) == [st.step for st in stats]
    by_ctx = {s.context.span_id: s for s in spans}
    for st in stats:
        assert steps[st.step].attributes["plp.ess"] == st.ess
        assert steps[st.step].attributes["plp.resampled"] == st.resampled
        moved = [s for s in _by_name(spans, "plp.particle ") if s.attributes["plp.step"] == st.step]
        assert sum(s.attributes["plp.normalized_weight"] for s in moved) == pytest.approx(1.0)
        for s in moved:  # offspring link to the parent's particle-step span
            for link in s.links:
                target = by_ctx[link.context.span_id]
                if link.attributes["plp.link.type"] == "resampled_from":
                    assert target.attributes["plp.particle_id"] == s.attributes["plp.parent_particle_id"]
                    assert target.attributes["plp.step"] == st.step - 1
    assert any(st.resampled for st in stats[:-1])
    assert any(link.attributes["plp.link.type"] == "resampled_from" for s in spans for link in s.links)
