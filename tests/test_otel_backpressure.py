"""OTLP batching loses no span: one SMC step of a large population ends more spans at once than the
SDK's batch queue holds, and the plain `BatchSpanProcessor` then drops them ("Queue full, dropping
Span"). `instrument("otlp")` sends its spans through `OtlpSink` in batches (every span, however many
requests it takes), and an `OTelListener` over an SDK provider with `BackpressureSpanProcessor`
exports full batches in the thread that ends them (observability.exporters)."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import policies
from bench.otel_overhead import OTLPSink, toy_program
from observability.exporters import BackpressureSpanProcessor, instrument
from observability.otel import OTelListener

QUEUE = 64
PARTICLES = 300


def spans_in(sink: OTLPSink) -> int:
    return sum(len(scope.spans) for body in sink.bodies
               for rs in ExportTraceServiceRequest.FromString(body).resource_spans for scope in rs.scope_spans)


def expected_spans() -> int:
    inst = instrument("memory", register=False)
    policies.SMC(num_particles=PARTICLES, seed=0, listeners=[inst.listener]).run(toy_program(4))
    inst.shutdown()
    return len(inst.memory_exporter.get_finished_spans())


def test_otlp_export_in_small_batches_delivers_every_span(monkeypatch):
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", str(QUEUE))
    want = expected_spans()
    assert want > 4 * PARTICLES   # several steps of PARTICLES spans each: bursts far above a batch
    with OTLPSink(keep_bodies=True) as sink:
        inst = instrument("otlp", endpoint=sink.endpoint, register=False)
        policies.SMC(num_particles=PARTICLES, seed=0, listeners=[inst.listener]).run(toy_program(4))
        inst.shutdown()
    assert inst.sink.batch_spans == QUEUE and inst.sink.sender.requests >= want // QUEUE
    assert spans_in(sink) == want == inst.sink.spans_sent


def test_backpressure_processor_with_a_small_queue_delivers_every_span(monkeypatch):
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", str(QUEUE))
    want = expected_spans()
    with OTLPSink(keep_bodies=True) as sink:
        provider = TracerProvider()
        processor = BackpressureSpanProcessor(OTLPSpanExporter(endpoint=sink.endpoint))
        provider.add_span_processor(processor)
        policies.SMC(num_particles=PARTICLES, seed=0, listeners=[OTelListener(provider)]).run(toy_program(4))
        provider.force_flush()
        provider.shutdown()
    assert processor.queue_size == QUEUE and processor.flushes >= want // QUEUE
    assert spans_in(sink) == want


def test_the_plain_batch_processor_drops_spans_in_the_same_run():
    """The control: without backpressure the same run loses spans (so the test above can fail)."""
    want = expected_spans()
    with OTLPSink(keep_bodies=True) as sink:
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sink.endpoint),
                                                       max_queue_size=QUEUE, max_export_batch_size=QUEUE))
        policies.SMC(num_particles=PARTICLES, seed=0, listeners=[OTelListener(provider)]).run(toy_program(4))
        provider.force_flush()
        provider.shutdown()
    assert spans_in(sink) < want


EXITING_SCRIPT = """
import sys
import policies
from bench.otel_overhead import toy_program
from observability.exporters import instrument

inst = instrument("otlp", endpoint=sys.argv[1], register=False)
policies.SMC(num_particles=50, seed=0, listeners=[inst.listener]).run(toy_program(3))
print(len([1]), flush=True)   # the run has returned; the script ends without shutdown()
"""


def test_a_script_that_exits_without_shutdown_still_delivers_every_span(tmp_path):
    """`.run()` returns before the last spans are built (OTLP: nothing to read back in process), so
    the interpreter's exit must flush them: `instrument()` registers that."""
    import subprocess
    import sys
    from pathlib import Path

    inst = instrument("memory", register=False)
    policies.SMC(num_particles=50, seed=0, listeners=[inst.listener]).run(toy_program(3))
    inst.shutdown()
    want = len(inst.memory_exporter.get_finished_spans())
    script = tmp_path / "exits.py"
    script.write_text(EXITING_SCRIPT)
    root = Path(__file__).resolve().parents[1]
    with OTLPSink(keep_bodies=True) as sink:
        done = subprocess.run([sys.executable, str(script), sink.endpoint], cwd=root, timeout=300,
                              env={**__import__("os").environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert spans_in(sink) == want
