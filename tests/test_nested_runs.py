"""A policy run inside another run's program: nested inference (an exact evidence as a factor, a
sub-model's posterior as a value) and an agent whose tool is itself a run.

Each case has an exact answer: the inner run is `Enumerate` (exact log Z) or a seeded SMC run whose
standalone result is the reference (a run's result is a function of its seed, so the nested run
must reproduce it to the last bit: tolerance 0). Before, the first await of a nested run's LLM call
hung both runs (its greenlets switched back to the outer program instead of the event loop); an
inner run whose stack was not the fused engine's wrote its samples into the outer particle's trace
(DuplicateSiteError at the second inner particle); `policy.run` in a plain program killed every
particle with "called inside a running event loop".
"""

from __future__ import annotations

import math

import pytest

import policies
import swarm
from agents import Agent, tool
from agents.backends.scripted import Scripted
from swarm import Bernoulli, Uniform, factor, sample

pytestmark = pytest.mark.timeout(120)  # the failure this guards against was a hang


def inner(p: float) -> int:
    y = sample("y", Bernoulli(p))
    factor("g", 1.0 * y)
    return int(y)


def exact_log_z(p: float) -> float:
    """log Σ_y p(y) e^{y}: the evidence of `inner`."""
    return math.log((1 - p) + p * math.e)


def exact_outer_posterior() -> dict[float, float]:
    """x ~ Uniform{0.2, 0.7}, factor(log Z(x)): P(x) ∝ Z(x)."""
    z = {x: math.exp(exact_log_z(x)) for x in (0.2, 0.7)}
    return {x: zx / sum(z.values()) for x, zx in z.items()}


def test_a_plain_program_runs_a_nested_policy_and_factors_its_exact_evidence():
    def outer() -> float:
        x = sample("x", Uniform([0.2, 0.7]))
        factor("evidence", policies.Enumerate().run(inner, x).log_evidence)
        return x

    result = policies.Enumerate().run(outer)
    assert result.marginal() == pytest.approx(exact_outer_posterior(), abs=1e-12)
    assert [e.address for e in result.particles[0].trace.events] == ["x", "evidence"]  # inner sites stay inner


def test_an_async_program_awaits_a_nested_run_with_llm_calls():
    writer = Agent(name="writer", backend=Scripted(lambda request: "a short reply", latency_s=0.01))

    async def answer(question: str) -> str:
        text = await sample("reply", writer.generate(question, max_tokens=3))
        factor("length", -0.1 * len(text))
        return text

    async def outer() -> tuple[int, float]:
        x = sample("x", Bernoulli(0.5))
        run = await policies.SMC(num_particles=4, seed=1).run_async(answer, "why?")
        factor("evidence", run.log_evidence)
        return int(x), run.log_evidence

    standalone = policies.SMC(num_particles=4, seed=1).run(answer, "why?").log_evidence
    result = policies.SMC(num_particles=6, seed=0).run(outer)
    assert {value[1] for value in result.values} == {standalone}  # tolerance 0: same seed, same run
    assert all([e.address for e in p.trace.events] == ["x", "evidence"] for p in result.particles)


@pytest.mark.parametrize("nested", [policies.TemperedSMC(num_particles=8, seed=1), policies.SMC(num_particles=8, seed=1),
                                    policies.Importance(num_particles=8, seed=1)], ids=lambda p: type(p).__name__)
def test_a_nested_run_keeps_its_samples_out_of_the_outer_particles_trace(nested):
    """TemperedSMC's stack is not the fused engine's: before, its samples went to the outer one."""
    async def outer() -> float:
        sample("x", Bernoulli(0.5))
        return (await nested.run_async(inner, 0.3)).log_evidence

    standalone = nested.run(inner, 0.3).log_evidence
    result = policies.SMC(num_particles=3, seed=0).run(outer)
    assert result.values == [standalone] * 3
    assert all([e.address for e in p.trace.events] == ["x"] for p in result.particles)


def test_an_agents_tool_can_be_a_run():
    """An agent as a tool: the tool runs SMC over another agent and returns its best answer."""
    expert = Agent(name="expert", backend=Scripted(lambda request: "forty-two", latency_s=0.01))

    async def consult_expert(question: str) -> str:
        text = await sample("answer", expert.generate(question, max_tokens=4))
        return text

    @tool
    async def consult(question: str) -> str:
        """Ask the expert a question."""
        return (await policies.SMC(num_particles=4, seed=0).run_async(consult_expert, question)).map().value

    def boss_reply(request) -> str:
        asked = any(m.role == "tool" for m in request.messages)
        return "The expert says forty-two." if asked else '<tool_call>{"name": "consult", "arguments": {"question": "what?"}}</tool_call>'

    boss = Agent(name="boss", backend=Scripted(boss_reply), tools=[consult])

    async def program() -> str:
        return await boss.ask("What is the answer?")

    result = policies.SMC(num_particles=3, seed=0).run(program)
    assert result.values == ["The expert says forty-two."] * 3
    results = [e for e in result.particles[0].trace.events if e.address.endswith("/call0/result") and e.type == "sample"]
    assert [e.value for e in results] == ["forty-two"]


def test_a_sync_run_inside_an_async_program_says_to_await():
    """The control: from async code, a blocking `run` would stall every other particle's calls. The
    error aborts the run (it was a RuntimeError that killed every particle: NoSurvivingParticles)."""
    async def outer() -> float:
        sample("x", Bernoulli(0.5))
        return policies.Enumerate().run(inner, 0.3).log_evidence

    with pytest.raises(swarm.BlockingRunError, match=r"Enumerate\.run\(\) was called inside a running event loop; use "
                                        r"`await Enumerate\.run_async\(\.\.\.\)` there"):
        policies.SMC(num_particles=2, seed=0).run(outer)
