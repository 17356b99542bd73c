"""A small program with an exact answer, for `swarm mcp` tests: two dice, their sum at least
`at_least`; the program returns the first die.

    swarm mcp tests/mcp_servers/dice_program.py:program --policy enumerate

Exact: p(first = d | sum ≥ k) and Z = P(sum ≥ k) under two fair dice.
"""

from swarm import Categorical, guarantee, sample


def program(at_least: int = 8):
    """Roll two dice, keep the rolls whose sum is at least `at_least`; return the first die."""
    first = sample("first", Categorical([1, 2, 3, 4, 5, 6]))
    second = sample("second", Categorical([1, 2, 3, 4, 5, 6]))
    guarantee("sum", first + second >= at_least)
    return first
