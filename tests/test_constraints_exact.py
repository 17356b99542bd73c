"""Exactness of constrained proposals: LlamaCpp's real sampling loop on a 7-token toy model
(`tests/toy_llama.py`, a test double for the model only) against `policies.Enumerate` of the same
process written independently.

For each case the guided program (every token drawn from q renormalised over the constraint, the
site weighted by the log-mass) must give
- TV ≤ 0.03 between its weighted answer distribution at 10,000 particles and the exact posterior
  π·Φ / Z. Why 0.03 holds with margin: the Monte Carlo error of a weighted empirical distribution
  is E[TV] ≈ ½·Σ_k sqrt(2/π)·sqrt(p_k(1 − p_k)/ESS) (mean absolute deviation of each outcome's
  share); the test computes it from the exact p and the run's ESS and asserts it is ≤ 0.02, so 0.03
  is at least 1.5 times the expected error (the TV's own spread is far smaller than its mean at
  these sizes). Seeds are fixed, so a pass is reproducible on any CPU (numpy's PCG64 and float64
  arithmetic are platform-independent here).
- an unbiased Ẑ: the mean of Ẑ = exp(log Ẑ) over 200 independent runs of 20 particles lies within
  4 standard errors of the exact Z (a false alarm has probability < 1e-4 under the CLT; Ẑ is a
  mean of bounded weights, so its variance is finite).
Each case also shows the test can fail: the same run with the log-mass correction removed (the
constrained proposal taken as if it were π) is far outside these bounds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import policies
from agents import Agent, constraints
from tests.toy_llama import ToyLlama, exact_program, guided_program


class FewB(constraints.Potential):
    """A soft potential: Φ(x) = 0.6 ** (number of "b" in x) (evaluated on candidates: estimated)."""

    def prefix(self, text: str) -> float:
        return 0.6 ** text.count("b")

    complete = prefix


CASES = {
    "forbid_text": dict(constraint=constraints.forbid_chars("e"), unit="text", max_tokens=2, chunks=1),
    "regex_words_top_p": dict(constraint=constraints.regex(r"(a|ab)+( (a|ab)+)*\.?"), unit="word", max_tokens=3,
                              chunks=3, temperature=0.8, top_p=0.95),
    "soft_and_forbid_base": dict(constraint=constraints.forbid_chars("e") & FewB(), unit="text", max_tokens=2,
                                 chunks=1, temperature=0.85, base=True),
    "predicate_text": dict(constraint=constraints.prefix(lambda t: "e" not in t and t.count("a") <= 1), unit="text",
                           max_tokens=2, chunks=1),
    "predicate_words": dict(constraint=constraints.prefix(lambda t: "e" not in t and len(t) <= 2), unit="word",
                            max_tokens=2, chunks=2),
}


def _programs(case: dict, correct: bool = True):
    args = dict(case)
    base = args.pop("base", False)
    agent = Agent(name="toy", backend=ToyLlama(), target="base" if base else "proposal")
    guided = guided_program(agent, **args)
    if not correct:  # the broken variant: the constrained proposal taken as if it were π
        guided = guided_program(Agent(name="toy", backend=_Uncorrected()), **args)
    return guided, exact_program(**args, base=base)


class _Uncorrected(ToyLlama):
    """ToyLlama whose reports claim no log-mass: the weights ignore the constraint (a broken variant)."""

    async def complete(self, request):
        c = await super().complete(request)
        if c.constraint is not None:
            c.constraint = c.constraint.model_copy(update={"log_masses": [0.0] * len(c.constraint.log_masses)})
        return c


def _tv(p: dict, q: dict) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def _exact(exact) -> tuple[dict, float]:
    r = policies.Enumerate().run(exact)
    return r.marginal(), math.exp(r.log_evidence)


def _z_hat_stats(program, runs: int = 200, particles: int = 20) -> tuple[float, float]:
    zs = []
    for seed in range(runs):
        r = policies.Importance(num_particles=particles, seed=1000 + seed).run(program)
        zs.append(math.exp(r.log_evidence))
    zs = np.array(zs)
    return float(zs.mean()), float(zs.std(ddof=1) / math.sqrt(runs))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_constrained_proposal_matches_enumerate(name):
    guided, exact = _programs(CASES[name])
    truth, z = _exact(exact)
    assert 0.0 < z < 0.95, f"{name}: the constraint should bind (Z = {z})"
    r = policies.SMC(num_particles=10_000, seed=7).run(guided)
    tv = _tv(r.marginal(), truth)
    print(f"{name}: Z = {z:.4f}, log Ẑ − log Z = {r.log_evidence - math.log(z):+.4f}, TV = {tv:.4f}, "
          f"ESS = {r.ess:.0f}, outcomes = {len(truth)}, expected MC TV = "
          f"{0.5 * sum(math.sqrt(2 / math.pi * p * (1 - p) / r.ess) for p in truth.values()):.4f}")
    expected_tv = 0.5 * sum(math.sqrt(2 / math.pi * p * (1 - p) / r.ess) for p in truth.values())
    assert expected_tv <= 0.02, f"{name}: expected Monte Carlo TV {expected_tv:.4f} leaves no margin under 0.03"
    assert tv <= 0.03, f"{name}: TV {tv:.4f} > 0.03 between constrained SMC and Enumerate"
    events = [e for e in r.particles[0].trace.events if e.type == "sample"]
    info = events[0].info["constraint"]
    assert info["weights"] == ("exact" if CASES[name]["constraint"].exact else "estimated")
    assert info["log_weight"] == pytest.approx(sum(info["log_masses"]))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_evidence_is_unbiased(name):
    guided, exact = _programs(CASES[name])
    _, z = _exact(exact)
    mean, se = _z_hat_stats(guided)
    print(f"{name}: Z = {z:.4f}, mean Ẑ over 200 runs = {mean:.4f} ± {se:.4f}")
    assert abs(mean - z) <= 4 * se, f"{name}: mean Ẑ {mean:.4f} ± {se:.4f} vs exact Z {z:.4f}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["forbid_text", "regex_words_top_p", "predicate_text"])
def test_without_the_log_mass_the_checks_fail(name):
    """The same checks on the broken variant (no log-mass correction) fail: the tests can fail."""
    broken, exact = _programs(CASES[name], correct=False)
    truth, z = _exact(exact)
    mean, se = _z_hat_stats(broken, runs=50)
    r = policies.SMC(num_particles=4_000, seed=7).run(broken)
    tv = _tv(r.marginal(), truth)
    print(f"{name} (no correction): Z = {z:.4f}, mean Ẑ = {mean:.4f} ± {se:.4f}, TV = {tv:.4f}")
    assert abs(mean - z) > 4 * se and (tv > 0.03 or name == "forbid_text")


def _log_q_row(text: bytes, temperature: float, top_p: float) -> np.ndarray:
    """The toy's proposal row after `text` (LlamaCpp's float32 `batch_proposal`), in float64."""
    from agents.backends.llama_sampling import batch_proposal
    from tests.toy_llama import toy_logits

    return batch_proposal(toy_logits(text)[None, :], [temperature], [top_p])[0].logq.astype(np.float64)


def _log_sum(row: np.ndarray) -> float:
    finite = row[np.isfinite(row)]
    return float(np.logaddexp.reduce(finite)) if finite.size else -math.inf


@pytest.mark.parametrize("unit,temperature,top_p", [("text", 1.0, 1.0), ("word", 0.8, 0.95), ("word", 1.0, 1.0)])
def test_recorded_log_q_times_the_log_mass_is_the_unconstrained_chunk(unit, temperature, top_p):
    """Exact, per completion (no statistics): what a guided completion records is the proposal it was
    drawn from. For a hard constraint that holds (log Φ = 0), log q_C(chunk) + Σ log Z must equal the
    chunk's log-probability under the unconstrained chunking proposal q, recomputed here from the
    toy's table: Σ_i log q(t_i | x_i), plus for a word chunk cut at a boundary log q(B ∪ E) at the
    cut (the boundary is drawn free, φ = 1); and its base log p likewise with p. Tolerance 1e-6:
    both sides are float64 sums of the same float32 rows (rounding ~1e-12 per term). Mutants this
    catches: the word stop masses taken from the unguided row (off by −log Z at the cut), the log q
    of the unguided row recorded for guided tokens; and the guide not advanced past kept tokens (the
    reply then leaves the regex: checked on its text)."""
    from agents.backends.base import GenerationRequest, GenerationSettings
    from tests.toy_llama import BOUNDARY, PIECES

    constraint = constraints.regex(r"(a|ab)+( (a|ab)+)*\.?")
    backend = ToyLlama()
    checked_cuts = 0
    try:
        for seed in range(60):
            prefix = ["", "a", "ab a"][seed % 3]
            settings = GenerationSettings(max_tokens=4, unit=unit, temperature=temperature, top_p=top_p)
            c = backend.complete_sync(GenerationRequest(prompt="", assistant_prefix=prefix, seed=seed,
                                                        settings=settings, constraint=constraint))
            assert c.constraint.weights == "exact" and not c.constraint.dead, c
            text, want_q, want_p = prefix.encode(), 0.0, 0.0
            for tok in c.token_ids:
                want_q += _log_q_row(text, temperature, top_p)[tok]
                want_p += _log_q_row(text, 1.0, 1.0)[tok]
                text += PIECES[tok]
            if unit == "word" and c.finish_reason in ("unit", "eos") and not (c.token_ids and c.token_ids[-1] == 0):
                want_q += _log_sum(_log_q_row(text, temperature, top_p)[BOUNDARY])
                want_p += _log_sum(_log_q_row(text, 1.0, 1.0)[BOUNDARY])
                checked_cuts += 1
            assert constraint.prefix(text.decode()) > 0, (seed, text)  # the reply so far satisfies it
            assert c.log_prob + c.constraint.log_weight == pytest.approx(want_q, abs=1e-6), (seed, c)
            assert c.base_log_prob == pytest.approx(want_p, abs=1e-6), (seed, c)
    finally:
        backend.close()
    if unit == "word":
        assert checked_cuts >= 20, f"only {checked_cuts} word chunks ended at a boundary: the cut is barely tested"


def test_greedy_takes_the_highest_logit_allowed_token():
    """T = 0 under a constraint: every kept token is the highest-logit token the constraint allows
    after the text so far (the toy's logits), with log q = 0 and log Z = 0 where that is also the
    unconstrained greedy token, −inf where the constraint moved it (the greedy proposal has no mass
    elsewhere: docs/constraints.md)."""
    from agents.backends.base import GenerationRequest, GenerationSettings
    from tests.toy_llama import EOS, PIECES, toy_logits

    backend = ToyLlama()
    try:
        c = backend.complete_sync(GenerationRequest(prompt="", settings=GenerationSettings(max_tokens=6, temperature=0),
                                                    constraint=constraints.forbid_chars("e")))
    finally:
        backend.close()
    text = b""
    for tok, log_mass in zip(c.token_ids, c.constraint.log_masses):
        logits = toy_logits(text)
        allowed = [v for v in range(len(PIECES)) if b"e" not in PIECES[v]]
        assert tok == max(allowed, key=lambda v: (logits[v], -v)), (text, tok)
        assert log_mass == (0.0 if tok == int(np.argmax(logits)) else -math.inf)
        if tok == EOS:
            break
        text += PIECES[tok]
    assert c.token_logprobs == [0.0] * len(c.token_ids) and len(c.token_ids) >= 2
