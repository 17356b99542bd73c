"""`agents.backends.contract.check_backend` against every built-in backend: `Scripted` (a test
double: no honest log-probabilities), `LlamaCpp` on the embedded model (its tempered proposal is
exact, so the sampling-frequency check runs at temperature 0.5) and `OpenAICompatible` against a real
llama.cpp server on 127.0.0.1 in both modes (exact log q at temperature 1 only: the server reports
raw model log-probabilities). And the contract fails on deliberately broken backends.
"""

from __future__ import annotations

import math
import threading

import pytest

import agents.backends
from agents.backends.base import Completion, GenerationRequest
from agents.backends.contract import BackendClaims, BackendContractViolation, check_backend
from agents.backends.scripted import Scripted, fake_tokens


def _seeded_reply(request: GenerationRequest) -> str:
    """A scripted reply that depends on the seed, as a sampler's would."""
    words = ["four", "five", "six", "and", "or"]
    seed = request.seed or 0
    return f" {words[seed % 5]} {words[(seed // 5) % 5]} more\nsecond line\n"


CHECKED = {"Scripted", "LlamaCpp", "OpenAICompatible"}


def test_every_built_in_backend_is_under_contract():
    assert set(agents.backends.BUILT_IN) == CHECKED


def test_scripted_keeps_the_contract_of_a_test_double():
    report = check_backend(Scripted(_seeded_reply), BackendClaims(honest_logprobs=False))
    assert {"identity", "chat", "raw"} <= set(report)


@pytest.mark.llm
def test_llama_cpp_on_the_embedded_model_keeps_the_contract():
    from agents.backends.llama_cpp import LlamaCpp

    report = check_backend(LlamaCpp(), BackendClaims(temperature=0.5))
    assert "log-probabilities" in report


@pytest.fixture(scope="module")
def llama_server_url():
    from agents.backends.embedded import embedded_model_path
    from tests.llama_server import llama_server_available, start_llama_server

    if not llama_server_available():
        pytest.skip("llama_cpp.server is not installed (pip install 'llama-cpp-python[server]')")
    with start_llama_server(embedded_model_path()) as (base_url, _process):
        yield base_url


@pytest.mark.server
@pytest.mark.llm
@pytest.mark.parametrize(("mode", "claims", "draws"), [("completions", BackendClaims(chat=False), 100),
                                                       ("chat", BackendClaims(raw_prompts=False), 0)])
def test_openai_compatible_against_a_real_llama_server_keeps_the_contract(llama_server_url, mode, claims, draws):
    """Sampling frequencies are measured once, through the completions endpoint (the same server
    samples for both); the chat endpoint gets every other check."""
    from agents.backends.openai_compat import LLAMA_CPP_PLAIN_SAMPLING, OpenAICompatible

    backend = OpenAICompatible(llama_server_url, "smollm2", mode=mode, timeout=120, max_retries=1,
                               extra_body=LLAMA_CPP_PLAIN_SAMPLING)
    report = check_backend(backend, claims, draws=draws)
    assert (mode == "chat") != ("log-probabilities" in report)


# -- the contract can fail --------------------------------------------------------------------------
class _IgnoresSeeds(Scripted):
    """Returns the same text whatever the seed (what a backend that drops the seed does)."""


class _WrongPosition(Scripted):
    """A sampler that reports, for each token, the log-probability of a different one: here a coin
    drawn with probabilities 0.8 / 0.2 whose reported log q are swapped."""

    async def complete(self, request: GenerationRequest) -> Completion:
        greedy = request.settings.temperature == 0.0
        heads = greedy or (request.seed or 0) * 0.6180339887 % 1.0 < 0.8  # equidistributed over seeds
        text = " heads" if heads else " tails"
        logq = 0.0 if greedy else math.log(0.2 if heads else 0.8)
        return Completion(text=text, tokens=fake_tokens(text), token_logprobs=[logq])


class _IgnoresUnits(Scripted):
    """Always generates whole texts, whatever `unit` asks for."""

    async def complete(self, request: GenerationRequest) -> Completion:
        whole = request.settings.model_copy(update={"unit": "text"})
        return await super().complete(request.model_copy(update={"settings": whole}))


class _Unpicklable(Scripted):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()  # cannot be pickled, as LlamaCpp's could not


@pytest.mark.parametrize(("backend", "claims", "match"), [
    (_IgnoresSeeds([" four five\n"]), BackendClaims(honest_logprobs=False), "the seed is ignored"),
    (Scripted([" four five\n", " six seven\n"]), BackendClaims(honest_logprobs=False), "the same chat request"),
    (_WrongPosition([""]), BackendClaims(seeded=False, units=()), "was drawn"),
    (_Unpicklable(_seeded_reply), BackendClaims(honest_logprobs=False), "cannot be pickled"),
    (_IgnoresUnits(_seeded_reply), BackendClaims(honest_logprobs=False, units=("word",)),
     "unit='word' returned several words"),
])
def test_the_contract_catches_a_broken_backend(backend, claims, match):
    with pytest.raises(BackendContractViolation, match=match):
        check_backend(backend, claims)
