"""The runs that bench/otel_overhead.py measures, and where they happen: in this process (`Local`),
or in a long-lived child process that imports another checkout (`Tree`, for before → after
comparisons in one run). This file imports nothing from `bench` but toy_programs.py next to it, so a child can run it by path
against any checkout: `PYTHONPATH=<checkout> python bench/otel_runs.py` (the `Tree` protocol: one
JSON command a line on stdin, one JSON result a line on stdout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import policies
from swarm import factor, sample

if __package__:
    from .toy_programs import toy_program
else:  # run by path (a `Tree` child): the file next to this one, whatever checkout PYTHONPATH names
    from toy_programs import toy_program

__all__ = ["VARIANTS", "Local", "Tree", "llm_program", "one_run", "toy_program", "workload_program"]


# ---- workloads ----------------------------------------------------------------------------------
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


def workload_program(workload: str, steps: int):
    return toy_program(steps) if workload == "toy" else llm_program(steps, float(workload[4:-2]) / 1000)


VARIANTS: dict[str, dict[str, Any]] = {
    "off": {},
    "memory": {"exporter": "memory"},
    "otlp": {"exporter": "otlp"},
    "otlp-sync": {"exporter": "otlp", "background": False},
    "otlp-10%": {"exporter": "otlp", "particle_sampling": 0.1},
}
"""Tracing configurations: "off" is the baseline; "otlp-sync" builds spans in the coordinator;
"otlp-10%" is the opt-in particle sampling (only options every version of `instrument` accepts)."""


def one_run(program, particles: int, seed: int, variant: str, endpoint: str | None) -> dict[str, Any]:
    """One `policy.run` under `variant`: wall seconds of the run and of the flush after it, process
    CPU seconds of both, and the number of spans (in-memory exporter only)."""
    from observability.exporters import instrument

    options = dict(VARIANTS[variant])
    exporter = options.pop("exporter", None)
    inst = None if exporter is None else instrument(exporter, endpoint=endpoint, register=False, **options)
    policy = policies.SMC(num_particles=particles, seed=seed, listeners=[] if inst is None else [inst.listener])
    cpu, start = time.process_time(), time.perf_counter()
    policy.run(program)
    run_s = time.perf_counter() - start
    spans = 0
    if inst is not None:
        inst.force_flush()
        if inst.memory_exporter is not None:
            spans = len(inst.memory_exporter.get_finished_spans())
        inst.shutdown()
    return {"run_s": run_s, "flush_s": time.perf_counter() - start - run_s, "cpu_s": time.process_time() - cpu,
            "spans": spans}


# ---- where runs happen: this process, or a child process per code tree ------------------------------
class Local:
    """Runs in this process (the code on this process's path)."""

    label = "this"

    def __init__(self) -> None:
        self.programs: dict[tuple[str, int], Any] = {}

    def run(self, workload: str, steps: int, particles: int, seed: int, variant: str, endpoint: str) -> dict:
        program = self.programs.setdefault((workload, steps), workload_program(workload, steps))
        if variant == "warm-up":
            policies.SMC(num_particles=min(particles, 20), seed=0).run(program)
            return {}
        return one_run(program, particles, seed, variant, endpoint)

    def close(self) -> None:
        pass


class Tree(Local):
    """A long-lived child process that imports the code of another checkout (PYTHONPATH=`root`)
    and runs what it is sent (one JSON command a line in, one JSON result a line out)."""

    def __init__(self, root: str, label: str) -> None:
        super().__init__()
        self.label = label
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], env=env,
                                     cwd=str(root), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, workload: str, steps: int, particles: int, seed: int, variant: str, endpoint: str) -> dict:
        command = {"workload": workload, "steps": steps, "particles": particles, "seed": seed, "variant": variant,
                   "endpoint": endpoint}
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.label} tree's bench process exited ({self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve() -> None:
    """The child side of `Tree`."""
    local = Local()
    for line in sys.stdin:
        command = json.loads(line)
        print(json.dumps(local.run(**command)), flush=True)


if __name__ == "__main__":
    serve()
