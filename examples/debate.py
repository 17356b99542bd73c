"""Debate: two debaters and a calibrated judge on reading-comprehension questions, with SMC over
debates. The agents run on one Ray actor pool that hosts the embedded SmolLM2-135M model; the
debates (particles) run on Ray segment workers.

Each debate reads a two-sentence story and a question (the last story has a distractor of the same
kind: "Tom wore a red hat. Anna wore a blue scarf."). Every round, Alice answers (seeing Bob's last challenge), Bob proposes a rival
answer, and the judge copies the sentence of the story that settles the question; its verdict ŷ
is "Alice's answer is in that sentence and Bob's is not". Every message is an `interact` event and
every generation a `sample` event of the debate's trace.

The judge is a measurement channel (docs/theory.md §8): `Judge.calibrate` measures its
sensitivity q₁ = P(ŷ=1 | Alice right) and specificity q₀ = P(ŷ=0 | Alice wrong) on labelled
debate states from *other* stories, and its factor is the posterior log P(C=1 | ŷ) under a prior θ.
The program approximates

    p(τ) ∝ π(τ) · P(C=1 | ŷ_R(τ)),     p(a) = Σ_τ p(τ) 1[Alice's final answer in τ is a],

the debates conditioned on the judge's calibrated belief that Alice's final answer is right. The
verdicts of earlier rounds enter as shaping factors (twists that telescope away), so SMC resamples
*between rounds*: debates the judge currently rejects are replaced by copies of accepted ones,
which then continue independently. A judge with J = q₀ + q₁ − 1 near 0 gives flat weights: the
calibration line says how much the judge can be trusted, and the factor trusts it exactly that much.

    python examples/debate.py [--particles 6] [--rounds 2] [--runtime ray|local]
    swarm run examples/debate.py                      (one story; the judge keeps the given, unmeasured
                                                       calibration q0 = q1 = 0.75, as `main` is not run)
"""

from __future__ import annotations

from swarm.agents_package import require_own_agents

require_own_agents()  # a clear error if another `agents` package (openai-agents) shadows plp-swarm's

import argparse
import contextlib
import re
import sys
from typing import Any, Iterator, NamedTuple

import policies
from agents import Agent, GenerationSettings
from agents.ray_hosting import RayHosting
from policies.potentials import Calibration, Judge
from swarm import auto_name, factor, interact, sample


class Case(NamedTuple):
    """What the judge sees: the story, the question, Alice's answer and Bob's rival answer."""

    story: str
    question: str
    answer: str
    rival: str


# (story, question, right answer, a wrong answer); the last story has a distractor of the same kind
STORIES = [
    ("Ben ate an apple for lunch. Then he went back to school.", "What did Ben eat for lunch?", "apple", "pear"),
    ("The train to Paris was late. Many people waited on the platform.", "Where was the train going?", "Paris", "Rome"),
    ("Tom wore a red hat. He walked to the park with his dog.", "What color was Tom's hat?", "red", "blue"),
    ("Tom wore a red hat. Anna wore a blue scarf.", "What color was Tom's hat?", "red", "blue"),
]
CALIBRATION_STORIES = [
    ("Anna has a dog named Max. She walks him every day.", "What is the name of Anna's dog?", "Max", "Rex"),
    ("The bakery opens at seven. It sells bread and cakes.", "When does the bakery open?", "seven", "nine"),
    ("Sam drove a green truck to work. His wife took the bus.", "What did Sam drive?", "truck", "bus"),
    ("Lucy planted roses in her garden. It rained all week.", "What did Lucy plant?", "roses", "tulips"),
    ("Mia's cat is called Luna. Her fish is called Bob.", "What is Mia's cat called?", "Luna", "Bob"),
    ("The meeting is on Friday. Everyone must bring a pen.", "When is the meeting?", "Friday", "Monday"),
    ("Jack bought six eggs and two bottles of milk.", "How many eggs did Jack buy?", "six", "two"),
    ("Zoe swam in the lake. The water was cold.", "Where did Zoe swim?", "lake", "pool"),
]
SHOTS = [("Kim has a black bike. Her brother has a white car.", "What color is Kim's bike?", "black", "white"),
         ("Leo sang a song on Monday. Eva read a book on Tuesday.", "What did Eva do?", "read a book", "sang a song")]
"""Few-shot examples (vocabulary disjoint from the stories): the right answer and the distractor."""
ALICE_SHOTS = "".join(f"Story: {s}\nQuestion: {q}\nBob says: {b}\nAnswer: {a}\n\n" for s, q, a, b in
                      [*SHOTS, ("Max ate soup at noon. Ida ate rice at night.", "What did Ida eat?", "rice", "rice")])
ALICE_PROMPT = ALICE_SHOTS + "Story: {story}\nQuestion: {question}\n{challenge}Answer:"
BOB_SHOTS = "".join(f"Story: {s}\nQuestion: {q}\nAlice says: {a}\nAnother answer: {b}\n\n" for s, q, a, b in SHOTS)
BOB_PROMPT = BOB_SHOTS + "Story: {story}\nQuestion: {question}\nAlice says: {answer}\nAnother answer:"
JUDGE_SHOTS = "".join(f"Story: {s}\nQuestion: {q}\nClaims: {b}, {a}\nSentence that answers it: {s.split('. ')[i]}.\n\n"
                      .replace("..", ".") for i, (s, q, a, b) in enumerate(SHOTS))
JUDGE_PROMPT = JUDGE_SHOTS + "Story: {story}\nQuestion: {question}\nClaims: {answer}, {rival}\nSentence that answers it:"

SHARED_MODEL = RayHosting(name="smollm2", max_concurrency=16)
"""One Ray actor serves all three roles (one copy of the model); roles differ only in their prompts."""
SPEAK = GenerationSettings(temperature=1.0, max_tokens=8, stop=("\n",))
ALICE = Agent(name="alice", settings=SPEAK)
BOB = Agent(name="bob", settings=SPEAK)
JUDGE_AGENT = Agent(name="judge", settings=GenerationSettings(temperature=0.0, max_tokens=24, stop=("\n",)))
JUDGE_PRIOR = 0.5
"""θ = P(Alice's answer is right) under π, the prior of the judge's posterior factor."""
POLICY = policies.SMC(num_particles=6, ess_threshold=0.95, seed=0)
"""ess_threshold 0.95: resample in (nearly) every round where the verdicts differ; with the measured
judge below, one rejection among six debates gives ESS/N ≈ 0.91."""
DEFAULTS = {"args": {"story": STORIES[0][0], "question": STORIES[0][1]}}


def normalize(text: str) -> str:
    """Lower case, letters and digits only, no leading article: "The Red hat." → "red hat"."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    while words and words[0] in ("a", "an", "the"):
        words = words[1:]
    return " ".join(words)


def mentions(text: str, answer: str) -> bool:
    """Whether every word of `answer` occurs in `text` (both normalised); never for an empty answer."""
    words = normalize(answer).split()
    return bool(words) and all(w in normalize(text).split() for w in words)


async def speak(agent: Agent, to: str, prompt: str) -> str:
    """One message: a sampled completion of the agent's prompt, recorded as sample + interact events."""
    site = auto_name(agent.name)
    text = (await sample(site, agent.generate(raw_prompt=prompt))).strip()
    interact(agent.name, to, text, name=f"{site}/says")
    return text


def sentences(story: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", story) if s.strip()]


def closest_sentence(text: str, story: str) -> str:
    """The story's sentence sharing the most words with `text` (the first among ties): the judge may
    only cite the story, so a paraphrase or a half-invented sentence is snapped to what it resembles."""
    words = set(normalize(text).split())
    return max(sentences(story), key=lambda s: len(words & set(normalize(s).split())))


async def judge_verdict(case: Case) -> bool:
    """ŷ: the judge cites the deciding sentence; Alice's answer is in it and Bob's (if different) is not."""
    cited = await speak(JUDGE_AGENT, "moderator", JUDGE_PROMPT.format(**case._asdict()))
    evidence = closest_sentence(cited, case.story)
    rival_differs = normalize(case.rival) != normalize(case.answer)
    return mentions(evidence, case.answer) and not (rival_differs and mentions(evidence, case.rival))


JUDGE = Judge(name="judge", fn=judge_verdict, prior=JUDGE_PRIOR, calibration=Calibration(q0=0.75, q1=0.75))
"""Replaced by a measured calibration in `main`; this given one (m = 0) lets `swarm run` work alone."""


async def program(story: str, question: str, rounds: int = 2) -> str:
    """One debate: per round Alice answers, Bob challenges, the judge's calibrated verdict weighs it."""
    answer = rival = ""
    for r in range(rounds):
        challenge = f"Bob says: {rival}\n" if rival else ""
        answer = await speak(ALICE, "bob", ALICE_PROMPT.format(story=story, question=question, challenge=challenge))
        rival = await speak(BOB, "alice", BOB_PROMPT.format(story=story, question=question, answer=answer))
        verdict = await JUDGE.verdict(Case(story, question, answer, rival))
        factor(f"judge/round{r}", JUDGE.potential(verdict), shaping=r < rounds - 1)
    return normalize(answer)


def calibration_examples() -> list[tuple[Case, bool]]:
    """Labelled debate states from the calibration stories: Alice right against a wrong rival, Alice
    wrong against the right rival, Alice wrong with a non-answer."""
    out = []
    for story, question, right, distractor in CALIBRATION_STORIES:
        out += [(Case(story, question, right, distractor), True), (Case(story, question, distractor, right), False),
                (Case(story, question, "nothing", right), False)]
    return out


@contextlib.contextmanager
def ray_session(runtime: str) -> Iterator[None]:
    """Under runtime="ray": a local Ray instance for the whole example, with the agents on one shared
    actor pool; it and the pool are shut down at the end (only what this function started)."""
    if runtime != "ray":
        yield
        return
    import ray

    from agents.ray_hosting import shutdown_agent_pools
    from swarm.ray_runtime import local_init_kwargs, loopback_only

    from ray import cloudpickle

    if __name__ != "__main__":  # imported (e.g. by a test): workers cannot import this file, ship it by value
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        with loopback_only():
            ray.init(**local_init_kwargs())
    hostings = {a.name: a.hosting for a in (ALICE, BOB, JUDGE_AGENT)}
    for agent in (ALICE, BOB, JUDGE_AGENT):
        agent.hosting = SHARED_MODEL
    try:
        yield
    finally:
        for agent in (ALICE, BOB, JUDGE_AGENT):
            agent.hosting = hostings[agent.name]
        shutdown_agent_pools()
        if started:
            ray.shutdown()


def correct(answer: str, right: str, distractor: str) -> bool:
    return mentions(answer, right) and not mentions(answer, distractor)


def debate(story: tuple[str, str, str, str], args: argparse.Namespace) -> dict[str, Any]:
    text, question, right, distractor = story
    smc = POLICY.model_copy(update={"num_particles": args.particles, "seed": args.seed, "runtime": args.runtime})
    r = smc.run(program, text, question, args.rounds)
    marginal = r.marginal()
    p_right = sum(p for a, p in marginal.items() if correct(a, right, distractor))
    top = ", ".join(f"{a!r}: {p:.2f}" for a, p in list(marginal.items())[:4])
    resampled = sum(s.resampled for s in r.diagnostics.steps)
    print(f"\n{text} {question}  (truth {right!r})")
    print(f"  answer marginal {{{top}}}")
    print(f"  p(right answer) = {p_right:.2f}   log Z = {r.log_evidence:.3f}   ESS = {r.ess:.1f} / {len(r.particles)}   "
          f"resampled at {resampled} of {len(r.diagnostics.steps)} steps   tokens = {r.diagnostics.tokens}")
    return {"story": text, "truth": right, "marginal": marginal, "p_right": p_right, "log_evidence": r.log_evidence,
            "ess": r.ess, "particles": r.particles, "tokens": r.diagnostics.tokens}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=POLICY.num_particles, help="debates per story")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stories", type=int, default=len(STORIES), help=f"how many of the {len(STORIES)}")
    parser.add_argument("--calibration", type=int, default=len(CALIBRATION_STORIES),
                        help=f"calibration stories (of {len(CALIBRATION_STORIES)}), 3 labelled states each")
    parser.add_argument("--runtime", choices=["ray", "local"], default="ray")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with ray_session(args.runtime):
        examples = calibration_examples()[:3 * args.calibration]
        cal = JUDGE.calibrate(examples)
        print(f"judge calibration on {len(examples)} labelled debate states: q1 = {cal.q1:.2f} (m1 = {cal.m1}), "
              f"q0 = {cal.q0:.2f} (m0 = {cal.m0}), Youden J = {cal.youden:.2f}; factor log P(C=1|ŷ): "
              f"{JUDGE.potential(True):+.2f} if accepted, {JUDGE.potential(False):+.2f} if rejected (prior θ = {JUDGE_PRIOR})")
        results = [debate(story, args) for story in STORIES[:args.stories]]
    hits = sum(correct(next(iter(r["marginal"])), right, distractor)
               for r, (_, _, right, distractor) in zip(results, STORIES))
    print(f"\nmost probable answer right in {hits} of {len(results)} stories "
          f"(runtime {args.runtime}; agents {'on one Ray actor' if args.runtime == 'ray' else 'in process'})")
    return {"calibration": cal, "stories": results, "hits": hits}


if __name__ == "__main__":
    main()
