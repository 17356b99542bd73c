"""Constraints: the contract of every built-in (and that the contract test catches broken ones),
token masks across token boundaries, the guide's draws against exact renormalisation, bad input,
and the request/cache plumbing."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from agents import Agent, constraints
from agents.backends.base import GenerationRequest
from agents.backends.scripted import Scripted
from agents.cache import request_key
from agents.constraints import ConstraintError, Vocabulary, assert_potential_contract

TEXTS = ["A cat sat on a mat.", "The dog ate.", "Hello there", "ab", "", "naïve café"]
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


class FewLongWords(constraints.Potential):
    """A soft potential: Φ(x) = 0.8 ** (letters beyond 3 in every word)."""

    def prefix(self, text: str) -> float:
        return 0.8 ** sum(max(0, len(w) - 3) for w in text.split())

    complete = prefix


BUILT_INS = {
    "forbid_chars": (constraints.forbid_chars("eE"), TEXTS),
    "forbid_substrings": (constraints.forbid_substrings(["cat", "é", "he"]), TEXTS),
    "regex": (constraints.regex(r"[A-Z][a-z ]*\."), TEXTS),
    "json_schema": (constraints.json_schema(PERSON), ['{"name": "Bob", "age": 4}', '{"name": 3}', '{"age": 1}']),
    "grammar_gbnf": (constraints.grammar('root ::= "yes" | "no" | "n" [a-z]+'), ["yes", "no", "nope", "maybe", "ye"]),
    "grammar_lark": (constraints.grammar('start: "a" B\nB: /[bc]+/'), ["abcb", "ab", "a", "b", "abd"]),
    "prefix": (constraints.prefix(lambda t: len(t) < 9, complete=lambda t: t.endswith(".")), TEXTS),
    "potential": (FewLongWords(), TEXTS),
    "all_of": (constraints.forbid_chars("e") & constraints.prefix(lambda t: len(t) < 12) & FewLongWords(), TEXTS),
}


@pytest.mark.parametrize("name", list(BUILT_INS))
def test_every_built_in_passes_the_contract(name):
    constraint, texts = BUILT_INS[name]
    assert_potential_contract(constraint, texts)


class _Revives(constraints.Potential):
    """Broken: a dead prefix comes back to life."""

    def prefix(self, text: str) -> float:
        return 0.0 if len(text) == 2 else 1.0

    complete = prefix


class _TooBig(constraints.Potential):
    def prefix(self, text: str) -> float:
        return 1.5

    complete = prefix


class _BadRow(constraints.Potential):
    """Broken: its vectorised row disagrees with its definition (forbids "a" only in the row)."""

    exact = True

    def prefix(self, text: str) -> float:
        return 1.0

    complete = prefix

    def prefix_row(self, text, pieces, eos):
        return np.array([0.0 if p == b"a" else 1.0 for p in pieces])


@pytest.mark.parametrize("broken, message", [(_Revives(), "dead prefix"), (_TooBig(), r"\[0, 1\]"),
                                             (_BadRow(), "the guide gives")])
def test_the_contract_catches_broken_potentials(broken, message):
    with pytest.raises((AssertionError, ConstraintError), match=message):
        assert_potential_contract(broken, ["abc", "a"])


def test_forbidden_substring_across_token_boundaries():
    vocab = Vocabulary([b"", b"t", b"h", b"he", b"e", b" the", b"x"], eos_ids=[0])
    guide = constraints.forbid_substrings("the").guide(vocab, prefix="no t")
    row = guide.log_phi_row()
    assert row[2] == 0.0 and row[3] == -math.inf and row[5] == -math.inf  # "t"+"h" ok, "t"+"he" not
    guide.advance(2)  # now "...th": "e" and "he"... only tokens starting with "e" are forbidden
    row = guide.log_phi_row()
    assert row[4] == -math.inf and row[3] == 0.0 and row[0] == 0.0


def test_guided_draws_follow_the_renormalised_proposal():
    """Exact guide: draws ~ q·1[allowed]/Z and log_mass = log Z (60,000 draws: each share's standard
    error is below 0.002, so 0.01 is over 5 standard errors)."""
    vocab = Vocabulary([b"", b"a", b"e", b"b", b"E"], eos_ids=[0])
    q = np.array([0.1, 0.3, 0.3, 0.2, 0.1])
    rng = np.random.default_rng(0)
    guide = constraints.forbid_chars("eE").guide(vocab)
    counts = np.zeros(5)
    for _ in range(60_000):
        d = guide.draw(np.log(q), rng)
        counts[d.token] += 1
    assert d.log_mass == pytest.approx(math.log(0.6)) and d.exact
    np.testing.assert_allclose(counts / counts.sum(), [1 / 6, 0.5, 0, 1 / 3, 0], atol=0.01)


def test_greedy_takes_the_best_allowed_token_and_records_zero_mass():
    vocab = Vocabulary([b"", b"a", b"e"], eos_ids=[0])
    guide = constraints.forbid_chars("e").guide(vocab)
    logq = np.array([-math.inf, -math.inf, 0.0])  # T = 0: point mass on "e"
    d = guide.draw(logq, np.random.default_rng(0), greedy_scores=np.array([0.0, 1.0, 2.0]))
    assert d.token == 1 and d.log_q == 0.0 and d.log_mass == -math.inf


def test_no_allowed_mass_is_a_dead_draw():
    vocab = Vocabulary([b"", b"e", b"E"], eos_ids=[0])
    guide = constraints.forbid_chars("eE").guide(vocab)
    d = guide.draw(np.array([-math.inf, math.log(0.5), math.log(0.5)]), np.random.default_rng(0))
    assert d.dead and guide.report().dead and guide.report().log_weight == -math.inf


@pytest.mark.parametrize("build, message", [
    (lambda: constraints.regex("(unclosed"), "regex"),
    (lambda: constraints.json_schema("{not json"), "json_schema"),
    (lambda: constraints.json_schema(42), "json_schema"),
    (lambda: constraints.grammar("start: undefined_rule"), "grammar"),
    (lambda: constraints.grammar('root ::= "a" ('), "grammar"),
    (lambda: constraints.forbid_chars(""), "forbid_chars"),
    (lambda: constraints.forbid_substrings([""]), "forbid_substrings"),
    (lambda: constraints.prefix("not callable"), "prefix"),
    (lambda: constraints.all_of(constraints.forbid_chars("e"), "e"), "all_of"),
])
def test_bad_constraints_are_refused_naming_the_constructor(build, message):
    with pytest.raises(ConstraintError, match=message):
        build()


def test_a_potential_outside_the_unit_interval_is_an_error_when_drawn():
    vocab = Vocabulary([b"", b"a"], eos_ids=[0])
    with pytest.raises(ConstraintError, match=r"_TooBig.*\[0, 1\]"):
        _TooBig().guide(vocab)


def test_request_field_is_validated_serialised_and_keyed():
    with pytest.raises(ValueError, match="constraint must be built with agents.constraints"):
        GenerationRequest(prompt="x", constraint="no e please")
    a = GenerationRequest(prompt="x", constraint=constraints.forbid_chars("e"))
    b = GenerationRequest(prompt="x", constraint=constraints.forbid_chars("E"))
    assert request_key("m", a) != request_key("m", b) != request_key("m", GenerationRequest(prompt="x"))
    assert request_key("m", a) == request_key("m", GenerationRequest(prompt="x", constraint=constraints.forbid_chars("e")))
    again = pickle.loads(pickle.dumps(GenerationRequest(prompt="x", constraint=constraints.json_schema(PERSON))))
    assert again.constraint.describe() == constraints.json_schema(PERSON).describe()


def test_two_predicates_with_different_closures_have_different_descriptions():
    def limit(n):
        return constraints.prefix(lambda t: len(t) < n)
    assert limit(3).describe() != limit(4).describe()


def test_a_backend_that_ignores_the_constraint_is_an_error():
    import policies
    from swarm import sample

    agent = Agent(name="s", backend=Scripted(["hello"]))

    async def program():
        return await sample("x", agent.generate("hi", constraint=constraints.forbid_chars("e")))

    with pytest.raises(Exception, match="did not apply the constraint"):
        policies.Forward(seed=0).run(program)
