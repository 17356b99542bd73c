"""Constrained generation: a sentence that never uses the letter "o" (a lipogram), on the embedded
SmolLM2-135M model, by SMC over words, compared live with best-of-N at the same token budget.

The program generates the sentence one word per step (`unit="word"`) and guarantees after every
word that it has no "o". It approximates the target

    p(τ) ∝ π(τ) · Π_i 1[word_i has no "o"],

where π is the model writing the sentence word by word. SMC resamples between words: a particle
whose last word broke the constraint dies at once and a surviving one takes its place, so the
compute goes to prefixes that can still succeed. Best-of-N samples whole sentences from π and keeps
those that happen to satisfy the constraint (rejection): with a small model and a letter as common
as "o", none of a dozen did in a probe. Both get the same number of generated tokens.

    python examples/constrained_smc.py [--particles 12] [--topic "the sea"]
    swarm run examples/constrained_smc.py
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import policies
from agents import Agent, GenerationSettings
from swarm import NoSurvivingParticles, guarantee, sample

LETTER = "o"
WRITER = Agent(name="writer", system="You write one short, simple sentence.",
               settings=GenerationSettings(temperature=1.0, max_tokens=24))
POLICY = policies.SMC(num_particles=12, ess_threshold=0.5, seed=0)


def ends_sentence(word: str) -> bool:
    return word.rstrip().endswith((".", "!", "?"))


async def program(topic: str = "the sea", max_words: int = 10) -> str:
    """SMC's program: one `sample` and one `guarantee` per word."""
    text = ""
    for i in range(max_words):
        word = await sample(f"word{i}", WRITER.generate(f"Write one sentence about {topic}.", prefix=text,
                                                       unit="word", max_tokens=6))
        text += word
        guarantee(f"no_{LETTER}_{i}", LETTER not in word.lower())
        if not word.strip() or ends_sentence(word):
            break
    return text.strip()


async def whole_sentence(topic: str = "the sea") -> str:
    """Best-of-N's program: the whole sentence at once, checked at the end."""
    text = await sample("sentence", WRITER.generate(f"Write one sentence about {topic}.", stop=("\n",)))
    guarantee(f"no_{LETTER}", LETTER not in text.lower())
    return text.strip()


def best_of_n_same_budget(topic: str, tokens: int, seed: int = 0) -> tuple[int, int, list[str]]:
    """Sample whole sentences until `tokens` are spent: (valid, drawn, valid sentences)."""
    try:
        r = policies.Importance(num_particles=10_000, batch_size=1, seed=seed,
                                budget=policies.Budget(max_tokens=tokens)).run(whole_sentence, topic)
    except NoSurvivingParticles as exc:
        drawn = sum(exc.causes.values())
        return 0, drawn, []
    valid = [p.value for p in r.particles if p.log_weight > -math.inf]
    return len(valid), len(r.particles), valid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=POLICY.num_particles)
    parser.add_argument("--topic", default="the sea")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/constrained_smc", help="directory for the trace and report")
    args = parser.parse_args(argv)

    from observability.progress import ProgressListener
    from observability.trace_file import TraceFileWriter

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trace_path = out / "trace.jsonl"
    writer = TraceFileWriter(trace_path)
    smc = POLICY.model_copy(update={"num_particles": args.particles, "seed": args.seed,
                                    "listeners": [ProgressListener(), writer]})
    result = smc.run(program, args.topic)
    writer.close()

    print(f'\nSMC, {args.particles} particles, one word per step, no "{LETTER}" in any word:')
    for sentence, p in list(result.marginal().items())[:5]:
        print(f"  {p:6.3f}  {sentence}")
    print(f"  log Z = {result.log_evidence:.3f}   ESS = {result.ess:.1f}   "
          f"tokens = {result.diagnostics.tokens}   LLM calls = {result.diagnostics.llm_calls}")

    valid, drawn, sentences = best_of_n_same_budget(args.topic, result.diagnostics.tokens, args.seed)
    print(f"\nBest-of-N with the same {result.diagnostics.tokens} tokens: {valid} of {drawn} whole sentences "
          f'have no "{LETTER}"' + (f"; e.g. {sentences[0]!r}" if sentences else ""))

    report = out / "report.html"
    try:
        from observability.report import write_report

        write_report(trace_path, report)
        print(f"\ntrace: {trace_path}\nreport: {report}")
    except ImportError:
        print(f"\ntrace: {trace_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
