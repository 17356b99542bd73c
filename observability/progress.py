"""Progress display for `swarm run`: shows a run's stream events (`policy.stream`) as they come.

On a terminal it draws a `rich` progress bar (step, live particles, ESS, log Z, tokens/s);
elsewhere (a pipe, a log file, CI) it prints one plain line per step, which greps and diffs well:

    step 2 | alive 158/200 | ESS 158.0 | log Z -0.2377 | resampled | 0 tokens (0/s) | 0.01 s

`ProgressDisplay.follow(policy.stream(program, ...))` shows a whole run and returns its `Result`
(what `swarm run` does). `ProgressListener` is the same display as a `RunListener`, for code that
passes listeners to a policy (`listeners=[ProgressListener()]`): it turns the records into the same
events with `policies.streaming.RecordTranslator`, so both paths show exactly the same thing.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any, Iterable

from policies.streaming import RecordTranslator, RunEnd, RunStart, RunSummary, StepEnd
from swarm.listeners import RunFinished, RunListener, RunStarted, StepRecord


def fmt_float(x: float | None, digits: int = 4) -> str:
    """A float for humans: fixed digits, and -inf/inf/nan spelled out (None as "-")."""
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "-inf" if x < 0 else "inf"
    return f"{x:.{digits}f}"


def step_stats(event: StepEnd, num_particles: int, elapsed_s: float) -> dict[str, Any]:
    """The numbers a progress line shows for one step (`num_particles` when the step has no weights)."""
    return {"step": event.step, "alive": event.alive, "n": event.num_particles or num_particles, "ess": event.ess,
            "log_z": event.log_evidence, "resampled": event.resampled, "tokens": event.tokens,
            "tok_s": event.tokens / elapsed_s if elapsed_s > 0 else 0.0, "elapsed": elapsed_s}


def plain_line(s: dict[str, Any]) -> str:
    return (f"step {s['step']} | alive {s['alive']}/{s['n']} | ESS {fmt_float(s['ess'], 1)} | "
            f"log Z {fmt_float(s['log_z'])} | {'resampled' if s['resampled'] else 'no resampling'} | "
            f"{s['tokens']} tokens ({s['tok_s']:.0f}/s) | {s['elapsed']:.2f} s")


class ProgressDisplay:
    """Shows stream events on `stream` (default stdout): a rich bar when `tty`, else plain lines.

    `tty=None` decides by `stream.isatty()`. `total_steps` (when known, e.g. `max_steps`) gives the
    bar a length; otherwise it pulses.
    """

    def __init__(self, stream: IO[str] | None = None, *, tty: bool | None = None,
                 total_steps: int | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.total_steps = total_steps
        self.num_particles = 0
        self._t0_ns = time.time_ns()
        self._progress: Any = None
        self._task: Any = None

    def follow(self, events: Iterable[Any]) -> Any:
        """Show every event of a run (e.g. `policy.stream(...)`) and return its `Result`. When the
        run raises, the display is closed with the error and the exception propagates."""
        result = None
        try:
            for event in events:
                self.show(event)
                if isinstance(event, RunEnd):
                    result = event.result
        except BaseException as exc:
            self.failed(exc)
            raise
        finally:
            self.close()
        return result

    def show(self, event: Any) -> None:
        """Show one event (events the display does not draw are ignored)."""
        if isinstance(event, StepEnd):
            self.step(event)
        elif isinstance(event, RunStart):
            self.start(event)
        elif isinstance(event, RunEnd) and getattr(event.result, "status", None) == "waiting":
            self.paused(len(getattr(event.result, "pending", None) or []))
        elif isinstance(event, RunEnd):
            d = event.result.diagnostics
            self.finished(event.result.log_evidence, event.result.ess, d.tokens, d.llm_calls)
        elif isinstance(event, RunSummary):
            if event.error:
                self.failed(event.error)
            elif event.status == "waiting":
                self.paused(event.pending)
            else:
                self.finished(event.log_evidence, event.ess, event.tokens, event.llm_calls)

    def start(self, event: RunStart) -> None:
        self._t0_ns = event.at_ns  # the run's own clock: its events may arrive late, and all at once
        self.num_particles = event.num_particles
        head = (f"run {event.run_id}: {event.policy} on {event.program}, N = {event.num_particles}, "
                f"runtime {event.runtime}")
        if not self.tty:
            self._print(head)
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = Console(file=self.stream, force_terminal=True)
        console.print(f"[bold]{head}[/bold]", highlight=False)
        self._progress = Progress(SpinnerColumn(), TextColumn("[bold cyan]{task.description}"), BarColumn(),
                                  TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                                  console=console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task("step 0", total=self.total_steps, stats="starting")

    def step(self, event: StepEnd) -> None:
        s = step_stats(event, self.num_particles, (event.at_ns - self._t0_ns) / 1e9)
        if self._progress is None:
            self._print(plain_line(s))
            return
        stats = (f"alive {s['alive']}/{s['n']}  ESS {fmt_float(s['ess'], 1)}  log Z {fmt_float(s['log_z'])}  "
                 f"{s['tok_s']:.0f} tok/s" + ("  [magenta]resampled[/magenta]" if s["resampled"] else ""))
        self._progress.update(self._task, description=f"step {s['step']}", stats=stats, completed=s["step"])

    def finished(self, log_evidence: float | None, ess: float | None, tokens: int, llm_calls: int) -> None:
        self.finish(f"run finished in {self._elapsed():.2f} s: log Z {fmt_float(log_evidence)}, "
                    f"ESS {fmt_float(ess, 1)}, {tokens} tokens, {llm_calls} LLM calls")

    def paused(self, questions: int) -> None:
        self.finish(f"run paused after {self._elapsed():.2f} s: waiting for a person ({questions} question(s))")

    def failed(self, error: BaseException | str) -> None:
        if isinstance(error, KeyboardInterrupt):
            self.finish(f"run interrupted after {self._elapsed():.2f} s")
            return
        if not isinstance(error, str):
            error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        self.finish(f"run failed after {self._elapsed():.2f} s: {error}")

    def finish(self, tail: str) -> None:
        """The last line of a run (success or failure); stops the bar."""
        if self._progress is None:
            self._print(tail)
            return
        done = max(self._progress.tasks[0].completed, 1)
        self._progress.update(self._task, total=done, completed=done)
        self._progress.stop()
        self._progress.console.print(tail, highlight=False, markup=False)
        self._progress = None

    def close(self) -> None:
        """Stop the live display if a run ended without its last event (an interrupted process)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _elapsed(self) -> float:
        """Seconds since the run started (wall clock, as the records' timestamps are)."""
        return (time.time_ns() - self._t0_ns) / 1e9

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class ProgressListener(ProgressDisplay, RunListener):
    """The display as a `RunListener`: records → events (`RecordTranslator`) → `show`. Never raises
    into the run (see `swarm.listeners`)."""

    def __init__(self, stream: IO[str] | None = None, *, tty: bool | None = None,
                 total_steps: int | None = None) -> None:
        super().__init__(stream, tty=tty, total_steps=total_steps)
        self._translator = RecordTranslator()

    def on_run_start(self, record: RunStarted) -> None:
        self._translator = RecordTranslator()
        for event in self._translator.start(record):
            self.show(event)

    def on_step(self, record: StepRecord) -> None:
        for event in self._translator.step(record):
            self.show(event)

    def on_run_end(self, record: RunFinished) -> None:
        self.show(self._translator.end(record))


def print_result(result: Any, *, top: int = 10) -> None:
    """A finished run on the terminal: the answer marginal's top values, log Z, ESS, tokens, LLM calls."""
    marginal = list(result.marginal().items())
    print(f"\nanswer marginal (top {min(top, len(marginal))} of {len(marginal)} values):")
    width = max((len(repr(v)) for v, _ in marginal[:top]), default=0)
    for value, p in marginal[:top]:
        print(f"  {repr(value):<{min(width, 40)}}  {p:.4f}  {'█' * round(30 * p)}")
    print(f"log Z = {fmt_float(result.log_evidence)}   ESS = {fmt_float(result.ess, 1)} / {len(result.particles)}"
          f" (lowest at a step {fmt_float(result.min_ess, 1)})"
          f"   tokens = {result.diagnostics.tokens}   LLM calls = {result.diagnostics.llm_calls}")
