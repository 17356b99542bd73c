"""Runs that pause for a person (`swarm.ask_human`) and resume with the answers.

The claims: a run whose particles ask a question nobody answered stops, is written to disk and
returns `status="waiting"` with each distinct question once; a *new process* resumes it with the
answers and finishes with exactly the result of one uninterrupted run given the same answers up
front (SMC, Forward, Importance, BestOfN); the answer is data (a point mass: the weights are those of the exact
posterior given it); a question is asked once per particle history (replay reads the recorded
answer); bad answers are refused naming their question, before anything runs."""

from __future__ import annotations

import asyncio
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import policies
import swarm.human
from swarm import Categorical, ask_human, factor, guarantee, plate, sample
from policies.pausing import pending_questions
from swarm.human import CannotPauseError, InvalidAnswerError
from tests import human_driver

REPO = Path(__file__).resolve().parents[1]


def driver(*args: str) -> dict:
    """Run the driver in a process of its own (it exits afterwards); its JSON report."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "tests.human_driver", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def uninterrupted(policy_name: str) -> dict:
    policy = human_driver.make_policy(policy_name).model_copy(update={"answers": human_driver.ANSWERS})
    return human_driver.summary(policy.run(human_driver.program, *human_driver.ARGS))


# -- pause in one process, resume in another --------------------------------------------------------
@pytest.mark.parametrize("policy_name", ["smc", "forward", "importance", "best_of_n"])
def test_a_paused_run_resumed_in_new_processes_equals_the_uninterrupted_run(tmp_path, policy_name):
    directory = tmp_path / "run"
    first = driver("run", policy_name, str(directory))
    assert first["status"] == "waiting" and first["checkpoint"] == str(directory)
    names = {q["name"] for q in first["pending"]}
    assert "keep" in names
    keeps = [q for q in first["pending"] if q["name"] == "keep"]
    assert sorted(q["question"] for q in keeps) == ["Keep b?", "Keep c?"]  # one per distinct text
    assert all(q["particles"] for q in first["pending"])
    answers = {q["id"]: human_driver.ANSWERS[q["name"]] for q in first["pending"]}  # by id this time
    out, rounds = tmp_path / "out.pkl", 0
    while True:  # answer what is pending, in a new process each time, until the run finishes
        report = driver("resume", policy_name, str(directory), json.dumps(answers), str(out))
        rounds += 1
        if report["status"] == "finished":
            break
        assert rounds < 4, report
        answers = {q["name"]: human_driver.ANSWERS[q["name"]] for q in report["pending"]}
    resumed = pickle.loads(out.read_bytes())
    reference = uninterrupted(policy_name)
    assert resumed == reference
    assert reference["status"] == "finished" and not reference["pending"]
    if policy_name == "smc":
        assert rounds == 2, "the second question is asked at a later step, after the first resume"
        assert any(s["resampled"] for s in reference["steps"]), "the run should resample"
        assert reference["deaths"], "answer 'no' kills the particles with x == 'c'"


def test_only_the_waiting_particles_run_again_on_resume(tmp_path, monkeypatch):
    """On resume the particles that reached the sync point are not run again: their segments are
    the recorded ones (a counting distribution shows which executions drew anything)."""
    draws: list[str] = []

    class Counted(Categorical):
        def sample(self, rng):
            draws.append("y")
            return super().sample(rng)

    async def prog():
        x = sample("x", Categorical([0, 1], probs=[0.5, 0.5]))
        if x == 1:
            await ask_human("ok", "ok?")
        sample("y", Counted([0, 1], probs=[0.5, 0.5]))
        factor("f", 0.0)
        return x

    policy = policies.SMC(num_particles=40, seed=2, checkpoint=tmp_path)
    waiting = policy.run(prog)
    (question,) = waiting.pending
    asked = len(question.particles)
    assert 0 < asked < 40 and len(draws) == 40 - asked
    draws.clear()
    done = policy.resume(tmp_path, prog, answers={"ok": True})
    assert done.status == "finished" and len(draws) == asked


# -- the answer is data: exact posterior given it ------------------------------------------------------
async def _judged(answer_source):
    x = sample("x", Categorical(["a", "b", "c"], probs=[0.5, 0.3, 0.2]))
    factor("f0", 0.3 if x == "b" else 0.0)
    pick = await answer_source()
    factor("likes", 1.2 if x == pick else 0.0)
    y = sample("y", Categorical([0, 1], probs=[0.6, 0.4]))
    guarantee("g", not (x == "a" and y == 1))
    return x


async def asked_program():
    async def ask():
        return await ask_human("pick", "Which letter?", schema={"enum": ["a", "b", "c"]})
    return await _judged(ask)


async def constant_program():
    async def given():
        return "b"
    return await _judged(given)


def test_smc_given_an_answer_targets_the_exact_posterior_given_it(tmp_path):
    exact = policies.Enumerate().run(constant_program)
    policy = policies.SMC(num_particles=4000, seed=11, ess_threshold=0.5)
    waiting = policy.run(asked_program)  # no checkpoint asked for: the pause writes a temporary directory
    directory = Path(waiting.checkpoint)
    try:
        assert directory.parent == Path(tempfile.gettempdir()) and directory.name.startswith("plp-swarm-paused-")
        result = policy.resume(directory, asked_program, answers={"pick": "b"})
    finally:
        shutil.rmtree(directory)
    assert result.status == "finished"
    # Tolerances, measured while writing the test over seeds 0-39 at N = 4000: log Ẑ − log Z had
    # standard deviation 0.016 (largest 0.043) and the marginal's largest error was 0.022 (mean
    # 0.0065). 0.08 is five standard deviations; 0.05 over twice the largest error seen. Draws are
    # counter-based (seed, stream, site), so the run is the same on every CPU. The wrong answer
    # ("a" or "c") moves log Ẑ by 0.15-0.30 and the marginal by 0.44; weighting the answer site by
    # a uniform log p over the three letters would move log Ẑ by 1.1.
    assert abs(result.log_evidence - exact.log_evidence) < 0.08
    exact_m, smc_m = exact.marginal(), result.marginal()
    assert max(abs(exact_m.get(k, 0.0) - smc_m.get(k, 0.0)) for k in exact_m) < 0.05
    answers = [e for p in result.particles for e in p.trace.events if e.address == "pick"]
    assert {e.value for e in answers} == {"b"} and {e.log_prob for e in answers} == {0.0}
    assert {e.target_log_prob for e in answers} == {None}


# -- asked once per particle history -------------------------------------------------------------------
def test_a_question_is_asked_once_per_particle_history_replay_reads_the_recorded_answer(monkeypatch):
    lookups = []
    real = swarm.human.answer_for

    def counting(question, address):
        lookups.append(question.name)
        return real(question, address)

    monkeypatch.setattr(swarm.human, "answer_for", counting)
    n = 64
    # ess_threshold 1.0: resample at every step, so later offspring replay the answered site.
    policy = policies.SMC(num_particles=n, seed=3, ess_threshold=1.0, answers={"pick": "a"})
    result = policy.run(asked_program)
    assert result.status == "finished"
    assert sum(s.resampled for s in result.diagnostics.steps) >= 2
    assert len(lookups) == n  # one per original particle; offspring replayed the recorded answer


# -- pending questions ------------------------------------------------------------------------------
def test_identical_questions_from_many_particles_are_pending_once(tmp_path):
    async def prog():
        x = sample("x", Categorical([0, 1, 2], probs=[0.4, 0.4, 0.2]))
        factor("f", 0.0)
        return await ask_human("rate", f"Rate option {x}", schema=int)

    result = policies.Forward(num_particles=100, seed=0, checkpoint=tmp_path).run(prog)
    assert result.status == "waiting"
    texts = [q.question for q in result.pending]
    assert sorted(texts) == ["Rate option 0", "Rate option 1", "Rate option 2"]
    assert len({q.id for q in result.pending}) == 3
    waiting = sorted(pid for q in result.pending for pid in q.particles)
    assert waiting == list(range(100))  # every particle waits on exactly one of the three
    for q in result.pending:
        assert {p.trace.samples()["x"] for p in result.particles if p.id in q.particles} == {int(q.question[-1])}
    assert all(q.answer_schema == {"type": "integer"} for q in result.pending)
    assert pending_questions(tmp_path) == result.pending


# -- bad answers ------------------------------------------------------------------------------------
def test_bad_answers_are_refused_naming_the_question_before_anything_runs(tmp_path):
    policy = policies.SMC(num_particles=20, seed=1, checkpoint=tmp_path)
    waiting = policy.run(asked_program)
    before = (tmp_path / "population.ckpt").read_bytes()
    with pytest.raises(InvalidAnswerError, match=r"answer to 'pick' \(id [0-9a-f]+\) refused.*'d' is not one of"):
        policy.resume(tmp_path, asked_program, answers={"pick": "d"})
    with pytest.raises(InvalidAnswerError, match=r"answer to 'pick'.*not a JSON value"):
        policy.resume(tmp_path, asked_program, answers={"pick": {1, 2}})
    with pytest.raises(InvalidAnswerError, match=r"waits for an answer to 'pick'.*none of them is answered"):
        policy.resume(tmp_path, asked_program, answers={"pik": "a"})
    assert (tmp_path / "population.ckpt").read_bytes() == before  # nothing ran, nothing was written
    assert policy.resume(tmp_path, asked_program, answers={waiting.pending[0].id: "a"}).status == "finished"


def test_a_bad_answer_given_up_front_stops_the_run_naming_the_question():
    with pytest.raises(InvalidAnswerError, match=r"answer to 'pick' .*refused"):
        policies.SMC(num_particles=10, seed=0, answers={"pick": 3}).run(asked_program)


def test_a_policy_that_cannot_pause_says_so_and_user_code_cannot_swallow_the_pause(tmp_path):
    async def swallowing():
        try:
            answer = await ask_human("q", "anything?")
        except Exception:  # noqa: BLE001 - what user code does; the pause is not an Exception
            answer = "swallowed"
        factor("f", 0.0)
        return answer

    with pytest.raises(CannotPauseError, match=r"question 'q' \(id [0-9a-f]+\) at site 'q' has no answer"):
        policies.Rejection(num_particles=5, seed=0).run(swallowing)
    with pytest.raises(CannotPauseError, match="cannot pause"):  # called directly, outside any policy
        asyncio.run(asked_program())
    with pytest.raises(CannotPauseError, match=r"Enumerate: site 'pick' asks a person \('Which letter\?'\); "
                                               r"Enumerate enumerates the program's paths and can neither ask nor pause"):
        policies.Enumerate().run(asked_program)  # it said "no finite support: use Importance or SMC for LLMs"
    result = policies.SMC(num_particles=5, seed=0, checkpoint=tmp_path).run(swallowing)
    assert result.status == "waiting" and result.pending[0].name == "q"
    done = policies.SMC(num_particles=5, seed=0).resume(result.checkpoint, swallowing, answers={"q": "yes"})
    assert done.marginal() == {"yes": 1.0}


def test_answers_are_plain_json_and_schemas_are_checked_when_asked():
    with pytest.raises(ValueError, match=r"answers\.3\.\[key\]"):  # pydantic names the field
        policies.SMC(num_particles=2, seed=0, answers={3: "x"})
    with pytest.raises(InvalidAnswerError, match="keys are question names or ids"):
        swarm.human.encode_answers({3: "x"})
    with pytest.raises(InvalidAnswerError, match=r"ask_human 'bad': invalid answer schema"):
        swarm.human.Question.make("bad", "?", {"type": "no-such-type"})
    assert math.isfinite(policies.SMC(num_particles=4, seed=0, answers={"pick": "c"}).run(asked_program).log_evidence)


# -- inside plates ------------------------------------------------------------------------------------
def _plate_program(concurrent: bool):
    def replica():
        y = sample("y", Categorical([0, 1], probs=[0.5, 0.5]))
        ok = swarm.human.ask_human_sync("ok", f"ok {y}?", schema=bool)
        factor("f", 0.0 if ok else -1.0)
        return y

    async def async_replica():
        y = sample("y", Categorical([0, 1], probs=[0.5, 0.5]))
        ok = await ask_human("ok", f"ok {y}?", schema=bool)
        factor("f", 0.0 if ok else -1.0)
        return y

    async def program():
        x = sample("x", Categorical([0, 1], probs=[0.5, 0.5]))
        ys = await plate("p", 3, async_replica) if concurrent else plate("p", 3, replica)
        factor("g", 0.5 * x)
        return x, tuple(ys)
    return program


@pytest.mark.parametrize("concurrent", [False, True], ids=["plate", "async_plate"])
def test_questions_inside_plate_replicas(tmp_path, concurrent):
    """Every replica's question is pending (concurrent replicas may all have asked before the pause).
    With concurrent replicas the resumed trace holds the same events as the uninterrupted one but
    may order the replicas' events differently (they ran interleaved before the pause)."""
    program = _plate_program(concurrent)
    policy = policies.SMC(num_particles=30, seed=0, ess_threshold=0.9)
    reference = policy.model_copy(update={"answers": {"ok": False}}).run(program)
    waiting = policy.model_copy(update={"checkpoint": tmp_path}).run(program)
    assert sorted(q.question for q in waiting.pending) == ["ok 0?", "ok 1?"]
    done = policy.resume(waiting.checkpoint, program, answers={"ok": False})
    assert done.status == "finished"
    assert [(p.id, p.value, p.log_weight) for p in done.particles] == \
           [(p.id, p.value, p.log_weight) for p in reference.particles]
    assert done.log_evidence == reference.log_evidence
    for a, b in zip(done.particles, reference.particles):
        if concurrent:
            assert sorted(map(repr, a.trace.events)) == sorted(map(repr, b.trace.events))
        else:
            assert a.trace.events == b.trace.events


def test_two_resumes_of_one_paused_run_at_once_leave_one_run_and_an_intact_directory(tmp_path):
    """Before: both resumes "finished", with different results, and the directory's log then failed
    to load (a bare ValueError: "global trace log entry starts at node 0, the tree has 250 nodes").
    The directory is now held by one run at a time: the second resume is refused before it writes,
    and the directory still resumes to the first one's result."""
    import asyncio

    from swarm.checkpoint import CheckpointError

    paused = policies.SMC(num_particles=20, seed=3, checkpoint=tmp_path).run(asked_program)
    assert paused.status == "waiting"

    async def both():
        policy = policies.SMC(num_particles=20, seed=3)
        return await asyncio.gather(*(policy.resume_async(tmp_path, asked_program, answers={"pick": "b"})
                                      for _ in range(2)), return_exceptions=True)

    first, second = asyncio.run(both())
    assert first.status == "finished"
    assert isinstance(second, CheckpointError) and "another run is writing into this directory" in str(second)
    again = policies.SMC(num_particles=20, seed=3).resume(tmp_path, asked_program, answers={"pick": "b"})
    assert again.log_evidence == first.log_evidence and again.values == first.values  # tolerance 0: same seed


def test_an_answer_the_run_recorded_cannot_be_changed_on_resume(tmp_path):
    """Before: resuming the finished run with {"pick": "c"} returned the result of "b", silently.
    The same answer again, or no answer, resumes as before (the control)."""
    policies.SMC(num_particles=20, seed=3, checkpoint=tmp_path).run(asked_program)
    answered = policies.SMC(num_particles=20, seed=3).resume(tmp_path, asked_program, answers={"pick": "b"})
    with pytest.raises(swarm.InvalidAnswerError, match=r"'pick' was answered 'b' in this run, which went on with "
                                                       r"that answer; it cannot become 'c' on resume"):
        policies.SMC(num_particles=20, seed=3).resume(tmp_path, asked_program, answers={"pick": "c"})
    for same in ({"pick": "b"}, None):
        again = policies.SMC(num_particles=20, seed=3).resume(tmp_path, asked_program, answers=same)
        assert again.log_evidence == answered.log_evidence  # tolerance 0: the recorded run, read back


def test_a_waiting_importance_result_weighs_each_draw_by_its_weight_so_far(tmp_path):
    """The waiting result of Importance: finished draws carry their log weight, waiting ones theirs
    up to the question (not −∞), and log Ẑ is their mean: an estimate up to the pause."""
    async def prog():
        x = sample("x", Categorical([0, 1], probs=[0.5, 0.5]))
        factor("f", -1.0 * x)
        if x == 1:
            await ask_human("ok", "OK?")
        return x

    waiting = policies.Importance(num_particles=40, seed=2, checkpoint=tmp_path).run(prog)
    assert waiting.status == "waiting"
    by_value = {p.value if p.status != "waiting" else "waiting": p.log_weight for p in waiting.particles}
    assert by_value == {0: 0.0, "waiting": -1.0}
    expected = math.log(sum(math.exp(p.log_weight) for p in waiting.particles) / 40)
    assert waiting.log_evidence == pytest.approx(expected, abs=1e-12)
