"""Probes of generation settings: a misspelt setting is refused naming it, never ignored."""

import pytest
from pydantic import ValidationError

from agents import Agent, GenerationSettings


def test_an_unknown_generation_setting_is_refused_naming_it():
    with pytest.raises(ValidationError, match="max_token"):
        GenerationSettings(max_token=8)  # a typo of max_tokens: it would sample 128 tokens
    with pytest.raises(ValidationError, match="max_token"):
        Agent(name="a", settings={"max_token": 8})


def test_known_generation_settings_still_build_and_compare():
    assert GenerationSettings(max_tokens=8, stop=["\n"]) == GenerationSettings(max_tokens=8, stop=("\n",))


def test_an_infinite_temperature_is_refused():
    with pytest.raises(ValidationError, match="temperature"):
        GenerationSettings(temperature=float("inf"))  # sampled uniformly; JSON cannot carry it to a server


def test_an_empty_stop_string_is_refused():
    with pytest.raises(ValidationError, match="stop strings must be non-empty"):
        GenerationSettings(stop=("\n", ""))  # was accepted and ignored by every backend


@pytest.mark.parametrize("kwargs, message", [({"n_ctx": "512"}, "n_ctx must be an int, got str '512'"),
                                             ({"n_seq_max": 2.5}, "n_seq_max must be an int, got float 2.5"),
                                             ({"seed": "x"}, "seed must be an int, got str 'x'"),
                                             ({"chat_format": 3}, "chat_format must be a str")])
def test_llama_cpp_arguments_of_the_wrong_type_are_named(kwargs, message):
    from agents import LlamaCpp

    with pytest.raises(TypeError, match=message):  # was "'<=' not supported between 'str' and 'int'", or accepted
        LlamaCpp(**kwargs)


def test_an_unknown_chat_format_stops_the_run():
    """On one branch: a ValueError killed only the particles that generated, and the run answered
    the other branch's marginal ({False: 1.0}) as if nothing were wrong."""
    import policies
    from agents import Agent, LlamaCpp
    from agents.backends.llama_model import UnknownChatFormat
    from swarm import Bernoulli, sample

    agent = Agent(name="a", backend=LlamaCpp(chat_format="no-such-format"), settings=GenerationSettings(max_tokens=2))

    async def program():
        x = sample("x", Bernoulli(0.5))
        if x:
            await sample("reply", agent.generate("hi"))
        return x

    with pytest.raises(UnknownChatFormat, match="unknown chat_format 'no-such-format'"):
        policies.SMC(num_particles=4, seed=0).run(program)
