"""The engine (issue 12): live continuation for every program, the global trace, offspring that never
share state, cost that grows with the work, and the fused engine path equal to the handler stack."""

from __future__ import annotations

import asyncio

import pytest

import policies
from swarm import Bernoulli, Categorical, factor, interact, sample
from swarm.effects import _STACK
from swarm.event_tree import GlobalTrace, MessageChain, PayloadStore
from swarm.execution import SegmentRunner, SegmentTask
from swarm.live import LiveExecutions
from swarm.runtimes import LocalRuntime
from tests.exact_programs import PROGRAMS


# -- offspring never share mutable program state -----------------------------------------------
def mutating_program():
    """A list built up across steps and mutated after every sync point: if two offspring shared
    one live execution (or one list), their histories would interleave."""
    history = []
    for t in range(6):
        x = sample(f"x{t}", Categorical([0, 1, 2], probs=[0.2, 0.5, 0.3]))
        factor(f"f{t}", 0.7 * x)          # uneven weights: resampling at every step duplicates particles
        history.append(x)                  # mutated after the sync point, in the live execution
    return tuple(history)


async def async_mutating_program():
    history = []
    for t in range(6):
        x = sample(f"x{t}", Categorical([0, 1, 2], probs=[0.2, 0.5, 0.3]))
        factor(f"f{t}", 0.7 * x)
        await asyncio.sleep(0)
        history.append(x)
    return tuple(history)


@pytest.mark.parametrize("program", [mutating_program, async_mutating_program], ids=["sync", "async"])
def test_offspring_never_share_mutable_state_under_live_continuation(program):
    result = policies.SMC(num_particles=300, seed=7, ess_threshold=1.0).run(program)
    resampled = sum(s.resampled for s in result.diagnostics.steps)
    assert resampled >= 4
    for p in result.particles:
        drawn = tuple(e.value for e in p.trace.events if e.type == "sample")
        assert p.value == drawn   # each particle's list holds exactly its own trace's draws
    duplicated_ancestry = len({p.parent_id for p in result.particles}) < len(result.particles)
    assert duplicated_ancestry    # offspring of one parent exist, and still their lists differ or agree by their own draws


def test_live_and_replayed_executions_continue_identically():
    """An execution kept alive and one rebuilt by replay from the same events draw the same future
    under the same stream: live continuation changes cost, never results."""
    runner = SegmentRunner(mutating_program, seed=3)
    host = LiveExecutions(runner)
    first = host.advance_sync(1, [SegmentTask(stream=0, stop_at=1)])[0]
    live = host.advance_sync(2, [SegmentTask(stream=5, stop_at=2, continue_from=0, prefix=first.events)])[0]
    assert live.continued
    replayed = runner.run_sync(SegmentTask(stream=5, stop_at=2, prefix=first.events))
    assert not replayed.continued
    assert live.events == replayed.events and live.target_log_weight == replayed.target_log_weight


def test_async_programs_continue_live():
    """Every step after the first continues the kept execution (no replay) when nothing is resampled."""
    runtime = LocalRuntime()
    seen = []

    class Counting(LocalRuntime):
        async def run_segments(self, runner, tasks):
            segments = await super().run_segments(runner, tasks)
            seen.append(sum(s.continued for s in segments))
            return segments

    policies.SMC(num_particles=50, seed=1, ess_threshold=0.0, runtime=Counting()).run(async_mutating_program)
    assert seen[0] == 0 and all(n == 50 for n in seen[1:])
    del runtime


# -- the fused engine path equals the handler stack ------------------------------------------------
@pytest.mark.parametrize("prog", PROGRAMS, ids=[p.name for p in PROGRAMS])
def test_fused_engine_gives_the_handler_stacks_result(prog, monkeypatch):
    fused = policies.SMC(num_particles=200, seed=11, ess_threshold=0.8).run(prog.program, *prog.args, **prog.kwargs)
    monkeypatch.setattr("swarm.execution.Fused", lambda *a: None)   # every statement through the handlers
    stacked = policies.SMC(num_particles=200, seed=11, ess_threshold=0.8).run(prog.program, *prog.args, **prog.kwargs)
    assert fused.log_evidence == stacked.log_evidence
    assert [(p.id, p.value, p.log_weight, p.status) for p in fused.particles] == \
           [(p.id, p.value, p.log_weight, p.status) for p in stacked.particles]
    assert [p.trace.events for p in fused.particles] == [p.trace.events for p in stacked.particles]


def test_fused_path_is_taken_only_under_the_engine_stack():
    taken = []

    def program():
        taken.append(_STACK.get().__dict__.get("fused") is not None)
        x = sample("x", Bernoulli(0.5))
        factor("f", 0.0)
        return x

    policies.SMC(num_particles=3, seed=0).run(program)
    policies.TemperedSMC(num_particles=3, seed=0, rejuvenation_steps=0).run(program)   # a scale handler
    assert taken[:3] == [True] * 3 and not any(taken[3:6])


# -- the global trace ------------------------------------------------------------------------------
def dialogue():
    for t in range(3):
        interact("alice", "bob", f"turn {t}")
        x = sample(f"x{t}", Bernoulli(0.5))
        factor(f"f{t}", 1.5 if x else 0.0)
    return None


def test_resampling_copies_pointers_and_offspring_share_their_ancestors_events():
    result = policies.SMC(num_particles=64, seed=2, ess_threshold=1.0).run(dialogue)
    tree: GlobalTrace = result.global_trace
    assert len(tree) == 64 * 3 * 3   # each particle-step appends its own 3 events; nothing is copied
    leaves = [p.leaf for p in result.particles]
    reachable = set().union(*(tree.nodes(leaf) for leaf in leaves))
    assert len(reachable) < 64 * 9   # the survivors' traces share their ancestors' events
    first_turns = tree.events_at(leaves, step=1)
    shared = {}
    for leaf, events in first_turns.items():
        node = tree.nodes(leaf)[0]
        shared.setdefault(node, []).append(leaf)
        assert [e.type for e in events] == ["interact", "sample", "factor"]
    assert max(len(v) for v in shared.values()) > 1                        # one step-1 message, many survivors
    node, owners = max(shared.items(), key=lambda kv: len(kv[1]))
    assert sorted(tree.sharing(node, leaves)) == sorted(owners)
    for p in result.particles:
        lineage = tree.lineage(p.leaf)
        # the ids that recorded the path: one per step (a final offspring has not recorded yet)
        assert len(lineage) == 3 and lineage[-1] in (p.id, p.parent_id)


def test_prompts_are_stored_once_as_chains():
    store = PayloadStore()
    system = {"role": "system", "content": "You are terse." * 10}
    history = [system]
    chains = []
    for t in range(40):
        history = [*history, {"role": "user", "content": f"question {t}"}]
        chains.append(store.chain([dict(m) for m in history]))   # fresh dicts, as agents build them
    assert chains[-1] == history and isinstance(chains[-1], MessageChain)
    assert chains[-1].prev is chains[-2]                          # the longer prompt points at the shorter
    assert len(store) == 41 + 1   # 41 distinct messages stored once, and the one long string they share
    # A message with an unhashable value (an assistant turn's tool calls) is stored once too, and
    # the same content in another key order is the same message.
    call = {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "name": "add", "arguments": "{}"}]}
    first = store.chain([system, call])
    again = store.chain([dict(system), {"tool_calls": [dict(call["tool_calls"][0])], "content": "", "role": "assistant"}])
    assert again is first and first == [system, call] and len(store) == 43


def test_a_store_and_its_interned_events_pickle_and_keep_interning():
    """Interned metadata are key-sharing dicts of run-time holder classes: a result that holds them
    (checkpoints, Ray, `pickle.dumps(result)`) must still pickle, and the copy must go on interning."""
    import pickle

    store = PayloadStore()
    info = store.intern_info({"prompt": [{"role": "user", "content": "hi " * 40}], "usage": {"input_tokens": 3},
                              "text": "answer " * 20})
    copy_store, copy_info = pickle.loads(pickle.dumps((store, info)))
    assert copy_info == info and type(copy_info) is dict
    again = copy_store.intern_info({"usage": {"input_tokens": 4}, "text": "answer " * 20})
    assert again["text"] is copy_store.string("answer " * 20) and again["usage"] == {"input_tokens": 4}


def test_interned_metadata_keep_one_key_table_for_every_generation():
    """The memory win of `intern_info` (bench/soak.py's peak RSS): every generation's metadata has the
    same keys, stored once in a split table (PEP 412), not once per event. A plain copy of the same
    22 entries is a combined table of about 3x the size (CPython 3.11: 280 vs 832 bytes), so the
    bound below, half the combined size, fails if interning ever builds combined dicts (e.g. with
    `dict.update`, which converts a split table)."""
    import sys

    store = PayloadStore()
    raw = {f"field{i}": i for i in range(21)} | {"usage": {"input_tokens": 3, "output_tokens": 2}}
    infos = [store.intern_info(dict(raw)) for _ in range(3)]
    assert infos[-1] == raw and list(infos[-1]) == list(raw)
    assert sys.getsizeof(infos[-1]) < sys.getsizeof(dict(raw)) / 2


# -- cost grows with the work -----------------------------------------------------------------
@pytest.mark.parametrize("program", [mutating_program, async_mutating_program], ids=["sync", "async"])
def test_only_the_second_and_later_offspring_of_a_parent_are_replayed(program):
    """Live continuation, counted: at every step a particle continues its kept execution unless it is
    the second or later offspring of its parent at the last resampling (then it is replayed). So the
    statements executed grow as N·T plus the duplicates' prefixes, never as N·T² (every particle
    replaying its past each step, as async programs did before)."""
    replayed_per_step = []

    class Counting(LocalRuntime):
        async def run_segments(self, runner, tasks):
            segments = await super().run_segments(runner, tasks)
            replayed_per_step.append(sum(not s.continued for s in segments))
            return segments

    result = policies.SMC(num_particles=200, seed=5, ess_threshold=1.0, runtime=Counting()).run(program)
    genealogy = result.diagnostics.genealogy
    duplicates = [len(anc) - len(set(anc)) for anc in genealogy]
    assert replayed_per_step[0] == 200                            # the first step starts every execution
    assert replayed_per_step[1:] == duplicates[:len(replayed_per_step) - 1]
    assert 0 < sum(duplicates) < 200 * len(genealogy) / 2
