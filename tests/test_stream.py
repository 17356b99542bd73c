"""`policy.stream`: the events of a run, checked against the run itself and against traces.

- The stream's Result is exactly `policy.run`'s for the same seed, and every `StepEnd` carries
  exactly the ESS, log Ẑ, resampling decision and deaths that the run recorded for that step.
- Text: the heaviest particle's text, rebuilt from the deltas alone, equals its text read from the
  final population's traces; the committed text is a prefix of every surviving particle's text.
  SMC resamples at every step (ess_threshold=1) so the genealogy is exercised.
- Errors and cancellation: a run's error comes out of the iterator; closing the stream early
  cancels the run at once.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import time
from collections import Counter

import pytest

import policies
from agents import ChatMessage
from observability.progress import ProgressDisplay, ProgressListener
from policies.streaming import CommittedText, RunEnd, RunStart, StepEnd, StepStart, TextDelta, generated_text
from swarm import Bernoulli, NoSurvivingParticles, factor, guarantee, sample
from swarm.listeners import RunListener
from tests.serve_fixtures import program as sentence_program

MESSAGES = [ChatMessage(role="user", content="Write a sentence.")]


def coins(n: int = 5):
    """Soft preference for heads at every flip, at least two heads at the end."""
    heads = 0
    for t in range(n):
        heads += sample(f"flip{t}", Bernoulli(0.5))
        factor(f"prefer_heads{t}", 0.4 * heads)
    guarantee("at_least_two", heads >= 2)
    return heads


def events_of(policy, program, *args, **kwargs) -> list:
    return list(policy.stream(program, *args, **kwargs))


def test_stream_result_and_steps_are_exactly_the_runs():
    policy = policies.SMC(num_particles=300, seed=7)
    events = events_of(policy, coins)
    assert isinstance(events[0], RunStart) and isinstance(events[-1], RunEnd)
    assert sum(isinstance(e, RunEnd) for e in events) == 1
    result, direct = events[-1].result, policy.run(coins)
    assert result.log_evidence == direct.log_evidence and result.values == direct.values
    starts = [e.step for e in events if isinstance(e, StepStart)]
    ends = [e for e in events if isinstance(e, StepEnd)]
    # five factors and the guarantee are six steps; in the seventh the particles run to their end
    assert starts == [e.step for e in ends] == [s.step for s in result.diagnostics.steps] == list(range(1, 8))
    for end, stats in zip(ends, result.diagnostics.steps):
        assert (end.ess, end.log_evidence, end.resampled, end.alive) == \
               (stats.ess, stats.log_evidence, stats.resampled, stats.num_alive)
        assert end.num_particles == 300 and end.run_id == events[0].run_id
    deaths = Counter()
    for end in ends:
        deaths.update(end.deaths)
    assert dict(deaths) == result.diagnostics.deaths and deaths["at_least_two"] > 0
    assert any(e.resampled for e in ends) and not any(e.resampled for e in ends[-1:])


def _particle_text(particle) -> str:
    return "".join(t for t in map(generated_text, particle.trace.events) if t)


def test_text_deltas_rebuild_the_heaviest_particles_text():
    policy = policies.SMC(num_particles=16, seed=3, ess_threshold=1.0)  # resample at every step
    events = events_of(policy, sentence_program, MESSAGES)
    result = events[-1].result
    shown = ""
    deltas = [e for e in events if isinstance(e, TextDelta)]
    for delta in deltas:
        assert delta.offset <= len(shown) and shown[:delta.offset] + delta.delta == delta.text
        shown = delta.text
    assert len(deltas) >= 3 and sum(e.resampled for e in events if isinstance(e, StepEnd)) >= 3
    heaviest = max(result.particles, key=lambda p: p.log_weight)
    assert shown == _particle_text(heaviest) == heaviest.value


def test_committed_text_is_final_and_only_grows():
    for seed in range(1, 5):  # seeds at which some particle finds the one sentence without "c"
        events = events_of(policies.SMC(num_particles=12, seed=seed), sentence_program, MESSAGES, letter="c")
        committed = [e for e in events if isinstance(e, CommittedText)]
        texts = [""] + [e.text for e in committed]
        assert all(b.startswith(a) and b == a + e.delta for a, b, e in zip(texts, texts[1:], committed))
        survivors = [p for p in events[-1].result.particles if p.log_weight > -math.inf]
        assert committed and survivors
        assert all(_particle_text(p).startswith(committed[-1].text) for p in survivors)


def test_a_runs_error_comes_out_of_the_stream_after_its_events():
    def impossible():
        x = sample("x", Bernoulli(0.5))
        factor("fine", 0.0)
        guarantee("never", x > 5)
        return x

    seen = []
    with pytest.raises(NoSurvivingParticles, match="'never' killed 10"):
        for event in policies.SMC(num_particles=10, seed=0).stream(impossible):
            seen.append(event)
    assert [type(e) for e in seen] == [RunStart, StepStart, StepEnd, StepStart, StepEnd]
    assert (seen[-1].step, seen[-1].ess, seen[-1].log_evidence) == (2, 0.0, -math.inf)  # the step they died in


def test_closing_the_stream_cancels_the_run():
    async def slow(delay: float = 30.0):
        await asyncio.sleep(delay)
        factor("f", 0.0)
        return 1

    async def main():
        stream = policies.SMC(num_particles=4, seed=0).stream_async(slow)
        first = await stream.__anext__()
        started = time.perf_counter()
        await stream.aclose()
        return first, time.perf_counter() - started, [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    first, elapsed, left = asyncio.run(main())
    assert isinstance(first, RunStart) and elapsed < 5.0 and left == []  # 30 s of sleep were cancelled


def test_a_plain_for_inside_an_event_loop_is_refused():
    async def main():
        with pytest.raises(RuntimeError, match="async for"):
            next(iter(policies.SMC(num_particles=2, seed=0).stream(coins)))
        return [e async for e in policies.SMC(num_particles=20, seed=0).stream(coins)]

    assert isinstance(asyncio.run(main())[-1], RunEnd)


def test_the_display_shows_the_same_lines_from_the_stream_and_as_a_listener():
    def lines(text: str) -> list[str]:
        text = re.sub(r"\d+\.\d+ s\b", "T s", re.sub(r"run [0-9a-f]{16}", "run ID", text))
        return re.sub(r"\(\d+/s\)", "(R/s)", text).splitlines()

    followed, listened = io.StringIO(), io.StringIO()
    ProgressDisplay(followed, tty=False).follow(policies.SMC(num_particles=50, seed=1).stream(coins))
    policies.SMC(num_particles=50, seed=1, listeners=[ProgressListener(listened, tty=False)]).run(coins)
    assert lines(followed.getvalue()) == lines(listened.getvalue())
    assert len(lines(followed.getvalue())) == 1 + 7 + 1  # the run, seven steps, the end


def test_result_only_counts_output_tokens_without_building_step_records(monkeypatch):
    """`RunStream.result()` (a plain served response) takes the output tokens from the result's
    diagnostics and builds no per-step records; the count equals the streamed run's (which reads
    the records). Fails if the run-id listener asks for steps, or the counts disagree."""
    import swarm.listeners as listeners

    built = []
    real = listeners.step_record
    monkeypatch.setattr(listeners, "step_record", lambda *a: built.append(1) or real(*a))
    import policies.base as base
    monkeypatch.setattr(base, "step_record", listeners.step_record)
    policy = policies.SMC(num_particles=6, seed=3)
    end = asyncio.run(policy.stream(sentence_program, MESSAGES).result())
    assert built == [] and end.output_tokens > 0 and end.run_id
    streamed = events_of(policy, sentence_program, MESSAGES)[-1]
    assert built and streamed.output_tokens == end.output_tokens


def test_step_records_are_what_model_construct_builds(monkeypatch):
    """`swarm.listeners.particle_step` (the step records' fast construction) gives the instance
    pydantic's `model_construct` gives, and `step_record` names every field of `ParticleStep`, in
    order (a field added to the model without it fails here)."""
    from swarm import listeners

    seen = []
    real = listeners.particle_step
    monkeypatch.setattr(listeners, "particle_step", lambda values: seen.append(values) or real(values))
    policies.SMC(num_particles=4, seed=0, listeners=[_Steps()]).run(_two_step_program)
    assert seen
    for values in seen:
        assert list(values) == list(listeners.ParticleStep.model_fields)
        fast, slow = real(dict(values)), listeners.ParticleStep.model_construct(**values)
        assert fast == slow and fast.model_fields_set == slow.model_fields_set
        assert fast.model_dump() == slow.model_dump()
        assert listeners.ParticleStep.model_validate(fast.model_dump()) == fast  # valid as built


class _Steps(RunListener):
    def on_step(self, record) -> None:
        assert all(isinstance(p.particle_id, int) and isinstance(p.log_weight, float) for p in record.particles)


def _two_step_program():
    x = sample("x", Bernoulli(0.5))
    factor("f", 0.3 * x)
    return int(x)


def test_leaving_a_stream_whose_run_already_failed_logs_nothing(caplog):
    """A plain program's run ends before its first event is read; a consumer that stops there (a
    `break`, Ctrl-C in the CLI) left the run's exception unretrieved, and asyncio logged "Task
    exception was never retrieved" with its traceback when the task was collected."""
    import gc
    import logging

    def impossible():
        guarantee("never", False)

    caplog.set_level(logging.ERROR, logger="asyncio")
    for event in policies.SMC(num_particles=4, seed=0).stream(impossible):
        assert isinstance(event, RunStart)
        break
    gc.collect()
    assert "never retrieved" not in caplog.text


def test_a_plain_programs_steps_are_streamed_as_they_end():
    """A plain program never awaits, so its run never gave the event loop a turn: every event reached
    the reader after the run had ended (the CLI's progress showed nothing until then). Now the loop
    gets a turn before each step: an `async for` reader sees step k's end before step k + 1 runs.
    A plain `for` runs the loop only while it waits for the next events, and the run goes on in each
    of those turns (the loop stops an iteration after the reader's task ends): it reads every event
    ready at once, so it stays at most three steps behind (reading one event a turn, it fell a step
    further behind with each event read). Deterministic: no program step awaits, nothing is timed."""
    ran: list[int] = []

    def program():
        for t in range(10):
            ran.append(t)
            factor(f"f{t}", 0.0)
        return len(ran)

    async def read() -> list[tuple[int, int]]:
        return [(e.step, len(ran)) async for e in policies.SMC(num_particles=2, seed=0).stream(program)
                if isinstance(e, StepEnd)]

    seen = asyncio.run(read())
    assert [ran_so_far for _, ran_so_far in seen[:10]] == [2 * step for step, _ in seen[:10]], seen
    ran.clear()
    seen = [(e.step, len(ran)) for e in policies.SMC(num_particles=2, seed=0).stream(program) if isinstance(e, StepEnd)]
    assert all(ran_so_far <= 2 * (step + 3) for step, ran_so_far in seen) and seen[0][1] < 2 * 10, seen
