"""Progress display for `swarm run`: a `RunListener` that shows each step as the run goes.

On a terminal it draws a `rich` progress bar (step, live particles, ESS, log Z, tokens/s);
elsewhere (a pipe, a log file, CI) it prints one plain line per step, which greps and diffs well:

    step 2 | alive 158/200 | ESS 158.0 | log Z -0.2377 | resampled | 0 tokens (0/s) | 0.01 s
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any

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


def step_stats(record: StepRecord, num_particles: int, elapsed_s: float) -> dict[str, Any]:
    """The numbers a progress line shows for one step."""
    alive = sum(1 for lw in record.log_weights if lw > -math.inf)
    return {"step": record.step, "alive": alive, "n": len(record.log_weights) or num_particles,
            "ess": record.ess, "log_z": record.log_evidence, "resampled": record.resampled,
            "tokens": record.tokens, "tok_s": record.tokens / elapsed_s if elapsed_s > 0 else 0.0,
            "elapsed": elapsed_s}


def plain_line(s: dict[str, Any]) -> str:
    return (f"step {s['step']} | alive {s['alive']}/{s['n']} | ESS {fmt_float(s['ess'], 1)} | "
            f"log Z {fmt_float(s['log_z'])} | {'resampled' if s['resampled'] else 'no resampling'} | "
            f"{s['tokens']} tokens ({s['tok_s']:.0f}/s) | {s['elapsed']:.2f} s")


class ProgressListener(RunListener):
    """Shows a run's progress on `stream` (default stdout): a rich bar when `tty`, else plain lines.

    `tty=None` decides by `stream.isatty()`. `total_steps` (when known, e.g. `max_steps`) gives the
    bar a length; otherwise it pulses. Never raises into the run (see `swarm.listeners`).
    """

    def __init__(self, stream: IO[str] | None = None, *, tty: bool | None = None,
                 total_steps: int | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.total_steps = total_steps
        self.num_particles = 0
        self._t0 = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None

    # -- listener ------------------------------------------------------------------------------
    def on_run_start(self, record: RunStarted) -> None:
        self._t0 = time.perf_counter()
        self.num_particles = record.num_particles
        head = (f"run {record.run_id}: {record.policy} on {record.program}, N = {record.num_particles}, "
                f"runtime {record.runtime}")
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

    def on_step(self, record: StepRecord) -> None:
        s = step_stats(record, self.num_particles, time.perf_counter() - self._t0)
        if self._progress is None:
            self._print(plain_line(s))
            return
        stats = (f"alive {s['alive']}/{s['n']}  ESS {fmt_float(s['ess'], 1)}  log Z {fmt_float(s['log_z'])}  "
                 f"{s['tok_s']:.0f} tok/s" + ("  [magenta]resampled[/magenta]" if s["resampled"] else ""))
        self._progress.update(self._task, description=f"step {s['step']}", stats=stats,
                              completed=s["step"])

    def on_run_end(self, record: RunFinished) -> None:
        elapsed = time.perf_counter() - self._t0
        if record.error:
            tail = f"run failed after {elapsed:.2f} s: {record.error}"
        else:
            tail = (f"run finished in {elapsed:.2f} s: log Z {fmt_float(record.log_evidence)}, "
                    f"ESS {fmt_float(record.ess, 1)}, {record.tokens} tokens, {record.llm_calls} LLM calls")
        if self._progress is None:
            self._print(tail)
            return
        done = max(self._progress.tasks[0].completed, 1)
        self._progress.update(self._task, total=done, completed=done)
        self._progress.stop()
        self._progress.console.print(tail, highlight=False, markup=False)
        self._progress = None

    def close(self) -> None:
        """Stop the live display if a run ended without `on_run_end` (an interrupted process)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
