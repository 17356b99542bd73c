"""Agents hosted on Ray actors (`agents.ray_hosting`) against local agents: same seed, same result;
a constant number of actors as the population grows; backpressure; an actor killed mid-run.

One local Ray instance (2 CPUs, 127.0.0.1) serves the module. The backends are the TEST DOUBLES of
`tests.fake_backends` (seed-driven text, no model), so results can be compared exactly.
"""

from __future__ import annotations

import asyncio
import time

import pytest

ray = pytest.importorskip("ray")

import policies  # noqa: E402
import swarm  # noqa: E402
from agents import Agent  # noqa: E402
from agents.agent_actor import AgentCall, child_span, trace_carrier  # noqa: E402
from agents.backends.base import ChatMessage, GenerationRequest  # noqa: E402
from agents.ray_hosting import (  # noqa: E402
    AgentHostingError,
    RayHosting,
    hosted_actor_names,
    pool_for,
    ray_client_for,
    shutdown_agent_pools,
)
from agents.tools import ToolExecution, tool  # noqa: E402
from swarm import factor, interact, sample  # noqa: E402
from swarm.ray_runtime import RayRuntime  # noqa: E402
from tests.fake_backends import Critic, FailsOnSomeSeeds, SeededEcho  # noqa: E402
from tests.ray_fixtures import local_ray  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    """One local Ray instance for the module, shut down after it."""
    with local_ray(num_cpus=2):
        yield
        shutdown_agent_pools()


@pytest.fixture(autouse=True)
def fresh_pools():
    """Every test starts without agent actors (killed ones gone from the actor table) and leaves none."""
    shutdown_agent_pools()
    deadline = time.monotonic() + 30
    while agent_actor_count() and time.monotonic() < deadline:
        time.sleep(0.1)
    yield
    shutdown_agent_pools()


# -- a team of three roles: proposer (agent), verifier (tool), critic (agent, a factor) -------------
@tool
def verify(text: str) -> str:
    """The verifier: accepts an idea whose number is even."""
    digits = [c for c in text if c.isdigit()]
    return "ok" if digits and int(digits[-1]) % 2 == 0 else "rejected"


def make_team(hosting, *, latency_s: float = 0.0, tag: str = "", critic_hosting=None):
    """The team's program, closed over its two agents (hosted as `hosting` says)."""
    proposer = Agent(name=f"proposer{tag}", system="Propose.", backend=SeededEcho(latency_s=latency_s), hosting=hosting)
    critic = Agent(name=f"critic{tag}", system="Score 0-9.", backend=Critic(latency_s=latency_s),
                   hosting=critic_hosting or hosting)

    async def team(rounds: int):
        idea = ""
        for t in range(rounds):
            idea = await proposer.ask(f"round {t}: improve {idea!r}", name=f"propose{t}")
            verdict = await sample(f"verify{t}", ToolExecution(verify, "verify", {"text": idea}))
            interact("verifier", proposer.name, verdict, kind="tool_result", name=f"verdict{t}")
            score = await critic.ask(f"{idea} ({verdict})", name=f"critique{t}", sender=proposer.name)
            factor(f"score{t}", int(score) / 3.0 - (0.5 if verdict != "ok" else 0.0))
        return idea

    return team, proposer, critic


def summary(result):
    """A result without wall-clock metadata: ids, values, weights, lineage, and every event's content."""
    def event(e):
        if e.type == "sample":
            return (e.address, e.value, e.log_prob, e.target_log_prob, e.dist)
        if e.type == "interact":
            return (e.address, e.sender, e.receiver, e.content, e.kind)
        return tuple(getattr(e, f) for f in ("address", "type"))

    return (result.log_evidence, [(p.id, p.value, p.log_weight, p.status, p.parent_id, [event(e) for e in p.trace.events])
                                  for p in result.particles],
            result.diagnostics.genealogy, [s.model_dump() for s in result.diagnostics.steps])


def served_by(result):
    return [e.info["served_by"] for p in result.particles for e in p.trace.events
            if e.type == "sample" and "served_by" in e.info]


def agent_actor_count() -> int:
    from ray._private.state import actors

    return sum(1 for a in actors(actor_state_name="ALIVE").values() if a.get("ActorClassName", "").endswith("AgentActor"))


# -- parity ------------------------------------------------------------------------------------
def test_three_role_team_on_ray_equals_local():
    team_local, *_ = make_team("local")
    local = policies.SMC(num_particles=60, seed=11, runtime="local").run(team_local, 3)
    team_ray, *_ = make_team(RayHosting(replicas=2, max_concurrency=4))
    rt = RayRuntime(num_workers=2)
    try:
        remote = policies.SMC(num_particles=60, seed=11, runtime=rt).run(team_ray, 3)
    finally:
        asyncio.run(rt.aclose())
    assert summary(remote) == summary(local)
    assert any(s.resampled for s in local.diagnostics.steps)  # the comparison covers resampled offspring
    where = served_by(remote)
    assert len(where) == sum(1 for p in remote.particles for e in p.trace.events if e.type == "sample"
                             and e.dist.startswith("Generation"))  # every generation names its actor
    assert {w["role"] for w in where} == {"proposer", "critic"}
    assert {w["replica"] for w in where} == {0, 1}  # both replicas of each pool served
    assert not served_by(local)  # a local call records no actor


def test_local_runtime_with_ray_agents_equals_local():
    team_local, *_ = make_team("local")
    team_ray, *_ = make_team("ray")
    a = policies.SMC(num_particles=40, seed=5).run(team_local, 2)
    b = policies.SMC(num_particles=40, seed=5).run(team_ray, 2)
    assert summary(a) == summary(b)
    # every generation in the final traces was served by an actor that names the role that asked
    where = served_by(b)
    generations = [e for p in b.particles for e in p.trace.events if e.type == "sample" and "agent" in e.info]
    assert len(where) == len(generations) >= 2 * 2 * 40   # two agents, two rounds, 40 histories: never empty
    assert all(e.info["served_by"]["role"] == e.info["agent"] for e in generations)
    assert {w["role"] for w in where} == {"proposer", "critic"}


# -- one pool per role, whatever the population ----------------------------------------------------
def test_actor_count_is_constant_as_particles_grow():
    team, *_ = make_team(RayHosting(replicas=2, max_concurrency=16))
    counts = {}
    for n in (10, 100, 1000):
        result = policies.SMC(num_particles=n, seed=n).run(team, 1)
        assert len(result.particles) == n
        counts[n] = (agent_actor_count(), len(hosted_actor_names()))
    assert counts == {10: (4, 4), 100: (4, 4), 1000: (4, 4)}  # 2 roles × 2 replicas


# -- backpressure ------------------------------------------------------------------------------
def test_in_flight_requests_never_exceed_the_agent_concurrency_limit():
    hosting = RayHosting(replicas=2, max_concurrency=3)
    slow = Agent(name="slow", backend=SeededEcho(latency_s=0.02), hosting=hosting)

    async def one_call():
        text = await sample("draft", slow.generate("go"))
        factor("len", -len(text) / 10)
        return text

    result = policies.SMC(num_particles=1000, seed=3).run(one_call)
    assert len(result.particles) == 1000
    pool = pool_for(slow)
    assert pool.max_outstanding == hosting.concurrency_limit  # the limit was reached, never passed
    stats = asyncio.run(pool.stats())
    assert sum(s["served"] for s in stats) == 1000
    assert max(s["max_in_flight"] for s in stats) == hosting.max_concurrency
    assert all(s["max_in_flight"] <= hosting.max_concurrency for s in stats)
    assert min(s["served"] for s in stats) > 300  # requests balanced over the replicas


# -- faults ------------------------------------------------------------------------------------
def test_killed_agent_actor_is_restarted_and_the_seeded_result_is_unchanged():
    hosting = RayHosting(replicas=2, max_concurrency=8)
    team, proposer, critic = make_team(hosting, latency_s=0.05, tag="_k")
    policy = policies.SMC(num_particles=40, seed=21)
    reference = policy.run(team, 4)

    async def run_with_a_kill():
        task = asyncio.ensure_future(policy.run_async(team, 4))
        pool = pool_for(critic)
        while sum(s["served"] for s in await pool.stats()) < 40:  # mid-run: some calls served
            await asyncio.sleep(0.05)
        ray.kill(pool.handles[0], no_restart=False)
        return await task

    shutdown_agent_pools()  # fresh actors: the served counters below start at zero
    faulty = asyncio.run(run_with_a_kill())
    assert summary(faulty) == summary(reference)
    pids = {w["pid"] for w in served_by(faulty) if w["role"] == "critic_k" and w["replica"] == 0}
    assert len(pids) == 2  # replica 0 served calls before the kill and, restarted, after it


def test_backend_error_reaches_the_program_as_itself():
    from agents.backends.base import BackendError
    from agents.backends.scripted import Scripted

    broken = Agent(name="broken", backend=Scripted(["x"], fail_times=10**6), hosting="ray")

    async def program():
        return await sample("x", broken.generate("hi"))

    # a backend error is a lost particle, not a dead one: every particle lost stops the run, naming it
    with pytest.raises(swarm.BackendUnavailable, match=f"3 of 3 particles.*{BackendError.__name__} after <program start>"):
        policies.SMC(num_particles=3, seed=0).run(program)


def test_batched_requests_fail_one_by_one_and_match_local():
    def program_for(hosting):
        agent = Agent(name="flaky", backend=FailsOnSomeSeeds(every=3), hosting=hosting)

        async def program():
            text = await sample("x", agent.generate("hi"))
            factor("f", -int(text.split()[-1]) / 5)
            return text

        return agent, program

    _, local_program = program_for("local")
    agent, ray_program = program_for(RayHosting(max_concurrency=16))
    local = policies.SMC(num_particles=200, seed=2, ess_threshold=0.0, max_lost_fraction=0.5).run(local_program)
    remote = policies.SMC(num_particles=200, seed=2, ess_threshold=0.0, max_lost_fraction=0.5).run(ray_program)
    assert summary(remote) == summary(local)
    statuses = [p.status for p in remote.particles]
    assert 0 < statuses.count("lost") < 200  # one request's error does not lose its batch
    pool = pool_for(agent)
    assert pool.calls == statuses.count("finished")
    assert pool.batches <= 200 / 8, pool.batches  # 200 requests travelled in batches of up to 16


def test_unplaceable_pool_fails_with_a_clear_error():
    agent = Agent(name="gpu_hungry", backend=SeededEcho(),
                  hosting=RayHosting(num_gpus=1, ready_timeout_s=2, call_retries=0))

    async def program():
        return await sample("x", agent.generate("hi"))

    with pytest.raises(AgentHostingError, match="gpu_hungry.*num_gpus=1.*not placed within 2 s"):
        policies.SMC(num_particles=2, seed=0).run(program)


# -- roles sharing a pool, and the run's trace context in the actors (issue 11, defect c) ---------
def three_roles_on_one_pool():
    """A debate-like program: three roles whose requests go to one shared pool of actors."""
    shared = RayHosting(name="shared", replicas=2, max_concurrency=4)
    alice, bob, judge = (Agent(name=n, system=f"You are {n}.", backend=SeededEcho(), hosting=shared)
                         for n in ("alice", "bob", "judge"))

    async def debate(rounds: int):
        verdict = ""
        for t in range(rounds):
            a = await alice.ask(f"round {t}: argue {verdict!r}", name=f"alice{t}")
            b = await bob.ask(f"counter {a!r}", name=f"bob{t}", sender=alice.name)
            verdict = await judge.ask(f"{a} vs {b}", name=f"judge{t}", sender=bob.name)
            factor(f"verdict{t}", -int(verdict.split()[-1]) / 5)
        return verdict

    return debate


class StepRecords(swarm.RunListener):
    """Keeps the raw records (what the span builder reads), to compare with what the actors saw."""

    def __init__(self) -> None:
        self.generations = []

    def on_step(self, record) -> None:
        self.generations += [e for p in record.particles for e in p.new_events
                             if e.type == "sample" and "agent" in e.info]


def test_roles_sharing_a_pool_are_named_by_the_calling_agent():
    records = StepRecords()
    policies.SMC(num_particles=12, seed=4, listeners=[records]).run(three_roles_on_one_pool(), 2)
    assert len(hosted_actor_names()) == 2   # one pool (two replicas) served the three roles
    calls = records.generations
    assert len(calls) == 3 * 2 * 12        # every call of every particle, live (none replayed)
    assert all(e.info["served_by"]["role"] == e.info["agent"] for e in calls)
    assert {e.info["served_by"]["role"] for e in calls} == {"alice", "bob", "judge"}


def assert_actors_joined_the_llm_spans(inst, records) -> None:
    """Every call's actor joined the run's trace under the `chat` span built for that call."""
    spans = inst.memory_exporter.get_finished_spans()
    (run,) = [s for s in spans if s.name.startswith("plp.run")]
    trace_id = format(run.context.trace_id, "032x")
    joined = [e.info["served_by"] for e in records.generations]
    assert len(joined) == 3 * 2 * 12 and all(w.get("trace_id") == trace_id for w in joined)
    chat = {format(s.context.span_id, "016x"): s for s in spans if s.name.startswith("chat")}
    assert sorted(w["parent_span_id"] for w in joined) == sorted(chat)   # one LLM span per call, same ids
    by_id = {s.context.span_id: s for s in spans}
    for w in joined:   # each actor-joined span is the LLM span of a particle step of this run
        llm = chat[w["parent_span_id"]]
        assert by_id[llm.parent.span_id].name.startswith("plp.particle ")
        assert llm.context.trace_id == run.context.trace_id


def test_an_instrumented_run_carries_its_trace_context_to_the_actors():
    """No span is opened by hand: the listener makes the run's context current while it goes on,
    every call tells its actor the span id of its own LLM span, and the listener builds the
    `chat` span of that call with the id the actor reports."""
    from observability.exporters import instrument

    inst, records = instrument("memory", register=False), StepRecords()
    try:
        policies.SMC(num_particles=12, seed=4, listeners=[inst.listener, records]).run(three_roles_on_one_pool(), 2)
    finally:
        inst.shutdown()
    assert_actors_joined_the_llm_spans(inst, records)
    assert not trace_carrier()   # the run's context is gone once it has ended


def run_on_segment_workers(hook: bool):
    """The three-role program on Ray segment workers, instrumented; with `hook`, the core hook this
    needs is simulated: the runner gets the listeners' `segment_handlers` (observability.otel)."""
    from observability.exporters import instrument
    from policies.base import RunContext

    inst, records = instrument("memory", register=False), StepRecords()
    original = RunContext.runner

    def runner_with_listener_handlers(self, *args, **kwargs):
        runner = original(self, *args, **kwargs)
        for listener in self.broadcaster.listeners:
            factory = getattr(listener, "segment_handlers", lambda *_: None)(self.run_id, runner.extra_handlers)
            runner.extra_handlers = factory or runner.extra_handlers
        return runner

    rt = RayRuntime(num_workers=2)
    try:
        if hook:
            RunContext.runner = runner_with_listener_handlers
        policies.SMC(num_particles=12, seed=4, runtime=rt, listeners=[inst.listener, records]).run(
            three_roles_on_one_pool(), 2)
    finally:
        RunContext.runner = original
        asyncio.run(rt.aclose())
        inst.shutdown()
    return inst, records


def test_an_instrumented_run_on_segment_workers_carries_its_trace_context_to_the_actors():
    """No hook: the listener puts the run's context in the run scope, which travels to the workers."""
    assert_actors_joined_the_llm_spans(*run_on_segment_workers(hook=False))


def test_with_the_segment_handler_hook_segment_workers_carry_the_trace_context_too():
    """What the core needs for runtime='ray' (one hook, simulated here): the listener's picklable
    segment handlers travel with the runner and make the run's context current in the workers."""
    assert_actors_joined_the_llm_spans(*run_on_segment_workers(hook=True))


# -- trace context -------------------------------------------------------------------------------
def test_traceparent_travels_in_the_envelope_and_the_actor_joins_the_trace():
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    agent = Agent(name="traced", backend=SeededEcho(), hosting="ray")
    request = GenerationRequest(messages=[ChatMessage(role="user", content="hi")], seed=7)
    assert trace_carrier() == {}  # no active context: nothing injected

    async def call():
        with tracer.start_as_current_span("driver") as span:
            carrier = trace_carrier()
            completion = await ray_client_for(agent).complete(request)
        return span, carrier, completion

    span, carrier, completion = asyncio.run(call())
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert carrier["traceparent"].split("-")[1] == trace_id
    assert completion.served_by["trace_id"] == trace_id
    assert AgentCall(agent="a", request=request, carrier=carrier).carrier == carrier
    with child_span({}, "x", {}) as joined:
        assert joined is None
    assert trace.get_current_span().get_span_context().is_valid is False


def test_hosting_options_from_agent_fields():
    """The deprecated Agent fields still describe the pool (and say they are deprecated)."""
    with pytest.warns(DeprecationWarning, match="hosting=RayHosting"):
        agent = Agent(name="a", hosting="ray", replicas=3, max_concurrency=2, resources={"num_gpus": 1, "llm": 2})
    hosting = agent.ray_hosting()
    assert (hosting.replicas, hosting.max_concurrency, hosting.num_gpus, hosting.resources) == (3, 2, 1, {"llm": 2})
    assert hosting.concurrency_limit == 6
    assert Agent(name="b", hosting=RayHosting(replicas=2)).hosted_on_ray()
    assert not Agent(name="c", hosting="local").hosted_on_ray()
    with pytest.raises(ValueError, match="replicas"):
        RayHosting(replicas=0)


# -- checkpoints with particles in segment workers -------------------------------------------------
class SimulatedCrash(BaseException):
    """Stands for the driver dying: not an Exception, so nothing in the run catches it."""


class CrashAfterStep(RayRuntime):
    """Segment workers that run step `crash_after` (its LLM calls complete) and then the driver dies."""

    def __init__(self, crash_after: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.crash_after = crash_after
        self.steps = 0

    async def run_segments(self, runner, tasks):
        segments = await super().run_segments(runner, tasks)
        self.steps += 1
        if self.steps == self.crash_after:
            raise SimulatedCrash(f"after step {self.steps}")
        return segments


def test_segment_workers_journal_their_calls_so_a_resumed_ray_run_repeats_none(tmp_path):
    from swarm.checkpoint import read_checkpoint
    from tests import checkpoint_driver

    counter, ckpt = tmp_path / "calls.txt", tmp_path / "ckpt"
    program = checkpoint_driver.make_program(str(counter))  # a local agent: its calls run in the workers
    crashing = CrashAfterStep(3, num_workers=2)
    try:
        with pytest.raises(SimulatedCrash):
            checkpoint_driver.make_policy(str(ckpt)).model_copy(update={"runtime": crashing}).run(
                program, checkpoint_driver.ROUNDS)
    finally:
        asyncio.run(crashing.aclose())
    assert read_checkpoint(ckpt / "population.ckpt").step == 2
    lost_with_the_driver = [c for c in counter.read_text().splitlines() if "|step 2 after" in c]
    assert len(lost_with_the_driver) == 24  # step 3's calls completed, but no checkpoint has them

    rt = RayRuntime(num_workers=2)
    try:
        resumed = checkpoint_driver.make_policy().model_copy(update={"runtime": rt}).resume(
            ckpt, program, checkpoint_driver.ROUNDS)
    finally:
        asyncio.run(rt.aclose())
    calls = counter.read_text().splitlines()
    assert len(calls) == len(set(calls)), "a completed call was made again"
    reference_counter = tmp_path / "reference.txt"
    reference = checkpoint_driver.make_policy().run(checkpoint_driver.make_program(str(reference_counter)),
                                                    checkpoint_driver.ROUNDS)
    assert sorted(calls) == sorted(reference_counter.read_text().splitlines())
    assert summary(resumed) == summary(reference)
