"""Checkpoint and resume (`swarm.checkpoint`, `SMC(checkpoint=...)`, `SMC.resume`): a run resumed
from any step equals the uninterrupted run, a driver SIGKILLed mid-run resumes without repeating a
completed LLM call, torn files are detected, and a full disk leaves the previous checkpoint intact."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import policies
from agents.cache import CacheJournalError, ResponseCache
from agents.backends.base import Completion
from swarm.checkpoint import Checkpointer, CheckpointError, read_checkpoint, write_atomic
from swarm.runtimes import LocalRuntime
from tests import checkpoint_driver
from tests.exact_programs import BY_NAME

REPO = Path(__file__).resolve().parents[1]


class SimulatedCrash(BaseException):
    """Stands for the driver dying: not an Exception, so nothing in the run catches it."""


class CrashingRuntime(LocalRuntime):
    """A local runtime that dies when asked to run its `crash_at`-th step."""

    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.crash_at = crash_at
        self.steps = 0

    async def run_segments(self, runner, tasks):
        self.steps += 1
        if self.steps == self.crash_at:
            raise SimulatedCrash(f"step {self.steps}")
        return await super().run_segments(runner, tasks)


def run(policy, prog):
    return policy.run(prog.program, *prog.args, **prog.kwargs)


def resume(policy, directory, prog):
    return policy.resume(directory, prog.program, *prog.args, **prog.kwargs)


def assert_same(a, b, *, timing_free: bool = True):
    """Same population: evidence, ids, values, weights, statuses, parents, traces, steps, genealogy."""
    assert a.log_evidence == b.log_evidence
    assert [(p.id, p.value, p.log_weight, p.status, p.parent_id) for p in a.particles] == \
           [(p.id, p.value, p.log_weight, p.status, p.parent_id) for p in b.particles]
    if timing_free:
        assert [p.trace.events for p in a.particles] == [p.trace.events for p in b.particles]
    assert a.diagnostics.steps == b.diagnostics.steps
    assert a.diagnostics.genealogy == b.diagnostics.genealogy
    assert (a.diagnostics.deaths, a.diagnostics.llm_calls, a.diagnostics.tokens) == \
           (b.diagnostics.deaths, b.diagnostics.llm_calls, b.diagnostics.tokens)


# -- resume equals the uninterrupted run ---------------------------------------------------------
@pytest.mark.parametrize("name,crash_at", [("hmm", 2), ("hmm", 4), ("async_program", 2), ("plate_vote", 2),
                                           ("needle_guarantees", 2), ("shaped", 2)])
def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, name, crash_at):
    prog = BY_NAME[name]
    policy = policies.SMC(num_particles=300, seed=9, ess_threshold=0.7)
    reference = run(policy, prog)
    if len(reference.diagnostics.steps) < crash_at:
        pytest.skip(f"{name} has fewer than {crash_at} steps")
    with pytest.raises(SimulatedCrash):
        run(policy.model_copy(update={"checkpoint": tmp_path, "runtime": CrashingRuntime(crash_at)}), prog)
    assert read_checkpoint(tmp_path / "population.ckpt").step == crash_at - 1
    assert_same(resume(policy, tmp_path, prog), reference)


def test_resume_keeps_checkpointing_and_a_finished_run_resumes_to_itself(tmp_path):
    prog = BY_NAME["hmm"]
    policy = policies.SMC(num_particles=200, seed=4)
    with pytest.raises(SimulatedCrash):
        run(policy.model_copy(update={"checkpoint": tmp_path, "runtime": CrashingRuntime(3)}), prog)
    first = resume(policy, tmp_path, prog)
    final = read_checkpoint(tmp_path / "population.ckpt")
    assert final.step == len(first.diagnostics.steps)  # resumed runs write checkpoints too
    assert_same(resume(policy, tmp_path, prog), first)  # nothing left to run: the same result
    assert_same(first, run(policy, prog))


def _raw_frames(path):
    """(frame header, unpickled payload) of every frame as written, read by the reader's own frame
    parser (`swarm.checkpoint._frame_at`) but before `decode_log` rebuilds the step records."""
    import pickle

    from swarm.checkpoint import _frame_at

    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        head, payload, pos = _frame_at(path, data, pos)
        out.append((head, pickle.loads(payload)))
    return out


def test_a_frame_holds_only_the_step_records_since_the_previous_one(tmp_path):
    """Format 3: a run checkpointed at every step writes each step record once (format 2 wrote the
    whole list in every frame: T²/2 records); read back, every frame has the run's list so far."""
    prog = BY_NAME["hmm"]
    result = run(policies.SMC(num_particles=50, seed=3, checkpoint=tmp_path), prog)
    steps = result.diagnostics.steps
    raw = [(head, frame) for head, frame in _raw_frames(tmp_path / "population.ckpt") if head.kind == "step"]
    assert len(raw) == len(steps) >= 3 and all(h.format == "plp-swarm-checkpoint/3" for h, _ in raw)
    assert [frame.steps_from for _, frame in raw] == list(range(len(steps)))
    assert [len(frame.diagnostics.steps) for _, frame in raw] == [1] * len(steps)
    loaded = read_checkpoint(tmp_path / "population.ckpt")
    assert [f.diagnostics.steps for f in loaded.frames] == [steps[:k + 1] for k in range(len(steps))]


def test_a_format_2_log_is_read_and_resumed(tmp_path):
    """A log written by format 2 (every frame with the whole list of step records) still loads, and
    a run resumed from it appends format-3 frames and equals the uninterrupted run."""
    import json

    from swarm.checkpoint import MAGIC, encode_frame

    prog = BY_NAME["hmm"]
    policy = policies.SMC(num_particles=200, seed=4)
    with pytest.raises(SimulatedCrash):
        run(policy.model_copy(update={"checkpoint": tmp_path, "runtime": CrashingRuntime(4)}), prog)
    path = tmp_path / "population.ckpt"
    cumulative, old = [], b""
    for head, obj in _raw_frames(path):
        if head.kind == "step":
            cumulative = cumulative[:obj.steps_from] + obj.diagnostics.steps
            obj.diagnostics.steps = list(cumulative)
            del obj.__dict__["steps_from"]  # the field format 2 did not have
        frame = encode_frame(head.kind, head.step, obj)
        header, payload = frame.split(b"\n", 1)
        fields = json.loads(header[len(MAGIC) + 1:])
        old += MAGIC + b" " + json.dumps({**fields, "format": "plp-swarm-checkpoint/2"}).encode() + b"\n" + payload
    path.write_bytes(old)
    loaded = read_checkpoint(path)
    assert [len(f.diagnostics.steps) for f in loaded.frames] == [1, 2, 3]
    resumed = resume(policy, tmp_path, prog)
    assert_same(resumed, run(policy, prog))
    formats = [h.format for h, _ in _raw_frames(path)]
    assert formats[:4] == ["plp-swarm-checkpoint/2"] * 4 and set(formats[4:]) == {"plp-swarm-checkpoint/3"}
    assert read_checkpoint(path).last.diagnostics.steps == resumed.diagnostics.steps


def test_unseeded_run_resumes_with_its_own_seed(tmp_path):
    prog = BY_NAME["chain3"]
    with pytest.raises(SimulatedCrash):
        run(policies.SMC(num_particles=100, checkpoint=tmp_path, runtime=CrashingRuntime(2)), prog)
    seed = read_checkpoint(tmp_path / "population.ckpt").seed
    assert_same(resume(policies.SMC(num_particles=100), tmp_path, prog),
                run(policies.SMC(num_particles=100, seed=seed), prog))


def test_resume_refuses_other_settings_or_programs(tmp_path):
    prog = BY_NAME["hmm"]
    run(policies.SMC(num_particles=50, seed=1, checkpoint=tmp_path), prog)
    with pytest.raises(CheckpointError, match="num_particles: the checkpoint's run used 50"):
        resume(policies.SMC(num_particles=60), tmp_path, prog)
    with pytest.raises(CheckpointError, match="resampling"):
        resume(policies.SMC(num_particles=50, resampling="multinomial"), tmp_path, prog)
    with pytest.raises(CheckpointError, match="seed: the checkpoint's run used seed 1"):
        resume(policies.SMC(num_particles=50, seed=2), tmp_path, prog)
    with pytest.raises(CheckpointError, match="program: the checkpoint's run ran 'hmm', not 'chain3'"):
        resume(policies.SMC(num_particles=50), tmp_path, BY_NAME["chain3"])
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        resume(policies.SMC(num_particles=50), tmp_path / "missing", prog)


# -- the driver process killed ------------------------------------------------------------------
def _kill_mid_step(proc: subprocess.Popen, directory: Path, counter: Path, min_step: int = 2,
                   timeout_s: float = 60.0) -> None:
    """SIGKILL the driver once checkpoint `min_step` (or later) is on disk and some, not all, of the
    next step's calls have completed (the driver's 24 particles make one call each per step)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the driver exited ({proc.returncode}) before it could be killed mid-step: "
                        f"{proc.stderr.read().decode()[-2000:]}")
        step = Checkpointer(directory).describe()["step"]
        if step is not None and step >= min_step:
            done = sum(1 for line in _lines(counter) if f"|step {step} after" in line)
            if 0 < done < 24:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
        time.sleep(0.002)
    proc.kill()
    pytest.fail(f"the driver never stood mid-step after checkpoint {min_step} within {timeout_s} s")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sigkilled_driver_resumes_to_the_uninterrupted_result_without_repeating_a_call(tmp_path):
    ckpt, counter = tmp_path / "ckpt", tmp_path / "calls.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.checkpoint_driver", str(ckpt), str(counter)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _kill_mid_step(proc, ckpt, counter)  # the next step's fastest calls done, the slow ones in flight
    state = read_checkpoint(ckpt / "population.ckpt")
    assert 2 <= state.step < checkpoint_driver.ROUNDS, "the driver must die mid-run"
    before = _lines(counter)
    after_checkpoint = [line for line in before if f"|step {state.step} after" in line]
    assert after_checkpoint, "the kill must land after some calls of the next step completed"
    # A call counts itself just before its response reaches the driver's journal: a kill in between
    # (a few microseconds) loses that one response, which must then be made again, and only that.
    unjournaled = len(before) - len(_lines(ckpt / "responses.jsonl"))
    assert unjournaled in (0, 1)

    program = checkpoint_driver.make_program(str(counter))
    resumed = checkpoint_driver.make_policy().resume(ckpt, program, checkpoint_driver.ROUNDS)
    calls = _lines(counter)
    assert len(calls) - len(set(calls)) == unjournaled, "a completed call was made again"

    reference_counter = tmp_path / "reference_calls.txt"
    reference = checkpoint_driver.make_policy().run(checkpoint_driver.make_program(str(reference_counter)),
                                                    checkpoint_driver.ROUNDS)
    assert sorted(set(calls)) == sorted(_lines(reference_counter))  # the same calls as the uninterrupted run
    assert_same(resumed, reference, timing_free=False)
    strip = lambda r: [[(e.address, getattr(e, "value", None), getattr(e, "content", None)) for e in p.trace.events]  # noqa: E731
                       for p in r.particles]
    assert strip(resumed) == strip(reference)


# -- torn and failed writes ---------------------------------------------------------------------
@pytest.fixture
def checkpoint_file(tmp_path) -> Path:
    run(policies.SMC(num_particles=50, seed=1, checkpoint=tmp_path), BY_NAME["hmm"])
    return tmp_path / "population.ckpt"


def test_torn_or_corrupt_checkpoint_is_detected(checkpoint_file):
    """The log is append-only: a last frame cut short (the driver killed mid-append) is ignored and
    the previous step is what the log holds; damage anywhere else is an error, never half-read."""
    data = checkpoint_file.read_bytes()
    last = read_checkpoint(checkpoint_file).step
    checkpoint_file.write_bytes(data[:-100])
    torn = read_checkpoint(checkpoint_file)
    assert torn.step == last - 1 and torn.valid_bytes < len(data) - 100
    checkpoint_file.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="corrupt checkpoint: the payload's sha256"):
        read_checkpoint(checkpoint_file)
    checkpoint_file.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="not a plp-swarm checkpoint"):
        read_checkpoint(checkpoint_file)
    checkpoint_file.write_bytes(data)
    assert read_checkpoint(checkpoint_file).step >= 1


def test_full_disk_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    prog = BY_NAME["hmm"]
    policy = policies.SMC(num_particles=100, seed=3)
    real_write, writes = os.write, []

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("population.ckpt"):
            writes.append(fd)
            if len(writes) == 4:   # the run's header frame, steps 1 and 2, then step 3 fails half-written
                real_write(fd, bytes(data)[:len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(CheckpointError, match=r"population.ckpt: could not write the checkpoint of step 3: "
                                              r"No space left on device \(the disk is full\); the previous "
                                              "checkpoint is intact"):
        run(policy.model_copy(update={"checkpoint": tmp_path}), prog)
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "population.ckpt").step == 2
    assert not (tmp_path / "population.ckpt.tmp").exists()
    assert_same(resume(policy, tmp_path, prog), run(policy, prog))


def test_full_tmpfs_leaves_the_previous_checkpoint_intact(tmp_path):
    """A real ENOSPC: a tmpfs large enough for the log of step 1 but not for step 2's frame."""
    prog = BY_NAME["hmm"]
    policy = policies.SMC(num_particles=300, seed=3, ess_threshold=0.0)
    sizes = []
    for steps in (1, 2):
        probe = tmp_path / f"probe{steps}"
        run(policy.model_copy(update={"checkpoint": probe, "max_steps": steps}), prog)
        sizes.append((probe / "population.ckpt").stat().st_size)
    pages = -(-sizes[0] // 4096)  # the step-1 log fits; the step-2 frame does not
    assert pages * 4096 < sizes[1], "step 2's frame is smaller than the page slack: raise N"
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={pages * 4096}", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with pytest.raises(CheckpointError, match=r"step 2: No space left on device \(the disk is full\); the previous"):
            run(policy.model_copy(update={"checkpoint": mount}), prog)
        assert read_checkpoint(mount / "population.ckpt").step == 1
        assert not (mount / "population.ckpt.tmp").exists()
        saved = tmp_path / "saved"
        shutil.copytree(mount, saved)
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert_same(resume(policy, saved, prog), run(policy, prog))


def test_unpicklable_values_give_a_clear_error(tmp_path):
    from swarm import Bernoulli, factor, sample

    def program():
        x = sample("x", Bernoulli(0.5))
        factor("f", 0.0)
        return lambda: x

    with pytest.raises(CheckpointError, match="cannot be pickled .* must be picklable to checkpoint a run"):
        policies.SMC(num_particles=5, seed=0, checkpoint=tmp_path).run(program)


def test_write_atomic_failure_on_replace_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f"
    write_atomic(target, b"old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(CheckpointError, match="I/O error; the previous checkpoint is intact"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old" and not (tmp_path / "f.tmp").exists()


# -- the response journal ------------------------------------------------------------------------
def test_journal_reloads_completed_calls_and_ignores_a_torn_tail(tmp_path):
    import asyncio

    journal = tmp_path / "responses.jsonl"
    cache = ResponseCache(journal=journal)

    async def fill():
        for i in range(3):
            async def call(i=i):
                return Completion(text=f"r{i}", token_logprobs=[-float("inf") if i == 2 else -1.0])
            await cache.get_or_call(f"k{i}", call)

    asyncio.run(fill())
    cache.close()
    with open(journal, "a") as fh:
        fh.write('{"key": "k3", "completion": {"te')  # a writer killed mid-line
    again = ResponseCache(journal=journal)
    assert again.loaded == 3 and len(again) == 3
    assert again._loaded["k2"].token_logprobs == [-float("inf")]
    journal.write_text('{"key": "k0"}\n')
    with pytest.raises(CacheJournalError, match="line 1"):
        ResponseCache(journal=journal)


def test_a_journaled_completion_reads_back_equal_with_its_nested_models(tmp_path):
    """The journal encodes a completion's fields directly (not through model_dump): every field,
    nested models (usage, tool calls) and -inf included, must read back equal."""
    import asyncio

    from agents.backends.base import ToolCall, Usage

    full = Completion(text=" a b", tokens=[" a", " b"], token_logprobs=[-0.5, -float("inf")],
                      base_token_logprobs=[-0.25, -1.5], finish_reason="tool_calls", usage=Usage(input_tokens=7, output_tokens=2),
                      latency_s=0.01, model="m", backend="b", tool_calls=[ToolCall(id="c1", name="add", arguments='{"a": 1}')],
                      served_by={"replica": 3})
    cache = ResponseCache(journal=tmp_path / "responses.jsonl")

    async def call():
        return full

    asyncio.run(cache.get_or_call("k", call))
    cache.close()
    assert ResponseCache(journal=tmp_path / "responses.jsonl")._loaded["k"] == full


def test_concurrent_identical_requests_make_one_call_and_share_its_outcome(tmp_path):
    """Callers of a request already in flight wait for its completion (one backend call, one journal
    line), and share its failure; after a failure the next caller calls again."""
    import asyncio

    cache = ResponseCache(journal=tmp_path / "responses.jsonl")
    calls = []

    async def call(fail=False):
        calls.append(fail)
        await asyncio.sleep(0.01)
        if fail:
            raise ConnectionError("down")
        return Completion(text="once")

    async def main():
        same = await asyncio.gather(*(cache.get_or_call("k", call) for _ in range(5)))
        failed = await asyncio.gather(*(cache.get_or_call("bad", lambda: call(True)) for _ in range(3)),
                                      return_exceptions=True)
        return same, failed, await cache.get_or_call("bad", call)

    same, failed, retried = asyncio.run(main())
    cache.close()
    assert [c.text for c in same] == ["once"] * 5 and all(c is same[0] for c in same)
    assert all(isinstance(e, ConnectionError) for e in failed) and retried.text == "once"
    assert calls == [False, True, False] and (cache.hits, cache.misses) == (6, 3)
    assert len((tmp_path / "responses.jsonl").read_text().splitlines()) == 2


def test_journal_write_failure_is_a_clear_error(tmp_path, monkeypatch):
    import asyncio

    cache = ResponseCache(journal=tmp_path / "responses.jsonl")

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)

    async def one():
        async def call():
            return Completion(text="x")
        await cache.get_or_call("k", call)

    with pytest.raises(CacheJournalError, match="responses.jsonl: could not record a completed call: No space left"):
        asyncio.run(one())


def test_a_run_stopped_by_its_budget_resumes_to_the_same_result_or_goes_on_with_a_larger_one(tmp_path):
    from policies.base import Budget

    program = checkpoint_driver.make_program(str(tmp_path / "calls.txt"))
    policy = checkpoint_driver.make_policy().model_copy(update={"budget": Budget(max_llm_calls=60)})
    stopped = policy.model_copy(update={"checkpoint": tmp_path / "ckpt", "checkpoint_every": 2}).run(
        program, checkpoint_driver.ROUNDS)  # the stop at step 3 is written although 3 is not a multiple of 2
    assert stopped.diagnostics.stopped_by == "max_llm_calls" and len(stopped.diagnostics.steps) == 3
    again = policy.resume(tmp_path / "ckpt", program, checkpoint_driver.ROUNDS)
    assert_same(again, stopped, timing_free=False)
    assert again.diagnostics.stopped_by == "max_llm_calls"
    more = policy.model_copy(update={"budget": Budget(max_llm_calls=100)}).resume(
        tmp_path / "ckpt", program, checkpoint_driver.ROUNDS)
    assert len(more.diagnostics.steps) == 5 and more.diagnostics.llm_calls == 5 * 24
