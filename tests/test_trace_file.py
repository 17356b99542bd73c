"""The JSONL global trace: exact round trip of real SMC runs, genealogy, deaths, torn lines, disk full."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import policies
from observability.trace_file import (
    FORMAT,
    TraceFileError,
    TraceFileWriter,
    read_trace_file,
    read_trace_runs,
)
import swarm
from swarm import SwarmError
from swarm.listeners import ParticleStep, RunFinished, RunStarted, StepRecord
from swarm.trace import FactorEvent, SampleEvent
from tests.exact_programs import BY_NAME

ROUND_TRIP = ["api_example", "no_two_heads", "hmm", "chain3", "bounded_geometric", "async_program", "noisy_count", "shaped"]


def run_smc(name: str, path: Path, n: int = 200, seed: int = 0):
    prog = BY_NAME[name]
    writer = TraceFileWriter(path)
    result = policies.SMC(num_particles=n, seed=seed, listeners=[writer]).run(prog.program, *prog.args, **prog.kwargs)
    writer.close()
    return result, read_trace_file(path)


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_round_trip_of_a_real_run_is_exact(tmp_path, name):
    result, trace = run_smc(name, tmp_path / "t.jsonl")
    assert trace.complete and not trace.truncated and not trace.problems
    assert trace.run.policy == "SMC" and trace.run.num_particles == 200
    # The final population, bit for bit (−inf included), and the evidence.
    final = trace.final_population()
    assert [p.id for p in final] == [p.id for p in result.particles]
    assert [p.log_weight for p in final] == [p.log_weight for p in result.particles]
    assert trace.log_evidence == result.log_evidence
    assert trace.finished.ess == result.ess
    assert trace.ess_per_step() == result.diagnostics.ess_per_step
    assert trace.log_evidence_per_step() == result.diagnostics.log_evidence_per_step
    assert trace.final_marginal() == pytest.approx(result.marginal(), abs=1e-12)
    assert list(trace.final_marginal()) == list(result.marginal())


@pytest.mark.parametrize("name", ["no_two_heads", "hmm", "shaped", "needle_guarantees"])
def test_lineage_agrees_with_the_genealogy_and_the_traces(tmp_path, name):
    result, trace = run_smc(name, tmp_path / "t.jsonl")
    parents = trace.genealogy()
    first_ids = set(trace.steps[0].particle_ids)
    assert any(s.resampled for s in trace.steps), "the test needs a run that resampled"
    index_genealogy = result.diagnostics.genealogy  # independent record: parent indices per step
    for j, particle in enumerate(result.particles):
        lineage = trace.lineage(particle.id)
        assert lineage[-1] == particle.id and lineage[0] in first_ids and parents[lineage[0]] is None
        assert all(parents[child] == parent for parent, child in zip(lineage, lineage[1:]))
        if particle.parent_id is not None:
            assert parents[particle.id] == particle.parent_id
        # Walk the policy's own index genealogy back and collect ids: the same lineage.
        ids, idx = [], j
        for k in range(len(index_genealogy) - 1, -1, -1):
            idx = index_genealogy[k][idx]
            ids.append(trace.steps[k].particle_ids[idx])
        assert sorted(set(ids) | {particle.id}) == sorted(lineage)
        # The particle's whole trace is the concatenation of its lineage's new events.
        events = [e for ps in trace.particle_history(particle.id, with_ancestors=True) for e in ps.new_events]
        assert [dataclasses.asdict(e) for e in events] == [dataclasses.asdict(e) for e in particle.trace.events]
        assert [ps.step for ps in trace.particle_history(particle.id)] == sorted(
            ps.step for ps in trace.particle_history(particle.id))
    with pytest.raises(KeyError, match="particle 10000000 does not appear"):
        trace.lineage(10_000_000)


def test_deaths_name_the_guarantee_that_killed(tmp_path):
    result, trace = run_smc("no_two_heads", tmp_path / "t.jsonl")
    deaths = trace.deaths()
    assert deaths and {d.kind for d in deaths.values()} == {"guarantee"}
    assert Counter(d.cause for d in deaths.values()) == Counter(result.diagnostics.deaths)
    assert all(d.cause.startswith("ok") and d.detail == f"guarantee {d.cause!r} failed" for d in deaths.values())
    dead_final = {p.id for p in result.particles if p.log_weight == -math.inf}
    assert dead_final <= set(deaths)


@pytest.mark.parametrize("policy", [policies.SMC(num_particles=6, seed=0),
                                    policies.SMC(num_particles=6, seed=0, ess_threshold=0.0)], ids=["SMC", "no-resampling"])
def test_the_step_in_which_every_particle_dies_is_recorded(tmp_path, policy):
    """Before: `NoSurvivingParticles` was raised before the step was reported, so the trace file
    ended at step 1 and `deaths()` was empty while the error said 'never' killed 6."""
    path = tmp_path / "t.jsonl"
    writer = TraceFileWriter(path)
    with pytest.raises(swarm.NoSurvivingParticles, match="'never' killed 6"):
        policy.model_copy(update={"listeners": [writer]}).run(_all_die_at_step_two)
    trace = read_trace_file(path)
    assert [s.step for s in trace.steps] == [1, 2] and trace.failed
    last = trace.steps[-1]
    assert (last.ess, last.log_evidence, last.resampled) == (0.0, -math.inf, False)
    assert Counter(d.cause for d in trace.deaths().values()) == {"never": 6}
    assert all(d.step == 2 for d in trace.deaths().values())


def test_error_deaths_carry_the_exception(tmp_path):
    def flaky():
        from swarm import Bernoulli, factor, sample

        x = sample("x", Bernoulli(0.5))
        factor("f", 0.0)
        if x:
            raise ValueError("bad luck")
        return x

    writer = TraceFileWriter(tmp_path / "t.jsonl")
    policies.SMC(num_particles=50, seed=1, listeners=[writer]).run(flaky)
    writer.close()
    deaths = read_trace_file(tmp_path / "t.jsonl").deaths()
    assert deaths and all(d.kind == "error" and d.detail == "ValueError: bad luck" for d in deaths.values())
    assert all(d.cause == "ValueError after f" for d in deaths.values())


def _records(values, log_weights):
    started = RunStarted(run_id="r1", policy="SMC", program="p", num_particles=3, started_at_ns=1)
    ps = ParticleStep(particle_id=0, index=0, step=1, status="dead", log_weight=-math.inf, log_increment=math.nan,
                      started_at_ns=1, ended_at_ns=2, value=values, killed_by="f",
                      new_events=[SampleEvent(address="x", value=values, log_prob=-math.inf, target_log_prob=math.inf),
                                  FactorEvent(address="f", log_potential=-math.inf)])
    step = StepRecord(run_id="r1", step=1, particles=[ps], log_weights=log_weights, particle_ids=[0, 1, 2],
                      ess=1.0, log_evidence=0.1 + 0.2, resampled=False, started_at_ns=1, ended_at_ns=2)
    finished = RunFinished(run_id="r1", policy="SMC", log_evidence=-math.inf, num_particles=3,
                           log_weights=log_weights, particle_ids=[0, 1, 2], values=[values, "-inf", None], ended_at_ns=3)
    return started, step, finished


def test_nonfinite_floats_and_unserialisable_values(tmp_path):
    class Opaque:
        def __repr__(self):
            return "<Opaque>"

    log_w = [-math.inf, 0.1 + 0.2, 5e-324]
    value = {"inf": math.inf, "obj": Opaque(), "s": "-inf", "t": (1, 2.5), "np": np.float64(1.5), 3: "int key"}
    started, step, finished = _records(value, log_w)
    with TraceFileWriter(tmp_path / "t.jsonl") as writer:
        writer.on_run_start(started)
        writer.on_step(step)
        writer.on_run_end(finished)
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["run_started", "step", "run_finished"]
    assert json.loads(lines[0])["format"] == FORMAT
    assert "Infinity" not in "".join(lines) and "NaN" not in "".join(lines)  # strict JSON
    trace = read_trace_file(tmp_path / "t.jsonl")
    back = trace.steps[0]
    assert back.log_weights == log_w and back.log_evidence == 0.1 + 0.2
    ps = back.particles[0]
    assert ps.log_weight == -math.inf and math.isnan(ps.log_increment)
    # the user's string "-inf" stays a string; JSON has no tuples, numpy scalars or int keys
    assert ps.value == {"inf": math.inf, "obj": "<Opaque>", "s": "-inf", "t": [1, 2.5], "np": 1.5, "3": "int key"}
    assert ps.new_events[0].log_prob == -math.inf and ps.new_events[0].target_log_prob == math.inf
    assert ps.new_events[1].log_potential == -math.inf
    assert trace.finished.values[1] == "-inf" and trace.finished.log_evidence == -math.inf


def test_torn_last_line_is_reported_and_the_rest_returned(tmp_path):
    path = tmp_path / "t.jsonl"
    run_smc("hmm", path, n=50)
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid run_finished
    trace = read_trace_file(torn)
    assert trace.truncated and not trace.complete
    assert f"line {len(lines)} is incomplete" in trace.problems[0]
    assert len(trace.steps) == len(lines) - 2
    assert [p.id for p in trace.final_population()] == trace.steps[-1].particle_ids
    # a half-written step line: the steps before it survive
    torn.write_bytes(b"".join(lines[:3]) + lines[3][:100])
    trace = read_trace_file(torn)
    assert trace.truncated and len(trace.steps) == 2


def test_malformed_lines_raise_naming_path_line_and_field(tmp_path):
    path = tmp_path / "t.jsonl"
    run_smc("api_example", path, n=20)
    lines = path.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    with pytest.raises(TraceFileError, match=r"bad\.jsonl: line 2 is not valid JSON") as info:
        read_trace_file(bad)
    assert info.value.path == str(bad) and isinstance(info.value, SwarmError)
    record = json.loads(lines[1])
    record["particles"][0]["log_weight"] = "heavy"
    bad.write_text(lines[0] + json.dumps(record) + "\n")
    with pytest.raises(TraceFileError, match=r"line 2 \(step record\): field particles\.0\.log_weight"):
        read_trace_file(bad)
    bad.write_text('{"kind": "nonsense"}\n')
    with pytest.raises(TraceFileError, match="line 1: 'kind' must be one of"):
        read_trace_file(bad)
    with pytest.raises(TraceFileError, match="missing.jsonl: cannot read it"):
        read_trace_file(tmp_path / "missing.jsonl")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full (Linux) simulates a full disk")
def test_disk_full_is_recorded_not_raised_into_the_run_then_raised_at_close():
    writer = TraceFileWriter("/dev/full")
    result = policies.SMC(num_particles=20, seed=0, listeners=[writer]).run(BY_NAME["api_example"].program)
    assert len(result.particles) == 20  # the run was not harmed
    assert isinstance(writer.error, TraceFileError) and writer.error.path == "/dev/full"
    assert "No space left on device" in str(writer.error) and "run_started record" in str(writer.error)
    with pytest.raises(TraceFileError, match=r"trace file /dev/full: cannot write the run_started record"):
        writer.close()


def test_unwritable_path_names_the_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    writer = TraceFileWriter(blocker / "t.jsonl")
    policies.SMC(num_particles=5, seed=0, listeners=[writer]).run(BY_NAME["api_example"].program)
    with pytest.raises(TraceFileError, match=str(blocker / "t.jsonl")):
        writer.check()


def test_one_writer_two_runs(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = TraceFileWriter(path)
    first = policies.SMC(num_particles=10, seed=0, listeners=[writer]).run(BY_NAME["dice"].program)
    second = policies.Importance(num_particles=10, seed=1, listeners=[writer]).run(BY_NAME["dice"].program)
    writer.close()
    runs = read_trace_runs(path)
    assert [r.run.policy for r in runs] == ["SMC", "Importance"]
    assert [r.run.run_id for r in runs] == [first.run_id, second.run_id]  # a Result names its run
    assert read_trace_file(path).run.policy == "Importance"
    chosen = read_trace_file(path, run_id=runs[0].run.run_id)
    assert [p.log_weight for p in chosen.final_population()] == [p.log_weight for p in first.particles]
    assert [p.log_weight for p in runs[1].final_population()] == [p.log_weight for p in second.particles]
    with pytest.raises(TraceFileError, match="no run 'nope'"):
        read_trace_file(path, run_id="nope")


def test_a_file_without_one_complete_record_is_an_error(tmp_path):
    """Bytes without a newline (a binary file, a run killed while writing its first line) used to
    read as an empty, merely truncated trace: `swarm inspect` printed an empty tree and exited 0."""
    for name, data in (("binary.jsonl", b"\x00\x01\xff\xfe"), ("torn.jsonl", b'{"kind":"run_started","run_id"'),
                       ("empty.jsonl", b""), ("blank.jsonl", b"\n\n")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(TraceFileError, match=f"{name}: the file holds no complete record"):
            read_trace_file(path)


def _all_die_at_step_two():
    from swarm import Bernoulli, factor, guarantee, sample

    x = sample("x", Bernoulli(0.5))
    factor("f", 0.0)
    sample("y", Bernoulli(0.5))
    guarantee("never", False)
    return x


def test_a_failed_run_has_no_log_z_and_only_a_provisional_population(tmp_path):
    """Every particle dies at step 2: the run raises; its step 1 had a running log Ẑ of 0 and a
    healthy population. That estimate used to be the run's log Z and that population its "final"
    one, next to "run failed: no surviving particles". Step 2, where they died, is recorded too
    (log Ẑ −∞, every particle dead: `test_the_step_in_which_every_particle_dies_is_recorded`)."""
    writer = TraceFileWriter(tmp_path / "t.jsonl")
    with pytest.raises(SwarmError, match="no surviving particles"):
        policies.SMC(num_particles=6, seed=0, listeners=[writer]).run(_all_die_at_step_two)
    writer.close()
    trace = read_trace_file(tmp_path / "t.jsonl")
    assert trace.complete and trace.failed and trace.provisional
    assert trace.log_evidence is None and [s.log_evidence for s in trace.steps] == [0.0, -math.inf]
    assert len(trace.final_population()) == 6  # still shown, as the last recorded population
    assert all(p.normalized_weight == 0.0 for p in trace.final_population())  # all dead
    ok = run_smc("api_example", tmp_path / "ok.jsonl", n=20)[1]
    assert not ok.failed and not ok.provisional and ok.log_evidence is not None


# -- a run that paused for a person ------------------------------------------------------------------
async def _asks_a_person():
    x = swarm.sample("x", swarm.Categorical([0, 1, 2], probs=[0.5, 0.3, 0.2]))
    swarm.factor("prefer_small", -0.5 * x)
    return await swarm.ask_human("rate", f"Rate option {x}", schema=int)


def test_a_run_waiting_for_a_person_is_recorded_as_waiting_not_as_finished(tmp_path):
    """The run_finished record of a paused run says "waiting" with its questions and checkpoint; the
    readers show its population as the one it paused with (◦), not a final one (★), and say how to
    continue it; the OTel run span carries the status. A finished and a failed run say so too."""
    from observability import instrument
    from observability.genealogy_view import build_nodes, label, summary
    from observability.html_report import render_html

    from observability.progress import ProgressListener

    path, directory, shown = tmp_path / "t.jsonl", tmp_path / "ckpt", io.StringIO()
    writer, inst = TraceFileWriter(path), instrument("memory", register=False)
    result = policies.SMC(num_particles=30, seed=3, checkpoint=directory,
                          listeners=[writer, inst.listener, ProgressListener(shown, tty=False)]).run(_asks_a_person)
    writer.close()
    inst.shutdown()
    assert result.status == "waiting"
    assert "run paused after" in shown.getvalue() and "waiting for a person (3 question(s))" in shown.getvalue()
    assert "run finished" not in shown.getvalue()
    trace = read_trace_file(path)
    assert trace.finished.status == "waiting" and trace.waiting and not trace.failed
    assert trace.finished.checkpoint == str(directory)
    assert sorted(q["question"] for q in trace.finished.pending) == sorted(q.question for q in result.pending)
    assert trace.provisional  # the population before the paused step: no posterior yet
    lines = "\n".join(summary(trace))
    assert "run waits for a person: 3 question(s) ('rate' ×3)" in lines
    assert f"swarm resume {directory} --answer NAME=VALUE" in lines
    labels = [label(node) for node in build_nodes(trace).values()]
    assert any("◦ paused" in t for t in labels)
    assert all(text.endswith("◦ paused") for text in labels if "◦" in text or "★" in text)
    assert "run waits for a person" in render_html(trace, dict.fromkeys(
        ["ess", "log_evidence", "weights", "marginal", "genealogy"], b""))
    (run_span,) = [s for s in inst.memory_exporter.get_finished_spans() if s.name.startswith("plp.run")]
    assert run_span.attributes["plp.run.status"] == "waiting"
    assert list(run_span.attributes["plp.pending_questions"]) == ["rate"] * 3

    # A finished run says so; a record written before `status` existed reads as failed by its error.
    run_smc("chain3", tmp_path / "done.jsonl", n=20)
    assert read_trace_file(tmp_path / "done.jsonl").finished.status == "finished"
    old = RunFinished.model_validate({"run_id": "r", "policy": "SMC", "ended_at_ns": 1, "error": "ValueError: x"})
    assert old.status == "failed"
