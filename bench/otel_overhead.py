"""OpenTelemetry overhead: `policies.SMC` run time with tracing off, with the in-memory exporter and
with OTLP/HTTP batching to a local sink, as ratios to "off" measured in the same run (issue 6's
goal: ≤ 1.15 with OTLP batching).

Two workloads bracket what a user sees:
- "toy": a 10-step program of Bernoulli draws and factors, no LLM: each particle step costs ~20 µs,
  so the per-span cost of the SDK (a span per run, step, particle step, plus span events) is as
  visible as it can ever be. The worst case, not a typical one.
- "llm@<L>ms": the same shape, each step a generation from the `Scripted` TEST DOUBLE backend with a
  fixed latency L (2 ms and 50 ms by default, both below a real endpoint's): what a run that calls an
  LLM pays. Spans are built synchronously in the coordinator when each step ends, so their cost
  (about 0.1–0.3 ms per particle step) adds to the wall time whatever the latency; the ratio falls as
  the latency a step waits for grows.

The sink (`OTLPSink`) is a stdlib HTTP server on 127.0.0.1 that accepts `POST /v1/traces` and counts
bytes (it does not decode); `--phoenix URL` exports to a running Phoenix instead. Times are the
median of `--repeats` runs of `policy.run`; "+flush" adds the time to drain the batch queue after
the run (`force_flush`), which a user pays at exit, not during the run.

    python bench/otel_overhead.py [--particles 200] [--steps 10] [--latency-ms 2 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import policies
from swarm import Bernoulli, factor, sample

__all__ = ["OTLPSink", "main"]


class _SinkHandler(BaseHTTPRequestHandler):
    server: "_SinkServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """No access log."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sink = self.server.sink
        with sink.lock:
            sink.requests += 1
            sink.bytes += len(body)
            if sink.keep_bodies:
                sink.bodies.append(body)
        status = 200 if self.path.rstrip("/") == "/v1/traces" else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")   # an empty ExportTraceServiceResponse
        self.end_headers()


class _SinkServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    sink: "OTLPSink"


class OTLPSink:
    """A local OTLP/HTTP endpoint that accepts and counts what exporters send (127.0.0.1, free port).
    `keep_bodies=True` keeps every request body (protobuf bytes), e.g. to grep them for secrets."""

    def __init__(self, keep_bodies: bool = False) -> None:
        self.keep_bodies = keep_bodies
        self.bodies: list[bytes] = []
        self.requests = 0
        self.bytes = 0
        self.lock = threading.Lock()
        self._httpd: _SinkServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "OTLPSink is not running"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1/traces"

    def __enter__(self) -> "OTLPSink":
        self._httpd = _SinkServer(("127.0.0.1", 0), _SinkHandler)
        self._httpd.sink = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="otlp-sink", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None


# ---- workloads ----------------------------------------------------------------------------------
def toy_program(steps: int):
    def program():
        total = 0
        for t in range(steps):
            x = sample(f"x{t}", Bernoulli(0.5))
            total += x
            factor(f"f{t}", 0.1 * x)
        return total
    return program


def llm_program(steps: int, latency_s: float):
    from agents import Agent, GenerationSettings
    from agents.backends import Scripted

    backend = Scripted(lambda request: ["yes", "no", "maybe"][(request.seed or 0) % 3], latency_s=latency_s)
    agent = Agent(name="solver", backend=backend, settings=GenerationSettings(max_tokens=4))

    async def program():
        yes = 0
        for t in range(steps):
            text = await sample(f"answer{t}", agent.generate(f"Question {t}?"))
            yes += text == "yes"
            factor(f"f{t}", 0.0 if text != "maybe" else -1.0)
        return yes
    return program


def _timed_runs(program, particles: int, repeats: int, exporter: str, endpoint: str | None) -> tuple[float, float, int]:
    """(median run seconds, median flush seconds, spans per run) for one exporter."""
    from observability.exporters import instrument

    runs, flushes, spans = [], [], 0
    for r in range(repeats):
        inst = None if exporter == "off" else instrument(exporter, endpoint=endpoint, register=False)
        listeners = [] if inst is None else [inst.listener]
        policy = policies.SMC(num_particles=particles, seed=r, listeners=listeners)
        start = time.perf_counter()
        policy.run(program)
        runs.append(time.perf_counter() - start)
        start = time.perf_counter()
        if inst is not None:
            inst.force_flush()
            if inst.memory_exporter is not None:
                spans = len(inst.memory_exporter.get_finished_spans())
            inst.shutdown()
        flushes.append(time.perf_counter() - start)
    return statistics.median(runs), statistics.median(flushes), spans


def main(particles: int = 200, steps: int = 10, latency_ms: tuple[float, ...] = (2.0, 50.0), repeats: int = 3,
         phoenix: str | None = None, toy: bool = True) -> list[dict[str, Any]]:
    """Measure every (workload, exporter) pair; returns one row each, with ratios to "off"."""
    rows: list[dict[str, Any]] = []
    workloads = (["toy"] if toy else []) + [f"llm@{ms:g}ms" for ms in latency_ms]
    with OTLPSink() as sink:
        endpoint = phoenix or sink.endpoint
        for workload in workloads:
            program = (toy_program(steps) if workload == "toy"
                       else llm_program(steps, float(workload[4:-2]) / 1000))
            policies.SMC(num_particles=min(particles, 20), seed=0).run(program)  # warm-up (imports, caches)
            base = None
            spans = 0
            for exporter in ("off", "memory", "otlp"):
                run_s, flush_s, n = _timed_runs(program, particles, repeats, exporter, endpoint)
                spans = n or spans
                base = run_s if exporter == "off" else base
                rows.append({"workload": workload, "exporter": exporter, "particles": particles, "steps": steps,
                             "run_s": run_s, "ratio": run_s / base, "flush_s": flush_s,
                             "ratio_with_flush": (run_s + flush_s) / base, "spans_per_run": spans})
        rows.append({"workload": "sink", "exporter": "otlp", "requests": sink.requests, "bytes": sink.bytes})
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    print(f"{'workload':10} {'exporter':8} {'run s':>8} {'ratio':>7} {'flush s':>8} {'+flush':>7} {'spans':>7}")
    for r in rows:
        if r["workload"] == "sink":
            print(f"OTLP sink received {r['requests']} requests, {r['bytes'] / 1e6:.1f} MB")
            continue
        print(f"{r['workload']:10} {r['exporter']:8} {r['run_s']:8.3f} {r['ratio']:7.3f} {r['flush_s']:8.3f} "
              f"{r['ratio_with_flush']:7.3f} {r['spans_per_run'] or '':>7}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--particles", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[2.0, 50.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phoenix", default=None, help="OTLP/HTTP traces URL of a running Phoenix")
    args = parser.parse_args()
    _print(main(args.particles, args.steps, tuple(args.latency_ms), args.repeats, args.phoenix))
