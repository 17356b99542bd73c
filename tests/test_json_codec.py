"""agents.json_codec: orjson only where it writes what the standard library writes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from agents.backends.base import Completion, ToolCall, Usage
from agents.cache import ResponseCache, _line
from agents.json_codec import dumps_exact, finite_plain, loads


def _same(a, b) -> bool:
    """Equal, with NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("value", [
    {"lp": [-0.5, -1.25, -3.0]},
    {"lp": [-0.5, -math.inf, -3.0]},          # orjson alone would write null here
    {"lp": -math.inf, "w": math.inf},
    {"lp": [math.nan]},
    {"big": 2**70, "small": [1, 2, 3]},        # beyond orjson's 64-bit ints
    {"tokens": ["a", "b", 3.5, None], "nested": {"x": [1.0, -math.inf]}},
    {"tuple": (1.0, "a"), "bool": True, "none": None},
    {"numpy": [np.float64(0.5), np.float64(-np.inf)]},
])
def test_dumps_exact_decodes_to_what_the_standard_library_writes(value):
    expected = json.loads(json.dumps(value))
    assert _same(loads(dumps_exact(value)), expected)


def test_non_finite_floats_and_odd_types_take_the_standard_library():
    assert finite_plain({"a": [1.0, 2.0], "b": ["x", "y"], "c": {"d": 1}})
    assert not finite_plain({"a": [1.0, -math.inf]})
    assert not finite_plain({"a": [math.inf, -math.inf]})  # their sum is NaN
    assert not finite_plain({"a": math.nan})
    assert not finite_plain({1: "int key"})  # orjson refuses it; json writes "1"
    assert not finite_plain({"a": np.float64(1.0)})
    assert dumps_exact({"a": -math.inf}) == b'{"a": -Infinity}'


def test_a_journal_line_keeps_minus_infinity_and_every_field(tmp_path):
    completion = Completion(text="a b", tokens=["a", " b"], token_logprobs=[-0.25, -math.inf], stop_log_prob=-1.5,
                            usage=Usage(input_tokens=3, output_tokens=2), tool_calls=[ToolCall(id="1", name="f", arguments="{}")],
                            served_by={"pid": 7})
    assert b"-Infinity" in _line("k", completion)
    path = tmp_path / "responses.jsonl"
    path.write_bytes(_line("k", completion) + _line("k2", completion.model_copy(update={"token_logprobs": [-0.25, -0.5]})))
    cache = ResponseCache(journal=path)
    assert cache.loaded == 2
    assert cache._loaded["k"].token_logprobs == [-0.25, -math.inf]
    assert cache._loaded["k"] == completion
    assert cache._loaded["k2"].token_logprobs == [-0.25, -0.5]


def test_a_typical_completion_takes_the_fast_path():
    """The journal's speed rests on this: every field of an ordinary completion (tokens, finite
    log-probabilities, usage, tool calls) is one orjson writes as json does. A new field of another
    kind would send every line to the standard library (5x slower) without failing anything else."""
    from agents.backends.http_reply import OpenAICompletion
    from agents.backends.llama_chunks import LlamaCppCompletion

    for cls in (Completion, OpenAICompletion, LlamaCppCompletion):
        completion = cls(text="a b", tokens=["a", " b"], token_logprobs=[-0.25, -0.5], base_token_logprobs=[-0.2, -0.4],
                         usage=Usage(input_tokens=3, output_tokens=2),
                         tool_calls=[ToolCall(id="1", name="f", arguments="{}")])
        assert finite_plain({"key": "k", "completion": completion.__dict__}), cls.__name__
