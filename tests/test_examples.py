"""Every example runs, through its own `main()` with a tiny budget, and its output means what it says.

The LLM examples run on the embedded SmolLM2-135M model (marked `llm`; together about two to four
minutes on 2 cores, the debate also starts a local Ray instance); `tempering.py` and the
verifier/parser helpers of the others need no model and run in seconds. Each test checks what the
example claims (marginals sum to 1, every returned sentence satisfies the constraint, weights
match the potential that was recorded, the trace file parses and agrees with the result), not only
that it ran.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = ["self_consistency", "constrained_smc", "debate", "tree_of_thoughts", "code_with_tests", "tempering",
         "hmm_filter"]


def load(name: str):
    """Import examples/<name>.py as module `examples_<name>` (registered, so Ray can ship it by value)."""
    module_name = f"examples_{name}"
    if str(EXAMPLES) not in sys.path:  # as `python examples/X.py` does: an example may import a file next to it
        sys.path.insert(0, str(EXAMPLES))
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def needs_model():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/setup.sh)")


# -- what `swarm run examples/X.py` relies on ----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_each_example_exposes_a_program_policy_defaults_and_a_docstring_with_its_target(name):
    from observability.cli import load_program
    from policies.base import Policy

    module, program = load_program(str(EXAMPLES / f"{name}.py"))
    assert program.__name__ == "program", "swarm run must find the program, not main()"
    assert isinstance(module.POLICY, Policy)
    inspect.signature(program).bind(**module.DEFAULTS["args"])  # the defaults fit the program
    assert "∝" in module.__doc__ and "π" in module.__doc__, "the docstring states the target p ∝ πΦ"
    assert "swarm run examples/" in module.__doc__ and "python examples/" in module.__doc__


def test_swarm_run_on_tempering_writes_a_trace_that_agrees_with_the_exact_posterior(tmp_path, capsys):
    from observability.cli import main as swarm
    from observability.trace_file import read_trace_file

    trace = tmp_path / "t.jsonl"
    assert swarm(["run", str(EXAMPLES / "tempering.py"), "--particles", "200", "--seed", "1", "--trace", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "answer marginal" in out and "log Z" in out
    run = read_trace_file(trace)
    assert run.complete and run.run.policy == "TemperedSMC"
    exact_log_z, exact = load("tempering").exact_posterior(12, 66, 3.0)
    # at N = 200 the error of log Ẑ has sd ≈ 0.6 over seeds (measured on 12 seeds: −1.9 … +0.7)
    assert abs(run.log_evidence - exact_log_z) < 2.5, (run.log_evidence, exact_log_z)
    mass = run.final_marginal()
    assert abs(sum(mass.values()) - 1) < 1e-9 and mass.get(66, 0) > 0.5  # exact p(66) = 0.86


# -- tempering (no model) -----------------------------------------------------------------------------------
def test_tempering_exact_posterior_agrees_with_enumerate():
    import policies

    t = load("tempering")
    log_z, exact = t.exact_posterior(3, 15, 3.0)
    enum = policies.Enumerate().run(t.program, 3, 15, 3.0)
    assert enum.log_evidence == pytest.approx(log_z, abs=1e-12)
    for total, p in enum.marginal().items():
        assert exact[total] == pytest.approx(p, abs=1e-12)


def test_tempering_plain_smc_collapses_and_tempered_smc_recovers_log_z(capsys):
    t = load("tempering")
    s = t.main(["--particles", "200", "--seed", "3"])
    out = capsys.readouterr().out
    assert "exact" in out and "TemperedSMC" in out and "both ran the program" in out
    smc, tempered = s["smc"], s["tempered"]
    assert smc["n"] == s["executions"] > tempered["n"] == 200  # equal executions, as printed
    # collapse: at the verifier SMC's ESS is a handful out of thousands, and log Ẑ is far too low
    assert smc["weighting_ess"] < 0.01 * smc["n"] and smc["error"] < -3.0
    # tempering, N = 200, over 12 seeds: log Ẑ error sd ≈ 0.6 (−1.9 … +0.7), final ESS 161–199, TV 0.006–0.074
    assert abs(tempered["error"]) < 2.5 and tempered["error"] > smc["error"] + 3.0
    assert tempered["final_ess"] > 0.5 * tempered["n"]
    assert tempered["tv"] < 0.2 < smc["tv"]
    assert abs(sum(tempered["marginal"].values()) - 1) < 1e-9


# -- helpers of the LLM examples (no model) ------------------------------------------------------------------
def test_self_consistency_verifier_grades_the_work():
    sc = load("self_consistency")
    q = "Mia has 6 cookies. She eats 2. How many cookies are left?"
    assert sc.extract_answer(" 6 - 2 = 4. The answer is 4.") == 4
    assert sc.extract_answer(" She has some left.") is None
    assert sc.work_log_potential(q, " 6 - 2 = 4. The answer is 4.") == 0.0
    assert sc.work_log_potential(q, " 6 - 2 = 3. The answer is 3.") == -3.0          # wrong arithmetic
    assert sc.work_log_potential(q, " 6 - 2 = 4. The answer is 5.") == -3.0          # answer ≠ its work
    assert sc.work_log_potential(q, " 6 - 1 = 5. The answer is 5.") == -1.0          # 1 is not in the question
    assert sc.work_log_potential(q, " The answer is 4.") == -3.0                     # no work shown


def test_self_consistency_runs_as_a_script_and_the_bench_grades_with_its_verifier():
    """`python examples/self_consistency.py` finds arithmetic_work.py next to it from any directory,
    and bench/tasks.py (the quality benches) uses that same verifier, not a copy."""
    from bench import tasks

    root = EXAMPLES.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(EXAMPLES / "self_consistency.py"), "--help"], cwd=root.parent,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--samples" in done.stdout, done.stderr
    sc = load("self_consistency")
    assert tasks.work_log_potential is sc.work_log_potential and tasks.extract_answer is sc.extract_answer
    assert sc.PROBLEMS == tasks.PROBLEMS[:len(sc.PROBLEMS)]


def test_tree_of_thoughts_parser_reachability_and_verifier_value():
    from swarm.trace import InteractEvent, Trace

    tot = load("tree_of_thoughts")
    nums = [Fraction(n) for n in (4, 6, 2, 2)]
    assert tot.parse_step("6 - 2 = 4", nums) == (6, "-", 2, 4)       # the model's "= 4" is ignored...
    assert tot.parse_step("6 - 2 = 9", nums) == (6, "-", 2, 4)       # ...Python computes the result
    assert tot.parse_step("2 * 2", nums) == (2, "*", 2, 4)           # a number may be used as often as it occurs
    assert tot.parse_step("7 - 2 = 5", nums) is None and tot.parse_step("6 / 0", [6, 0]) is None
    assert tot.parse_step("hello", nums) is None
    assert Fraction(24) in tot.reachable(tuple(nums)) and Fraction(24) not in tot.reachable((Fraction(1),) * 4)
    state = lambda s: Trace([InteractEvent(address="step0/numbers", sender="verifier", receiver="proposer", content=s)])
    assert tot.verifier_value(state("24 2 2")) == 0.0                # 24 * (2 / 2)
    assert tot.verifier_value(state("1 1")) == -22.0                 # the best is 1 + 1 = 2
    assert tot.verifier_value(Trace([])) == 0.0


def test_code_with_tests_sandbox_counts_passing_tests():
    cwt = load("code_with_tests")
    sig, doc, tests = cwt.TASKS[0]
    run = lambda body: asyncio.run(cwt.tests_passed(cwt.function_source(sig, doc, body), tests))
    assert run(" n * n") == 4
    assert run(" n * n * n") == 1                                     # only square(0) == 0
    assert run(" n *") == 0                                           # a syntax error loads nothing
    assert run(" [n for _ in iter(int, 1)]") == 0                     # an endless loop is killed, not waited for


def test_debate_judge_parts():
    d = load("debate")
    assert d.normalize("The Red hat.") == "red hat" and d.mentions("Tom wore a red hat.", "the red")
    assert not d.mentions("Tom wore a red hat.", "") and not d.mentions("Tom wore a red hat.", "blue")
    story = "Tom wore a red hat. Anna wore a blue scarf."
    assert d.closest_sentence("Anna wore something blue", story) == "Anna wore a blue scarf."
    labels = [label for _, label in d.calibration_examples()]
    assert labels.count(True) == len(d.CALIBRATION_STORIES) and labels.count(False) == 2 * len(d.CALIBRATION_STORIES)
    assert not {s for s, *_ in d.CALIBRATION_STORIES} & {s for s, *_ in d.STORIES}  # calibrated on other stories


# -- the LLM examples, tiny budgets ---------------------------------------------------------------------------
@pytest.mark.llm
def test_self_consistency_main(capsys):
    needs_model()
    s = load("self_consistency").main(["--samples", "4", "--problems", "2"])
    out = capsys.readouterr().out
    assert "weighted vote" in out and "accuracy over 2 problems" in out
    for p in s["problems"]:
        assert len(p["answers"]) == 4
        if p["answer"] is None:
            assert p["log_evidence"] == -math.inf
            continue
        assert abs(sum(p["shares"].values()) - 1) < 1e-9 and None not in p["shares"]
        assert p["answer"] == max(p["shares"], key=p["shares"].get)
        lo, hi = p["interval"]
        assert 0 <= lo <= p["shares"][p["answer"]] <= hi <= 1
        assert sum(p["votes"].values()) == sum(a is not None for a in p["answers"])  # answerless paths do not vote
    assert 0 <= s["accuracy"]["single"] <= 1


@pytest.mark.llm
def test_constrained_smc_main_writes_trace_and_report_and_keeps_the_constraint(tmp_path, capsys):
    needs_model()
    from observability.trace_file import read_trace_file

    cs = load("constrained_smc")
    s = cs.main(["--particles", "3", "--letter", "z", "--min-words", "2", "--out", str(tmp_path), "--no-baseline"])
    out = capsys.readouterr().out
    assert str(s["trace"]) in out
    run = read_trace_file(s["trace"])
    if s["log_evidence"] == -math.inf:  # documented outcome: every prefix used a "z"
        assert run.finished is not None and run.finished.error and s["deaths"]
        return
    assert "report:" in out and Path(s["report"]).stat().st_size > 1000
    assert abs(sum(s["marginal"].values()) - 1) < 1e-9
    for sentence in s["marginal"]:
        assert cs.complete(sentence, "z", 2), sentence                 # the guarantee held on every survivor
    assert run.complete and run.log_evidence == pytest.approx(s["log_evidence"])
    assert s["log_evidence"] <= 0.0                                  # Z = π(constraint) ≤ 1


@pytest.mark.llm
def test_constrained_smc_guarantee_only_comparison_counts_its_tokens_when_every_particle_dies():
    """The comparison is at equal tokens: when guarantee-only SMC loses every particle, what it
    spent was printed as "tokens = None" (the exception carries no Result)."""
    needs_model()
    import argparse

    cs = load("constrained_smc")
    args = argparse.Namespace(particles=3, seed=0, topic="a cat", letter="e", max_words=3, min_words=2)
    g = cs.guarantee_only_smc(args)
    if g["log_evidence"] == -math.inf:
        assert g["deaths"] and isinstance(g["tokens"], int) and g["tokens"] > 0, g
    else:
        assert g["tokens"] > 0 and abs(sum(g["marginal"].values()) - 1) < 1e-9


@pytest.mark.llm
def test_constrained_smc_best_of_n_keeps_only_valid_sentences():
    needs_model()
    cs = load("constrained_smc")
    bon = cs.best_of_n_same_budget("a cat", "e", tokens=120, seed=0)
    assert bon["drawn"] >= 1
    assert all(cs.complete(s, "e", 5) for s in bon["valid"])


@pytest.mark.llm
@pytest.mark.ray
def test_debate_on_ray_records_messages_and_calibrated_judge_factors(capsys):
    needs_model()
    d = load("debate")
    s = d.main(["--runtime", "ray", "--particles", "2", "--rounds", "1", "--stories", "1", "--calibration", "1"])
    out = capsys.readouterr().out
    assert "judge calibration on 3 labelled debate states" in out and "agents on one Ray actor" in out
    cal = s["calibration"]
    assert (cal.m1, cal.m0) == (1, 2)
    [story] = s["stories"]
    assert abs(sum(story["marginal"].values()) - 1) < 1e-9 and 0 <= story["p_right"] <= 1
    from policies.potentials import Judge
    judge = Judge(name="check", fn=lambda x: True, prior=d.JUDGE_PRIOR, calibration=cal)
    for p in story["particles"]:
        events = p.trace.events
        senders = [(e.sender, e.receiver) for e in events if e.type == "interact"]
        assert senders == [("alice", "bob"), ("bob", "alice"), ("judge", "moderator")]
        served = [e.info.get("served_by") for e in events if e.type == "sample"]
        assert len(served) == 3 and all(served), "every generation ran on the Ray actor pool"
        [f] = [e for e in events if e.type == "factor"]
        assert not f.shaping and f.log_potential in (judge.potential(True), judge.potential(False))
        assert p.log_weight == pytest.approx(f.log_potential)        # one round: the weight is the judge factor


@pytest.mark.llm
def test_tree_of_thoughts_main_backs_up_with_mellowmax(capsys):
    needs_model()
    from policies.mellowmax import mellowmax

    # seed 0 with 6 simulations of 4 children finds a finished game (4 simulations of 3 do not: then
    # `scores` is empty and log Z's bound -inf, which the example reports as such)
    s = load("tree_of_thoughts").main(["--simulations", "6", "--expand", "4", "--seed", "0"])
    out = capsys.readouterr().out
    assert "24 is reachable" in out and s["solvable"]
    assert s["scores"], "no finished game: the search found nothing to back up"
    assert s["scores"] == sorted(s["scores"], reverse=True) and all(x <= 0 for x in s["scores"])
    live = [c["value"] for c in s["root_children"] if c["value"] > -math.inf]
    assert s["root_value"] == pytest.approx(mellowmax(live, s["omega"]))  # the root is the mellowmax of its children
    assert "Best-of-N with the same" in out or "Best-of-N over" in out


@pytest.mark.llm
def test_code_with_tests_main(capsys):
    needs_model()
    s = load("code_with_tests").main(["--samples", "3", "--tasks", "1"])
    out = capsys.readouterr().out
    assert "def square(n)" in out and "π(all tests pass)" in out
    [task] = s["tasks"]
    assert abs(sum(task["marginal"].values()) - 1) < 1e-9
    assert all(body.startswith("return") for body in task["marginal"])
    assert -4 * 2.0 <= task["log_evidence"] <= 0.0                    # log E_π[exp(−2·failed)] with 4 tests
    assert (task["log_evidence"] == 0.0) == (task["all_pass_rate"] == 1.0)


def test_hmm_filter_matches_the_forward_algorithm(capsys):
    """VectorizedSMC at 50,000 particles over 40 steps against the exact likelihood and filtering
    posterior. Over 8 seeds its log-Z error had mean −0.001 and SD 0.031 and its TV at most 0.0014,
    so 0.2 (6 SD) and 0.02 hold on any CPU and fail for a wrong filter (a missing factor moves log Z
    by tens). SMC with 300 particles is noisy (log-Z error SD ~0.6 over 4 seeds; TV ≤ 0.05): it is
    checked loosely, as the comparison the example prints."""
    hmm = load("hmm_filter")
    rows = hmm.main(["--particles", "50000", "--steps", "40", "--smc-particles", "300"])
    vector, smc = rows["VectorizedSMC"], rows["SMC"]
    assert abs(vector["log_z"] - rows["exact_log_z"]) < 0.2 and vector["tv"] < 0.02, rows
    assert abs(smc["log_z"] - rows["exact_log_z"]) < 4.0 and smc["tv"] < 0.2, rows
    out = capsys.readouterr().out
    assert "exact (forward algorithm)" in out and "VectorizedSMC" in out
    assert hmm.exact_filter(1)[0] == pytest.approx(math.log(sum(
        hmm.INITIAL[z] * math.exp(hmm.log_poisson(hmm.observations(1)[0], hmm.RATES[z])) for z in range(3))))
