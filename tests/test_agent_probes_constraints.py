"""Probes of token-level constraints: a potential judges the text the reply will read."""

import math

import numpy as np

from agents import constraints
from agents.constraints import Vocabulary

# a: text; \x80: a stray continuation byte (never valid UTF-8); \xe2\x82 + \xac: the euro sign in two tokens
VOCAB = Vocabulary([b"a", b"\x80", b"\xe2\x82", b"\xac", b""], eos_ids=[4])
A, STRAY, LEAD, TAIL, EOS = range(5)


def test_a_stray_byte_counts_as_a_character_for_a_predicate():
    """The backend decodes a stray byte as U+FFFD; the predicate saw the text without it, so a model
    could write invalid bytes without end past a length limit (SmolLM2: "Here's a n" + 14 of them)."""
    at_most_one = constraints.prefix(lambda text: len(text) <= 1)
    guide = at_most_one.guide(VOCAB, prefix="a")
    assert guide.log_phi(STRAY) == -math.inf  # was 0: "a\x80" read as "a"
    assert guide.log_phi(LEAD) == 0.0  # an unfinished character: the next token may finish it


def test_a_reply_ending_inside_a_character_is_judged_as_it_reads():
    ascii_only = constraints.prefix(lambda text: text.isascii())
    guide = ascii_only.guide(VOCAB)
    guide.advance(A)
    guide.advance(LEAD)
    assert guide.log_phi(EOS) == -math.inf  # the reply would end "a\ufffd", not "a"
    assert guide.log_phi(TAIL) == -math.inf and guide.log_phi(A) == -math.inf


class Ascii(constraints.Potential):
    """A soft potential, row-evaluated: Φ = 1 for ASCII text, 0.5 otherwise."""

    def prefix(self, text):
        return 1.0 if text.isascii() else 0.5

    complete = prefix


def test_the_contract_and_the_row_agree_on_undecodable_bytes():
    constraints.assert_potential_contract(Ascii(), ["a", "a\u20ac"], vocab=VOCAB)
    state = Ascii().bind(VOCAB).start(b"a\xe2\x82")
    row = state.log_phi_row()
    assert np.isclose(row[EOS], math.log(0.5)) and np.isclose(row[STRAY], math.log(0.5))


def test_a_constraint_a_server_cannot_enforce_stops_the_run():
    """On one branch only: as a plain ValueError it killed the particles that took it, and the run
    returned the others' marginal as if the branch were impossible."""
    import pytest

    import policies
    from agents import Agent, OpenAICompatible
    from swarm import Bernoulli, sample

    agent = Agent(name="a", backend=OpenAICompatible("http://127.0.0.1:9/v1", "m", constraints="llama.cpp"))

    async def program():
        x = sample("x", Bernoulli(0.5))
        if x:
            await sample("reply", agent.generate("hi", constraint=constraints.forbid_chars("e")))
        return x

    with pytest.raises(constraints.ConstraintError, match="cannot enforce the constraint forbid_chars"):
        policies.SMC(num_particles=8, seed=0).run(program)


def test_a_predicate_that_answers_none_is_named_not_read_as_false():
    import pytest

    def forgot_return(text):
        len(text) < 5  # noqa: B015 - the bug this guards against

    with pytest.raises(constraints.ConstraintError, match="the predicate must return True or False, got NoneType"):
        constraints.prefix(forgot_return).guide(VOCAB)  # was Φ = 0 everywhere: every particle died, no reason
    assert constraints.prefix(lambda t: np.bool_(len(t) < 5)).prefix("abc") == 1.0


def test_predicates_that_differ_only_in_bound_arguments_or_state_are_described_apart():
    """The description is the response-cache key: two partials (or two callable objects) of one
    function had one description whatever their arguments."""
    import functools

    def at_most(text, n):
        return len(text) <= n

    class AtMost:
        def __init__(self, n):
            self.n = n

        def __call__(self, text):
            return len(text) <= self.n

    five, fifty = (constraints.prefix(functools.partial(at_most, n=n)).describe() for n in (5, 50))
    assert five != fifty and "at_most" in five  # was "prefix(functools.partial#...)" for both
    assert constraints.prefix(AtMost(5)).describe() != constraints.prefix(AtMost(50)).describe()
    assert constraints.prefix(functools.partial(at_most, n=5)).describe() == five  # still stable
