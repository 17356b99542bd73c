"""The its-hub side of bench/peer_its_hub.py; runs with .venv-bench's python (its-hub + stdlib).

its-hub's algorithms, unchanged, on the quality tasks of bench/tasks.py, against the same
llama.cpp server and the same prompts as plp-swarm's side:
- sentence: `BestOfN` with an outcome reward = `tasks.sentence_ok` (1/0), and `ParticleFiltering`
  (`StepGeneration(tokens_per_step=STEP_TOKENS, stop_token=".")`) with a process reward =
  `tasks.prefix_score` (every complete word so far avoids the letter);
- arithmetic: `SelfConsistency` voting on `tasks.extract_answer`, and `BestOfN` with an outcome
  reward = `tasks.work_score` (the same verifier of the work plp-swarm's programs use as Φ).

The language model is `RawCompletionLM`, an `AbstractLanguageModel` (its-hub's documented extension
point) that sends the user message as a raw prompt to `/v1/completions`, continuing a trailing
assistant message. Why not its-hub's `OpenAICompatibleLanguageModel`: it only speaks
`/chat/completions`, and llama.cpp's server ignores `continue_final_message`, so a partial
assistant message is closed and a *new* reply begins (its step generation cannot continue a
prefix), and chat templating would not give both libraries the same tokens. Sampling is plain
(temperature 1, top_p 1, top_k 0, min_p 0, repeat_penalty 1) on both sides; tokens are what the
server reports.

    .venv-bench/bin/python bench/its_hub_side.py --base-url http://127.0.0.1:PORT/v1 --problems 4 --n 6 [--start 0]
Prints one JSON object: {"sentence": {policy: [outcome…]}, "arithmetic": {…}, "version": "…"}.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import tasks  # noqa: E402  (stdlib only)

STEP_TOKENS = 3
PLAIN_SAMPLING = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}


def _its_hub():
    import its_hub
    from its_hub.api import AbstractLanguageModel, AbstractOutcomeRewardModel, AbstractProcessRewardModel

    return its_hub, AbstractLanguageModel, AbstractOutcomeRewardModel, AbstractProcessRewardModel


_, AbstractLanguageModel, AbstractOutcomeRewardModel, AbstractProcessRewardModel = _its_hub()


class RawCompletionLM(AbstractLanguageModel):
    """/v1/completions with prompt = user content + (trailing assistant content); counts tokens."""

    def __init__(self, base_url: str, max_tokens: int, stop: list[str] | None, temperature: float = 1.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/completions"
        self.max_tokens, self.stop, self.temperature = max_tokens, stop, temperature
        self.completion_tokens = 0
        self.calls = 0
        self._session: Any = None

    @staticmethod
    def _prompt(messages: list[Any]) -> str:
        def text(m: Any) -> str:
            return (m.content if hasattr(m, "content") else m.get("content")) or ""

        def role(m: Any) -> str:
            return m.role if hasattr(m, "role") else m.get("role")

        user = next(text(m) for m in messages if role(m) == "user")
        tail = text(messages[-1]) if role(messages[-1]) == "assistant" else ""
        return user + tail

    async def _post(self, messages: list[Any], stop: Any, max_tokens: int | None, temperature: Any) -> dict:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
        stops = stop if stop is not None else self.stop
        body = {"model": "smollm2", "prompt": self._prompt(messages), "max_tokens": max_tokens or self.max_tokens,
                "temperature": self.temperature if temperature is None else temperature, "top_p": 1.0,
                **PLAIN_SAMPLING}
        if stops:
            body["stop"] = [stops] if isinstance(stops, str) else list(stops)
        async with self._session.post(self.url, json=body) as response:
            data = await response.json()
        self.calls += 1
        self.completion_tokens += int(data.get("usage", {}).get("completion_tokens", 0))
        return {"role": "assistant", "content": data["choices"][0]["text"]}

    async def agenerate_single(self, messages, stop=None, max_tokens=None, max_completion_tokens=None,
                               temperature=None, **kwargs) -> dict:
        return await self._post(messages, stop, max_completion_tokens or max_tokens, temperature)

    async def agenerate(self, messages_or_messages_lst, stop=None, max_tokens=None, max_completion_tokens=None,
                        temperature=None, **kwargs):
        single = not isinstance(messages_or_messages_lst[0], list)
        batch = [messages_or_messages_lst] if single else messages_or_messages_lst
        temps = temperature if isinstance(temperature, list) else [temperature] * len(batch)
        out = await asyncio.gather(*(self._post(m, stop, max_completion_tokens or max_tokens, t)
                                     for m, t in zip(batch, temps)))
        return out[0] if single else list(out)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _content(message: Any) -> str:
    return (message.content if hasattr(message, "content") else message.get("content")) or ""


class FunctionORM(AbstractOutcomeRewardModel):
    """An outcome reward from a Python function of the candidate's text."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def score(self, messages, **kwargs):
        return [self.fn(_content(conv[-1])) for conv in messages]

    async def ascore(self, messages, orchestrator=None, **kwargs):
        return self.score(messages)


class PrefixPRM(AbstractProcessRewardModel):
    """A process reward: `tasks.prefix_score` of each partial response."""

    def score(self, prompt_or_messages, steps):
        return [tasks.prefix_score(s) for s in steps]

    async def ascore(self, prompt_or_messages, steps):
        return self.score(prompt_or_messages, steps)


async def _solve(algorithm: Any, lm: RawCompletionLM, prompt: str, budget: int) -> tuple[str, float]:
    tasks.cold_server(lm.base_url)  # every measured run starts from the same server cache (not timed)
    start = time.perf_counter()
    result = await algorithm.ainfer(lm, prompt, budget=budget, return_response_only=True)
    return _content(result), time.perf_counter() - start


async def sentence(base_url: str, problems: int, n: int, start: int = 0) -> dict[str, list[dict]]:
    from its_hub import BestOfN, StepGeneration
    from its_hub.core.algorithms.particle_gibbs import ParticleFiltering

    out: dict[str, list[dict]] = {"BestOfN": [], "ParticleFiltering": []}
    for topic in tasks.TOPICS[start:start + problems]:
        prompt = tasks.sentence_prompt(topic)
        runs = {"BestOfN": (BestOfN(FunctionORM(lambda t: float(tasks.sentence_ok(t)))),
                            RawCompletionLM(base_url, 32, ["\n"])),
                "ParticleFiltering": (ParticleFiltering(StepGeneration(max_steps=tasks.MAX_WORDS,
                                                                       tokens_per_step=STEP_TOKENS, stop_token=".",
                                                                       temperature=1.0), PrefixPRM()),
                                      RawCompletionLM(base_url, STEP_TOKENS, None))}
        for name, (algorithm, lm) in runs.items():
            text, seconds = await _solve(algorithm, lm, prompt, n)
            await lm.close()
            out[name].append({"answer": text.strip(), "ok": tasks.sentence_ok(text), "tokens": lm.completion_tokens,
                              "calls": lm.calls, "seconds": seconds})
            print(f"its-hub sentence {name}: ok={tasks.sentence_ok(text)} tokens={lm.completion_tokens} "
                  f"{seconds:.1f}s {text.strip()!r}", file=sys.stderr, flush=True)
    return out


async def arithmetic(base_url: str, problems: int, n: int, start: int = 0) -> dict[str, list[dict]]:
    from its_hub import BestOfN, SelfConsistency

    out: dict[str, list[dict]] = {"BestOfN": [], "SelfConsistency": []}
    for question, truth in tasks.PROBLEMS[start:start + problems]:
        prompt = tasks.arithmetic_prompt(question)
        runs = {"BestOfN": BestOfN(FunctionORM(lambda t, q=question: tasks.work_score(q, t))),
                "SelfConsistency": SelfConsistency(consistency_space_projection_func=tasks.extract_answer)}
        for name, algorithm in runs.items():
            lm = RawCompletionLM(base_url, 24, ["\n"])
            text, seconds = await _solve(algorithm, lm, prompt, n)
            await lm.close()
            answer = tasks.extract_answer(text)
            out[name].append({"answer": answer, "ok": answer == truth, "tokens": lm.completion_tokens,
                              "calls": lm.calls, "seconds": seconds})
            print(f"its-hub arithmetic {name}: ok={answer == truth} tokens={lm.completion_tokens} {seconds:.1f}s "
                  f"answer={answer}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--n", type=int, default=6, help="samples / particles (its-hub's budget)")
    parser.add_argument("--start", type=int, default=0, help="index of the first problem of each task")
    args = parser.parse_args()
    result = {"sentence": asyncio.run(sentence(args.base_url, args.problems, args.n, args.start)),
              "arithmetic": asyncio.run(arithmetic(args.base_url, args.problems, args.n, args.start)),
              "version": importlib.metadata.version("its_hub")}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
