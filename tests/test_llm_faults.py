"""LLM errors and timeouts inside whole runs (issue 8, item 2, the LLM part).

A real `OpenAICompatible` backend talks to the stdlib fault server (tests/fault_server.py) through
the real `openai` client. Faults are scheduled per *request* (by the request's seed, which the
generation derives from the particle's stream and site address) and per attempt, from a seeded
generator, so the schedule is the same whatever order concurrent requests arrive in:

- recoverable faults (500, 503, 429, dropped connections, timeouts; at most `max_retries` in a row
  for any request) are retried, and the seeded result equals the fault-free run exactly;
- a request that fails more often than that ends as a `BackendError`: its particle is *lost* (missing
  data, not evidence: left out of the weights and of log Z) with the reason in an `ErrorEvent` of its
  trace, and every other particle finishes as in the fault-free run;
- when more than the policy's `max_lost_fraction` of a step's particles are lost (every request
  failing, say), the run stops with `BackendUnavailable` naming the backend's error.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Callable

import pytest

import policies
import swarm
from agents import Agent, GenerationSettings
from agents.backends.openai_compat import OpenAICompatible
from swarm import factor, guarantee
from swarm.listeners import RunListener
from tests.fault_server import FaultServer

MAX_RETRIES = 3
FAULTS = ("500", "503", "429", "drop", "sleep:3")   # sleep > TIMEOUT: the client times out
TIMEOUT = 1.0
"""Generous for a local reply even on a loaded 2-core machine: a spurious timeout would be a fault
the schedule did not inject."""


class KeyedFaultServer(FaultServer):
    """The fault server, with the action chosen by `plan(request seed, attempt number)` instead of
    by arrival order. `attempts[seed]` counts the requests seen for each seed."""

    def __init__(self, plan: Callable[[int | None, int], str], **kwargs) -> None:
        super().__init__(reply=reply_for_seed, **kwargs)
        self.plan = plan
        self.attempts: Counter = Counter()

    def take_action(self, path: str, body: dict, authorization: str | None) -> str:
        with self._lock:
            seed = body.get("seed")
            attempt = self.attempts[seed]
            self.attempts[seed] += 1
            action = self.plan(seed, attempt)
            self.requests.append({"path": path, "body": body, "action": action, "authorization": authorization})
        return action


def reply_for_seed(body: dict) -> str:
    """The fake model's answer is a function of the request's seed (so particles differ)."""
    return ["yes it is", "no it is not", "maybe so"][int(body.get("seed") or 0) % 3]


def failures_before_success(schedule_seed: int, rate: float, most: int) -> Callable[[int | None], int]:
    """How many leading attempts of the request with a given seed fail: 0 with probability 1 − rate,
    else uniform on 1..most. Keyed by (schedule_seed, request seed): arrival order plays no part."""
    def count(seed: int | None) -> int:
        rng = random.Random(f"{schedule_seed}/{seed}")
        return 0 if rng.random() >= rate else rng.randint(1, most)
    return count


def plan_from(count: Callable[[int | None], int], schedule_seed: int) -> Callable[[int | None, int], str]:
    def plan(seed: int | None, attempt: int) -> str:
        if attempt >= count(seed):
            return "ok"
        return random.Random(f"{schedule_seed}/{seed}/{attempt}").choice(FAULTS)
    return plan


def make_program(backend: OpenAICompatible):
    solver = Agent(name="solver", backend=backend, settings=GenerationSettings(max_tokens=4))
    checker = Agent(name="checker", backend=backend, settings=GenerationSettings(max_tokens=4))

    async def program():
        answer = await solver.ask("Is the sky blue?")
        factor("prefers_yes", 0.0 if answer.startswith("yes") else -1.0)
        verdict = await checker.ask(f"Check: {answer}", sender="solver")
        guarantee("not_unsure", "maybe" not in verdict)
        return answer, verdict
    return program


def backend_for(srv: FaultServer) -> OpenAICompatible:
    """At most 4 requests in flight: the stdlib server's listen backlog is 5, and a connection
    refused by a full backlog would be a fault the schedule did not inject."""
    return OpenAICompatible(srv.base_url, "fake-model", api_key="sk-fault-test-key", timeout=TIMEOUT,
                            max_retries=MAX_RETRIES, backoff_base=0.001, backoff_max=0.01, retry_seed=0,
                            max_concurrency=4)


def run_against(plan, policy) -> tuple[swarm.Result | Exception, KeyedFaultServer, OpenAICompatible, "Errors"]:
    errors = Errors()
    with KeyedFaultServer(plan) as srv:
        backend = backend_for(srv)
        policy = policy.model_copy(update={"listeners": [errors]})
        try:
            result = policy.run(make_program(backend))
        except swarm.SwarmError as exc:
            result = exc
    return result, srv, backend, errors


class Errors(RunListener):
    """Collects every ErrorEvent a run reports, from every step (dead particles included)."""

    def __init__(self) -> None:
        self.events: list = []

    def on_step(self, record) -> None:
        self.events += [e for p in record.particles for e in p.new_events if e.type == "error"]


def sampled(particle: swarm.Particle) -> list[tuple]:
    """What a particle drew: address, value and log q of every sample site (no timings)."""
    return [(e.address, e.value, e.log_prob, e.target_log_prob) for e in particle.trace.events if e.type == "sample"]


def never_fails(seed, attempt) -> str:
    return "ok"


# ---- recoverable faults ---------------------------------------------------------------------------
@pytest.mark.parametrize("make_policy", [lambda: policies.SMC(num_particles=10, ess_threshold=0.9, seed=3),
                                         lambda: policies.Importance(num_particles=10, seed=3)],
                         ids=["SMC", "Importance"])
def test_retried_faults_leave_the_seeded_result_unchanged(make_policy):
    clean, clean_srv, _, _ = run_against(never_fails, make_policy())
    count = failures_before_success(schedule_seed=11, rate=0.4, most=MAX_RETRIES)
    faulty, srv, backend, errors = run_against(plan_from(count, 11), make_policy())

    injected = sum(count(seed) for seed in srv.attempts)
    assert injected >= 3, "the schedule injected too few faults to test anything"
    assert set(srv.attempts) == set(clean_srv.attempts)   # the same requests, whatever failed
    for seed in srv.attempts:   # each request: its scheduled faults, then its answer
        actions = [r["action"] for r in srv.requests if r["body"].get("seed") == seed]
        assert actions[:count(seed)] == [plan_from(count, 11)(seed, i) for i in range(count(seed))]
        assert actions[count(seed)] == "ok", actions
    assert backend.stats()["retries"] == injected and backend.stats()["errors"] == 0 and errors.events == []

    assert faulty.log_evidence == clean.log_evidence
    assert faulty.marginal() == clean.marginal()
    for a, b in zip(faulty.particles, clean.particles, strict=True):
        assert (a.id, a.value, a.log_weight, a.status) == (b.id, b.value, b.log_weight, b.status)
        assert sampled(a) == sampled(b)


# ---- retries exhausted ----------------------------------------------------------------------------
def doomed_seeds(schedule_seed: int, rate: float) -> Callable[[int | None], int]:
    """A request is doomed (fails every attempt) with probability `rate`; the others succeed at once."""
    def count(seed: int | None) -> int:
        return MAX_RETRIES + 1 if random.Random(f"{schedule_seed}/{seed}").random() < rate else 0
    return count


def test_exhausted_retries_lose_only_their_particle_with_the_reason_in_its_trace():
    policy = policies.Importance(num_particles=12, seed=5, max_lost_fraction=0.5)   # no resampling: particle i is comparable
    clean, _, _, _ = run_against(never_fails, policy)
    count = doomed_seeds(schedule_seed=7, rate=0.2)
    faulty, srv, backend, errors = run_against(plan_from(count, 7), policy)

    doomed = {seed for seed in srv.attempts if count(seed)}
    assert 1 <= len(doomed) and all(srv.attempts[s] == MAX_RETRIES + 1 for s in doomed)
    assert backend.stats()["errors"] == len(doomed) == len(errors.events)
    survivors = 0
    for a, b in zip(faulty.particles, clean.particles, strict=True):
        if a.status == "lost":
            error = a.trace.error
            assert error.error_type == "BackendError" and a.log_weight == -math.inf
            assert f"failed after {MAX_RETRIES + 1} attempts; last cause:" in error.message
            assert "/chat/completions (model 'fake-model')" in error.message
            assert error.address.endswith("/request")   # the message sent just before the call
            assert sampled(a) == sampled(b)[:len(sampled(a))]   # what it drew before dying is unchanged
        else:
            survivors += 1
            assert (a.value, a.log_weight, a.status) == (b.value, b.log_weight, b.status)
            assert sampled(a) == sampled(b)
    assert survivors >= 1 and survivors + len(doomed) == len(faulty.particles)
    assert faulty.diagnostics.lost == len(doomed) and not any(k.startswith("BackendError") for k in faulty.diagnostics.deaths)


def test_smc_run_goes_on_and_every_exhausted_request_is_an_error_event():
    count = doomed_seeds(schedule_seed=2, rate=0.15)
    result, srv, backend, errors = run_against(plan_from(count, 2), policies.SMC(num_particles=16, ess_threshold=1.0, seed=1,
                                                                                 max_lost_fraction=0.5))
    assert isinstance(result, swarm.Result), result
    doomed = [seed for seed in srv.attempts if count(seed)]
    assert doomed and len(errors.events) == len(doomed) == backend.stats()["errors"]
    assert all(e.error_type == "BackendError" and "last cause" in e.message for e in errors.events)
    assert any(p.status == "finished" for p in result.particles)
    assert result.diagnostics.lost == len(doomed)


def test_non_retryable_error_is_not_retried_and_loses_the_particle():
    result, srv, backend, errors = run_against(lambda seed, attempt: "400", policies.Importance(num_particles=3, seed=0))
    assert isinstance(result, swarm.BackendUnavailable) and "3 of 3 particles" in str(result)
    assert len(srv.requests) == 3 and backend.stats()["retries"] == 0   # one attempt each
    assert "HTTP 400" in result.last_error and "(not retried)" in result.last_error


def test_when_every_request_times_out_the_run_stops_naming_the_backend_error():
    result, srv, backend, errors = run_against(lambda seed, attempt: "sleep:3",
                                               policies.SMC(num_particles=2, seed=0))
    assert isinstance(result, swarm.BackendUnavailable)
    assert "2 of 2 particles advanced at step 1 were lost" in str(result)
    assert "BackendError after solver#0/request" in str(result) and result.site == "BackendError after solver#0/request"
    assert f"request timed out after {TIMEOUT:g}s" in result.last_error
    assert len(srv.requests) == 2 * (MAX_RETRIES + 1)
    assert all(f"request timed out after {TIMEOUT:g}s" in e.message for e in errors.events)
