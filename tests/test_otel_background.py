"""Span construction off the coordinator's critical path (observability.otel, ordered_worker) and
the inline batching export (observability.exporters.BackpressureSpanProcessor):

- the background worker builds exactly the spans the inline builder builds (names, times,
  attributes, events, parents, links, status);
- `.run()` returns only once every span of the run is built, even when the worker lags far behind;
- a user's current span still encloses the run (the context is captured in the caller's thread);
- opt-in particle sampling keeps exactly the particle-step spans of the surviving lineages and of
  the sampled extinct ids, run, step and final spans complete;
- the worker keeps order, survives a failing call, blocks submitters past its backlog, exits when
  idle; the processor exports full batches, late batches and the rest on flush, never drops.
"""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import policies
from bench.otel_overhead import llm_program, toy_program
from observability.exporters import BackpressureSpanProcessor, instrument
from observability.ordered_worker import OrderedWorker
from observability.otel import OTelListener
from tests.run_records import RunRecords
from tests.test_otel import replay, synthetic_run


def _canonical(spans) -> set:
    """Every span as a hashable description that does not depend on its random ids: parents and
    link targets are named by the (name, start, end) of the span they point to."""
    key = {s.context.span_id: (s.name, s.start_time, s.end_time) for s in spans}
    out = set()
    for s in spans:
        events = tuple((e.name, e.timestamp, tuple(sorted(e.attributes.items()))) for e in s.events)
        links = tuple((key.get(link.context.span_id), tuple(sorted(link.attributes.items()))) for link in s.links)
        attrs = {k: tuple(v) if isinstance(v, tuple | list) else v for k, v in s.attributes.items()}
        if "plp.ancestor_span_id" in attrs:   # a span id: named by the span it points to
            attrs["plp.ancestor_span_id"] = key[int(attrs["plp.ancestor_span_id"], 16)]
        attrs = tuple(sorted(attrs.items()))
        out.add((s.name, s.kind, s.start_time, s.end_time, attrs, events, links, s.status.status_code,
                 key.get(s.parent.span_id) if s.parent else None))
    return out


T0 = 1_700_000_000_000_000_000


def _spans(background: bool, **kw):
    inst = instrument("memory", register=False, background=background, session_id="one-session", **kw)
    replay(synthetic_run(t0=T0), inst.listener)
    inst.shutdown()
    return list(inst.memory_exporter.get_finished_spans())


@pytest.mark.parametrize("capture_content", [False, True])
def test_background_builds_the_same_spans_as_inline(capture_content):
    inline = _canonical(_spans(False, capture_content=capture_content))
    background = _canonical(_spans(True, capture_content=capture_content))
    assert len(inline) == 22 and background == inline


class _SlowProcessor(SpanProcessor):
    """Makes every span end slowly, so the worker falls far behind the coordinator."""

    def on_end(self, span) -> None:
        time.sleep(0.002)


def test_run_returns_after_every_span_is_built():
    expected = sum(len(step) for step in _particle_steps(toy_program(4), 30, 1))
    inst = instrument("memory", register=False)
    inst.provider.add_span_processor(_SlowProcessor())
    worker, pending = inst.listener.worker, []
    submit = worker.submit
    worker.submit = lambda *a, **kw: (pending.append(worker.pending), submit(*a, **kw))[1]
    result = policies.SMC(num_particles=30, seed=1, listeners=[inst.listener]).run(toy_program(4))
    spans = inst.memory_exporter.get_finished_spans()   # read at once: no flush, no shutdown
    inst.shutdown()
    assert max(pending) >= 2, "the worker never lagged: this test would not catch a missing drain"
    assert len([s for s in spans if s.name.startswith("plp.run")]) == 1
    assert len([s for s in spans if s.name.startswith("plp.step ")]) == len(result.diagnostics.steps)
    assert len([s for s in spans if s.name.startswith("plp.particle ")]) == expected


def _inline_spans(program, n: int, seed: int, **options) -> list:
    """The spans of an SMC run built inline (sync), the reference for the background ones."""
    inst = instrument("memory", register=False, background=False)
    policies.SMC(num_particles=n, seed=seed, listeners=[inst.listener], **options).run(program)
    inst.shutdown()
    return list(inst.memory_exporter.get_finished_spans())


def _particle_steps(program, n: int, seed: int) -> list[list[tuple[int, int]]]:
    """[(step, particle_id) of every particle step] per step, from an inline (sync) run."""
    by_step: dict[int, list] = {}
    for s in _inline_spans(program, n, seed):
        if s.name.startswith("plp.particle "):
            step = s.attributes["plp.step"]
            by_step.setdefault(step, []).append((step, s.attributes["plp.particle_id"]))
    return [by_step[k] for k in sorted(by_step)]


def _chat_owners(spans) -> list[tuple[int, int]]:
    """(step, particle_id) of the particle step each LLM span belongs to."""
    by_id = {s.context.span_id: s for s in spans}
    return sorted((by_id[c.parent.span_id].attributes["plp.step"], by_id[c.parent.span_id].attributes["plp.particle_id"])
                  for c in spans if c.name.startswith("chat"))


def test_a_users_current_span_encloses_the_run():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    listener = OTelListener(provider)
    with provider.get_tracer("user").start_as_current_span("experiment") as outer:
        policies.SMC(num_particles=4, seed=0, listeners=[listener]).run(toy_program(2))
    listener.close()
    (run,) = [s for s in exporter.get_finished_spans() if s.name.startswith("plp.run")]
    assert run.parent is not None and run.parent.span_id == outer.get_span_context().span_id
    assert run.context.trace_id == outer.get_span_context().trace_id


def test_particle_sampling_keeps_surviving_lineages_and_a_fraction_of_the_rest():
    n, seed, rate = 120, 2, 0.25
    program = llm_program(3, 0.0)
    policy = policies.SMC(num_particles=n, seed=seed, ess_threshold=1.0)   # resample at every step
    reference = _inline_spans(program, n, seed, ess_threshold=1.0)
    full = {(s.attributes["plp.step"], s.attributes["plp.particle_id"])
            for s in reference if s.name.startswith("plp.particle ")}
    inst = instrument("memory", register=False, particle_sampling=rate)
    records = RunRecords()
    policy.model_copy(update={"listeners": [inst.listener, records]}).run(program)
    inst.shutdown()
    spans = inst.memory_exporter.get_finished_spans()
    sampled = inst.listener.sampler.sampled
    survivors = records.surviving_lineages()
    got = {(s.attributes["plp.step"], s.attributes["plp.particle_id"])
           for s in spans if s.name.startswith("plp.particle ")}
    assert got == {(step, pid) for step, pid in full if pid in survivors or sampled(pid)}
    # the rule was exercised both ways: surviving ids the hash alone would drop, extinct ids dropped
    assert any(not sampled(pid) for pid in survivors)
    assert any(pid not in survivors and not sampled(pid) for _, pid in full)
    extinct = {(step, pid) for step, pid in full if pid not in survivors}
    kept_extinct = len(got & extinct) / len(extinct)
    assert 0.1 < kept_extinct < 0.45, kept_extinct   # rate 0.25; ±0.15 is > 4 binomial s.d. at ≥ 100 ids
    (run,) = [s for s in spans if s.name.startswith("plp.run")]
    assert run.attributes["plp.particle_sampling"] == rate
    steps = {s.attributes["plp.step"]: s for s in spans if s.name.startswith("plp.step ")}
    assert sorted(steps) == sorted({step for step, _ in full})
    for k, s in steps.items():
        assert s.attributes["plp.num_moved"] == sum(step == k for step, _ in full)   # all particles
    assert len([s for s in spans if s.name.startswith("plp.final ")]) == n          # all final particles
    # LLM child spans: exactly those of the kept particle steps, under them
    assert _chat_owners(spans) == [o for o in _chat_owners(reference) if o in got]
    assert len(_chat_owners(spans)) > 0


@pytest.mark.parametrize("rate", [0.0, -0.5, 1.5])
def test_particle_sampling_is_validated(rate):
    with pytest.raises(ValueError, match="particle_sampling"):
        OTelListener(TracerProvider(), particle_sampling=rate)


def test_no_sampling_attributes_by_default():
    spans = _spans(True)
    assert not any("plp.particle_sampling" in s.attributes or "plp.particle_spans" in s.attributes
                   for s in spans)


# ---- OrderedWorker -------------------------------------------------------------------------
def test_worker_runs_calls_in_order_and_survives_a_failure(caplog):
    worker, seen = OrderedWorker("test-worker"), []

    def steps(i):
        for j in range(3):
            seen.append((i, j))
            yield

    def fail():
        raise RuntimeError("boom")

    for i in range(20):
        worker.submit(steps, i)
        if i == 5:
            worker.submit(fail)
    assert worker.drain(timeout_s=10)
    assert seen == [(i, j) for i in range(20) for j in range(3)]
    assert worker.failures == 1 and "boom" in caplog.text


def test_worker_backlog_blocks_the_submitter_until_it_catches_up():
    worker, gate, done = OrderedWorker("test-worker", max_backlog=3), threading.Event(), []
    worker.submit(gate.wait, weight=2)
    submitter = threading.Thread(target=lambda: (worker.submit(done.append, 1, weight=2), done.append(2)))
    submitter.start()
    deadline = time.monotonic() + 10
    while worker._blocked == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker._blocked == 1 and done == []   # 2 + 2 > 3: the submitter waits in submit
    gate.set()
    submitter.join(10)
    assert worker.drain(timeout_s=10) and sorted(done) == [1, 2]


def test_worker_thread_exits_when_idle_and_restarts():
    worker = OrderedWorker("test-worker", idle_s=0.05)
    worker.submit(lambda: None)
    assert worker.drain(timeout_s=10)
    deadline = time.monotonic() + 10
    while worker._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker._thread is None
    out = []
    worker.submit(out.append, 1)
    assert worker.drain(timeout_s=10) and out == [1]


# ---- BackpressureSpanProcessor -----------------------------------------------------------------
class _Batches(SpanExporter):
    def __init__(self) -> None:
        self.batches: list[int] = []

    def export(self, spans) -> SpanExportResult:
        self.batches.append(len(spans))
        return SpanExportResult.SUCCESS


def _ended(processor: BackpressureSpanProcessor, n: int) -> None:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for i in range(n):
        tracer.start_span(f"s{i}").end()


def test_processor_exports_full_batches_then_the_rest_on_flush():
    exporter = _Batches()
    processor = BackpressureSpanProcessor(exporter, queue_size=1000, batch_size=10, max_delay_s=3600)
    _ended(processor, 25)
    assert exporter.batches == [10, 10]
    processor.force_flush()
    assert exporter.batches == [10, 10, 5] and processor.flushes == 3
    processor.shutdown()
    _ended(processor, 3)   # after shutdown: ignored, not exported
    assert sum(exporter.batches) == 25


def test_processor_exports_a_batch_whose_oldest_span_waited_too_long():
    exporter = _Batches()
    processor = BackpressureSpanProcessor(exporter, batch_size=100, max_delay_s=0.0)
    _ended(processor, 4)
    assert exporter.batches == [1, 1, 1, 1]


def test_processor_batch_is_bounded_by_the_queue_size(monkeypatch):
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "8")
    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raising=False)
    processor = BackpressureSpanProcessor(_Batches())
    assert (processor.queue_size, processor.batch_size) == (8, 8)
