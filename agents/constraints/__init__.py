"""Token-level constraints and potentials applied inside the proposal, with exact weights.

    from agents import constraints
    word = await sample("w", writer.generate(prompt, unit="word", constraint=constraints.forbid_chars("eE")))

Constructors: `forbid_chars`, `forbid_substrings`, `regex`, `json_schema`, `grammar` (Lark or GBNF),
`prefix(fn)` (a user predicate), `Potential` (soft potentials: subclass it), and their conjunction
`all_of(a, b)` / `a & b`. See `agents.constraints.base` for the math and docs/constraints.md for
when to use a constraint in the proposal and when a `factor`/`guarantee` after the fact.
"""

from agents.constraints.base import Constraint, ConstraintError, GuidedDraw
from agents.constraints.combine import all_of
from agents.constraints.contract import assert_potential_contract
from agents.constraints.engine import grammar, json_schema, regex
from agents.constraints.guide import Guide
from agents.constraints.potentials import Potential, prefix
from agents.constraints.report import ConstraintReport
from agents.constraints.substrings import forbid_chars, forbid_substrings
from agents.constraints.vocabulary import Vocabulary

__all__ = ["Constraint", "ConstraintError", "ConstraintReport", "Guide", "GuidedDraw", "Potential", "Vocabulary",
           "all_of", "assert_potential_contract", "forbid_chars", "forbid_substrings", "grammar", "json_schema",
           "prefix", "regex"]
