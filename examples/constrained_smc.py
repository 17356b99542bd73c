"""Constrained generation: a sentence about a cat that never uses the letter "e" (a lipogram), on
the embedded SmolLM2-135M model, by SMC over words with the constraint inside the proposal, compared
with guarantee-only SMC and with best-of-N at the same token budget.

The program writes the sentence one word per step (`unit="word"`). Each word is drawn with
`constraint=forbid_chars("eE")`: the proposal never writes an "e" (every token is drawn from the
model renormalised over the tokens without one) and the site's weight gains the log-mass of the
allowed tokens, log Σ_{v allowed} π(v | prefix), so the target below is unchanged (agents.constraints,
docs/constraints.md). It still guarantees after every word that it has no "e" (always true here; it
is the SMC step) and at the end a complete sentence (a final ".", "!" or "?" after at least
`min_words` words). It approximates

    p(τ) ∝ π(τ) · Π_i 1[word_i has no "e"] · 1[complete sentence],      Z = π(constraint holds),

where π is the model writing the sentence word by word (the same distribution over sentences as
writing it in one go: the word chunks only factor it). Only guarantees weight the trace, so Z is
the probability that the model, left alone, writes such a sentence, and log Ẑ estimates it.

SMC resamples between words on the log-mass weights: a prefix whose every continuation the model
finds unlikely without an "e" loses weight and a likelier prefix takes its place (docs/theory.md §3, §6.1,
the SMC of ARCHITECTURE.md). The comparison, guarantee-only SMC (`guided=False`), proposes words
from π and kills the particles whose word has an "e": most of its proposals are wasted on "The".
Best-of-N draws whole sentences from π and keeps those that happen to satisfy the constraint:
rejection sampling, whose acceptance rate is Z itself. "e" is the commonest letter in English ("the"
alone has one), so whole sentences rarely qualify.

    python examples/constrained_smc.py [--particles 24] [--topic "a cat"] [--letter e]
    swarm run examples/constrained_smc.py [--particles 24] [--trace t.jsonl --html report.html]

Budget: tokens count prompt + completion tokens of every call, as the framework's budgets do; each
SMC word step re-sends the prompt, so equal tokens is conservative for SMC.
"""

from __future__ import annotations

from swarm.agents_package import require_own_agents

require_own_agents()  # a clear error if another `agents` package (openai-agents) shadows plp-swarm's

import argparse
import math
from pathlib import Path
from typing import Any

import policies
from agents import Agent, GenerationSettings, constraints
from swarm import NoSurvivingParticles, guarantee, sample
from swarm.listeners import RunFinished, RunListener

WRITER = Agent(name="writer", system="You write one short, simple sentence.",
               settings=GenerationSettings(temperature=1.0, max_tokens=32))
POLICY = policies.SMC(num_particles=24, ess_threshold=0.5, seed=0)
DEFAULTS = {"args": {"topic": "a cat", "letter": "e"}}


def ends_sentence(text: str) -> bool:
    return text.rstrip().endswith((".", "!", "?"))


def complete(text: str, letter: str, min_words: int) -> bool:
    """The whole-sentence constraint both programs share."""
    return letter not in text.lower() and ends_sentence(text) and len(text.split()) >= min_words


async def program(topic: str = "a cat", letter: str = "e", max_words: int = 16, min_words: int = 5,
                  guided: bool = True) -> str:
    """SMC's program: one `sample` (drawn under the constraint when `guided`) and one `guarantee` per
    word, then the sentence check."""
    prompt = f"Write one sentence about {topic}."
    no_letter = constraints.forbid_chars(letter.lower() + letter.upper()) if guided else None
    text = ""
    for i in range(max_words):
        word = await sample(f"word{i}", WRITER.generate(prompt, prefix=text, unit="word", max_tokens=6,
                                                        constraint=no_letter))
        text += word
        guarantee(f"no_{letter}/word{i}", letter not in word.lower())
        if not word.strip() or ends_sentence(word):
            break
    guarantee("complete_sentence", complete(text, letter, min_words))
    return text.strip()


async def whole_sentence(topic: str = "a cat", letter: str = "e", min_words: int = 5) -> str:
    """Best-of-N's program: the whole sentence at once, checked at the end."""
    text = await sample("sentence", WRITER.generate(f"Write one sentence about {topic}.", stop=("\n",)))
    guarantee(f"no_{letter}_complete_sentence", complete(text, letter, min_words))
    return text.strip()


BEST_OF_N_BATCH = 8
"""Sentences drawn at once (decoded as one batch); the budget is checked between batches, so the
spend can pass `tokens` by at most one batch (~5% at the default budget): the output prints it."""


class SpentTokens(RunListener):
    """The tokens a run spent, from its run_finished record: also known when the run raises
    `NoSurvivingParticles` (its `Result`, which carries them otherwise, is never returned)."""

    wants_steps = False

    def __init__(self) -> None:
        self.tokens: int | None = None

    def on_run_end(self, record: RunFinished) -> None:
        self.tokens = record.tokens


def best_of_n_same_budget(topic: str, letter: str, tokens: int, seed: int) -> dict[str, Any]:
    """Draw whole sentences, BEST_OF_N_BATCH at a time, until `tokens` are spent (BestOfN with a
    token budget)."""
    spent = SpentTokens()
    policy = policies.BestOfN(num_particles=100_000, batch_size=BEST_OF_N_BATCH, seed=seed,
                              budget=policies.Budget(max_tokens=tokens), listeners=[spent])
    try:
        r = policy.run(whole_sentence, topic, letter)
    except NoSurvivingParticles as exc:
        return {"valid": [], "drawn": sum(exc.causes.values()), "log_evidence": -math.inf, "tokens": spent.tokens}
    valid = [p.value for p in r.particles if p.log_weight > -math.inf]
    return {"valid": valid, "drawn": len(r.particles), "log_evidence": r.log_evidence,
            "tokens": r.diagnostics.tokens}


def guarantee_only_smc(args: argparse.Namespace) -> dict[str, Any]:
    """The comparison: the same SMC and program with the constraint checked only by `guarantee`."""
    spent = SpentTokens()
    smc = POLICY.model_copy(update={"num_particles": args.particles, "seed": args.seed, "listeners": [spent]})
    try:
        r = smc.run(program, args.topic, args.letter, args.max_words, args.min_words, False)
    except NoSurvivingParticles as exc:
        return {"marginal": {}, "log_evidence": -math.inf, "tokens": spent.tokens, "deaths": exc.causes}
    return {"marginal": r.marginal(), "log_evidence": r.log_evidence, "tokens": r.diagnostics.tokens, "ess": r.ess}


def run_smc(args: argparse.Namespace, out: Path):
    """SMC with a progress display and a trace file; returns the result and the trace path."""
    from observability.progress import ProgressListener
    from observability.trace_file import TraceFileWriter

    out.mkdir(parents=True, exist_ok=True)
    trace_path = out / "trace.jsonl"
    writer = TraceFileWriter(trace_path)
    progress = ProgressListener()
    smc = POLICY.model_copy(update={"num_particles": args.particles, "seed": args.seed,
                                    "listeners": [progress, writer]})
    try:
        result = smc.run(program, args.topic, args.letter, args.max_words, args.min_words)
    finally:
        progress.close()
        writer.close()
    return result, trace_path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=POLICY.num_particles)
    parser.add_argument("--topic", default="a cat")
    parser.add_argument("--letter", default="e", help="the letter the sentence must avoid")
    parser.add_argument("--max-words", type=int, default=16)
    parser.add_argument("--min-words", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/constrained_smc", help="directory for the trace and report")
    parser.add_argument("--no-baseline", action="store_true", help="skip the comparisons")
    args = parser.parse_args(argv)
    out = Path(args.out)

    try:
        result, trace_path = run_smc(args, out)
    except NoSurvivingParticles as exc:  # every prefix broke the constraint: Ẑ = 0
        print(f"\nno particle survived (log Z = -inf): {exc}\ntrace: {out / 'trace.jsonl'}")
        return {"marginal": {}, "log_evidence": -math.inf, "ess": 0.0, "deaths": exc.causes,
                "trace": out / "trace.jsonl"}
    tokens = result.diagnostics.tokens
    marginal = result.marginal()
    print(f'\nSMC, {args.particles} particles, one word per step drawn without "{args.letter}" '
          f"(answer marginal, top {min(5, len(marginal))} of {len(marginal)}):")
    for sentence, p in list(marginal.items())[:5]:
        print(f"  {p:6.3f}  {sentence}")
    print(f"  log Z = {result.log_evidence:.3f} (the model alone satisfies the constraint with probability "
          f"≈ {math.exp(result.log_evidence):.2g})   ESS = {result.ess:.1f} / {len(result.particles)}   "
          f"tokens = {tokens}   LLM calls = {result.diagnostics.llm_calls}")
    summary: dict[str, Any] = {"marginal": marginal, "log_evidence": result.log_evidence, "ess": result.ess,
                               "tokens": tokens, "trace": trace_path}

    if not args.no_baseline:
        g = guarantee_only_smc(args)
        top = next(iter(g["marginal"]), None)
        print(f"\nGuarantee-only SMC ({args.particles} particles, words from the unconstrained model, a guarantee per "
              f"word): log Z = {g['log_evidence']:.3f}, tokens = {g['tokens']}, "
              + (f"{len(g['marginal'])} distinct sentences, top {top!r}" if top else
                 "no particle survived (" + ", ".join(f"{n} killed by {site!r}" for site, n in
                                                     sorted(g["deaths"].items(), key=lambda kv: -kv[1])) + ")"))
        summary["guarantee_only"] = g
        bon = best_of_n_same_budget(args.topic, args.letter, tokens, args.seed)
        shown = f"; e.g. {bon['valid'][0]!r}" if bon["valid"] else ""
        spent = f" ({bon['tokens']} spent)" if bon["tokens"] else ""
        print(f"\nBest-of-N with the same {tokens} tokens{spent}: {len(bon['valid'])} of {bon['drawn']} whole "
              f'sentences have no "{args.letter}" and are complete{shown}')
        summary["best_of_n"] = bon

    from observability.html_report import write_report
    from observability.trace_file import read_trace_file

    report = write_report(read_trace_file(trace_path), out / "report.html")["html"]
    print(f"\ntrace:  {trace_path}   (swarm inspect {trace_path})\nreport: {report}")
    summary["report"] = report
    return summary


if __name__ == "__main__":
    main()
