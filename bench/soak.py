"""Soak: SMC with 10,000 particles × 20 steps against a fake LLM endpoint that fails 5% of attempts.

The endpoint is `FlakyFakeEndpoint`, an in-process TEST DOUBLE (no model, no network): each attempt
of a request fails with probability `error_rate`, decided by (schedule seed, request seed, attempt),
and a failed attempt is retried at once up to `max_retries` times, as `OpenAICompatible` does (no
backoff sleeps: the soak measures the framework, not the waiting). A request whose every attempt
fails raises `BackendError`; the particle that made it is *lost* (missing data, not evidence: left
out of the weights and of log Z) with an `ErrorEvent`, and the run goes on.

What is checked (each row's `accounted` is True only if all hold):
- every injected fault is accounted for: faults = retried attempts + (max_retries + 1) × exhausted;
- every exhausted request is an `ErrorEvent` reported to the run's listener, and a lost particle in
  `result.diagnostics.lost` (none is counted as a death);
- memory stays bounded: peak RSS (`resource.getrusage`, whole process; issue 12's goal: ≤ 0.6 GB at
  N = 10,000 × 20) is reported at each size; with `--tracemalloc` also the peak of Python
  allocations, with bytes per particle-step. Off by default: tracing every allocation roughly
  doubles the RSS of a run that holds millions of small objects (N = 10,000: 1.1 GB with it, 0.54 GB
  without) and makes it 5x slower, so the RSS figure is only the run's own without it.

Each size runs in a fresh subprocess, so its peak RSS is its own.

    python bench/soak.py [--sizes 1000 10000] [--steps 20] [--error-rate 0.05] [--max-retries 1] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

__all__ = ["FlakyFakeEndpoint", "main", "soak"]


def _fake_backend_class():
    from agents.backends.base import Backend, BackendError, Completion, GenerationRequest, Usage

    class FlakyFakeEndpoint(Backend):
        """A TEST DOUBLE endpoint: a scripted reply, and an injected failure on `error_rate` of the
        attempts, retried `max_retries` times before a `BackendError`. Counts what it injected."""

        name = "flaky-fake"

        def __init__(self, error_rate: float = 0.05, max_retries: int = 1, schedule_seed: int = 0) -> None:
            self.error_rate, self.max_retries, self.schedule_seed = error_rate, max_retries, schedule_seed
            self.model = "flaky-fake"
            self.requests = self.attempts = self.injected = self.exhausted = self.retried_ok = 0

        def _fails(self, seed: int | None, attempt: int) -> bool:
            return random.Random(f"{self.schedule_seed}/{seed}/{attempt}").random() < self.error_rate

        async def complete(self, request: GenerationRequest) -> Completion:
            self.requests += 1
            for attempt in range(self.max_retries + 1):
                self.attempts += 1
                if self._fails(request.seed, attempt):
                    self.injected += 1
                    continue
                self.retried_ok += attempt > 0
                text = ("yes", " no", " maybe")[(request.seed or 0) % 3]
                return Completion(text=text, tokens=[text], token_logprobs=[-math.log(3)],
                                  base_token_logprobs=[-math.log(3)], finish_reason="stop",
                                  usage=Usage(input_tokens=4, output_tokens=1), model=self.model, backend=self.name)
            self.exhausted += 1
            raise BackendError(f"flaky-fake: injected failure on all {self.max_retries + 1} attempts",
                               retryable=True)

    return FlakyFakeEndpoint


def __getattr__(name: str):
    if name == "FlakyFakeEndpoint":
        return _fake_backend_class()
    raise AttributeError(name)


def make_program(backend: Any, steps: int):
    from agents import Agent, GenerationSettings
    from swarm import factor, sample

    agent = Agent(name="worker", backend=backend, settings=GenerationSettings(max_tokens=2))

    async def program():
        yes = 0
        for t in range(steps):
            text = await sample(f"step{t}", agent.generate(raw_prompt=f"Step {t}: continue?"))
            yes += text == "yes"
            factor(f"score{t}", 0.0 if text != " maybe" else -0.5)
        return yes
    return program


def _listener_class():
    from swarm.listeners import RunListener

    class Accounting(RunListener):
        """Counts the ErrorEvents every step reports and samples the RSS after each step."""

        def __init__(self) -> None:
            self.error_events = 0
            self.error_types: dict[str, int] = {}
            self.rss_mb: list[float] = []

        def on_step(self, record) -> None:
            for p in record.particles:
                for e in p.new_events:
                    if e.type == "error":
                        self.error_events += 1
                        self.error_types[e.error_type] = self.error_types.get(e.error_type, 0) + 1
            self.rss_mb.append(_current_rss_mb())

    return Accounting


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def soak(particles: int, steps: int = 20, error_rate: float = 0.05, max_retries: int = 1, seed: int = 0,
         trace_malloc: bool = True) -> dict[str, Any]:
    """One soak run in this process; returns its row."""
    import policies

    backend = _fake_backend_class()(error_rate, max_retries, schedule_seed=seed)
    accounting = _listener_class()()
    if trace_malloc:
        tracemalloc.start()
    start = time.perf_counter()
    result = policies.SMC(num_particles=particles, seed=seed, listeners=[accounting]).run(make_program(backend, steps))
    elapsed = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1] if trace_malloc else None
    if trace_malloc:
        tracemalloc.stop()
    backend_deaths = sum(n for k, n in result.diagnostics.deaths.items() if k.startswith("BackendError"))
    lost = result.diagnostics.lost
    faults_accounted = backend.injected == (backend.attempts - backend.requests) + backend.exhausted
    accounted = (faults_accounted and backend.exhausted == accounting.error_events == lost and backend_deaths == 0
                 and set(accounting.error_types) <= {"BackendError"})
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "particles": particles, "steps": steps, "error_rate": error_rate, "max_retries": max_retries,
        "seconds": round(elapsed, 2), "particle_steps_per_s": round(particles * steps / elapsed),
        "requests": backend.requests, "attempts": backend.attempts, "injected_faults": backend.injected,
        "retried_ok": backend.retried_ok, "exhausted": backend.exhausted, "error_events": accounting.error_events,
        "lost": lost, "backend_deaths": backend_deaths, "accounted": accounted,
        "peak_rss_mb": round(peak_rss_mb, 1),
        "traced_peak_mb": None if traced_peak is None else round(traced_peak / 2**20, 1),
        "bytes_per_particle_step": None if traced_peak is None else round(traced_peak / (particles * steps)),
        "rss_after_steps_mb": [round(x) for x in accounting.rss_mb[:: max(1, len(accounting.rss_mb) // 5)]],
        "log_evidence": result.log_evidence, "ess": round(result.ess, 1),
        "survivors": sum(p.log_weight > -math.inf for p in result.particles),
    }


def main(sizes: tuple[int, ...] = (1000, 10_000), steps: int = 20, error_rate: float = 0.05,
         max_retries: int = 1, trace_malloc: bool = False) -> list[dict[str, Any]]:
    """Run `soak` for each size in a fresh Python process; return the rows."""
    rows = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--steps", str(steps), "--error-rate", str(error_rate),
               "--max-retries", str(max_retries)] + (["--tracemalloc"] if trace_malloc else [])
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(f"N={r['particles']} x {r['steps']} steps: {r['seconds']} s ({r['particle_steps_per_s']} particle-steps/s); "
              f"{r['requests']} requests, {r['attempts']} attempts, {r['injected_faults']} injected faults, "
              f"{r['retried_ok']} recovered by retry, {r['exhausted']} exhausted = {r['error_events']} ErrorEvents "
              f"= {r['lost']} lost ({r['backend_deaths']} counted as deaths) -> accounted={r['accounted']}; "
              f"peak RSS {r['peak_rss_mb']} MB, "
              f"tracemalloc peak {r['traced_peak_mb']} MB ({r['bytes_per_particle_step']} B/particle-step), "
              f"RSS over steps {r['rss_after_steps_mb']} MB; survivors {r['survivors']}, ESS {r['ess']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--error-rate", type=float, default=0.05)
    parser.add_argument("--max-retries", type=int, default=1)
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations (inflates RSS)")
    parser.add_argument("--no-tracemalloc", action="store_true", help=argparse.SUPPRESS)  # the default; kept for old commands
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
        print(json.dumps(soak(args.one, args.steps, args.error_rate, args.max_retries,
                              trace_malloc=args.tracemalloc and not args.no_tracemalloc)))
    else:
        _print(main(tuple(args.sizes), args.steps, args.error_rate, args.max_retries,
                    args.tracemalloc and not args.no_tracemalloc))
