"""`swarm report`: a self-contained HTML page about one run, from its trace file.

The page has no external resource and no JavaScript: the plots are PNGs drawn by matplotlib's Agg
renderer (no display, no pyplot global state) and embedded as base64 `data:` URIs; styling is an
inline `<style>`. Sections: run metadata, ESS per step, log Z per step, the final weight
histogram, the genealogy (particles as dots per step, lines to their parents), the answer
marginal, deaths by cause and a per-step table. `png_dir` also writes each plot as a PNG file.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from observability.genealogy_view import genealogy_warnings, waiting_line
from observability.global_trace import GlobalTrace
from swarm.listeners import StepRecord
from observability.progress import fmt_float
from observability.trace_file import os_reason
from swarm.errors import SwarmError

PLOTS = ("ess", "log_evidence", "weights", "genealogy", "marginal")
_BLUE, _GREY, _RED = "#1f5fa8", "#c9ced6", "#c0392b"


class ReportError(SwarmError):
    """The report could not be written; the message names the file."""


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_ess(trace: GlobalTrace) -> bytes:
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    steps = [s.step for s in trace.steps]
    if steps:
        ax.plot(steps, trace.ess_per_step(), marker="o", color=_BLUE, label="ESS")
        n = trace.run.num_particles if trace.run else None
        if n:
            ax.axhline(n, color="#888", ls=":", lw=1, label=f"N = {n}")
            threshold = (trace.run.config or {}).get("ess_threshold")
            if isinstance(threshold, (int, float)):
                ax.axhline(threshold * n, color=_RED, ls="--", lw=1, label=f"resampling threshold ({threshold:g}·N)")
        for s in trace.steps:
            if s.resampled:
                ax.axvline(s.step, color="#d9b8f0", lw=3, alpha=0.5, zorder=0)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="best")
    else:
        _empty(ax, "no steps recorded")
    ax.set(title="Effective sample size per step (shaded: resampled)", xlabel="step", ylabel="ESS")
    return _png(fig)


def plot_log_evidence(trace: GlobalTrace) -> bytes:
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    points = [(s.step, s.log_evidence) for s in trace.steps if math.isfinite(s.log_evidence)]
    if points:
        ax.plot(*zip(*points), marker="o", color=_BLUE)
    else:
        _empty(ax, "no finite log Z recorded")
    ax.set(title="Running estimate of log Z per step", xlabel="step", ylabel="log Ẑ")
    return _png(fig)


def plot_weights(trace: GlobalTrace) -> bytes:
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    final = trace.final_population()
    finite = [p.log_weight for p in final if math.isfinite(p.log_weight)]
    if finite:
        ax.hist(finite, bins=min(40, max(5, len(set(finite)))), color=_BLUE, edgecolor="white")
    else:
        _empty(ax, "no particle with positive weight")
    dead = len(final) - len(finite)
    ax.set(title=f"Final log weights ({len(finite)} positive, {dead} zero-weight not shown)",
           xlabel="log weight", ylabel="particles")
    return _png(fig)


def plot_genealogy(trace: GlobalTrace) -> bytes:
    """The genealogy plot as PNG bytes (`genealogy_figure`)."""
    return _png(genealogy_figure(trace))


def genealogy_figure(trace: GlobalTrace) -> Figure:
    """Particles as dots (x: step, y: index in the population); a line joins each particle to its
    parent at the previous step. Lineages that reach the final population are dark, the rest pale;
    a red cross marks a death."""
    steps = trace.steps
    fig = Figure(figsize=(9.6, 4.8))
    ax = fig.add_subplot()
    if not steps:
        _empty(ax, "no steps recorded (e.g. Enumerate)")
        return fig
    parent_index = [None] + [  # parent_index[t][j]: index at step t-1 of the parent of index j at step t
        (np.asarray(prev.ancestors) if prev.resampled and prev.ancestors is not None
         else np.arange(len(cur.particle_ids)))
        for prev, cur in zip(steps, steps[1:])]
    alive = [np.asarray(s.log_weights, dtype=float) > -math.inf for s in steps]
    survivor = [np.zeros(len(a), dtype=bool) for a in alive]
    survivor[-1] = alive[-1].copy()
    for t in range(len(steps) - 1, 0, -1):
        idx = parent_index[t][survivor[t][: len(parent_index[t])]]
        survivor[t - 1][idx[idx < len(survivor[t - 1])]] = True
    died = {d.particle_id: d.step for d in trace.deaths().values()}
    dies_here = [np.array([died.get(pid) == s.step for pid in s.particle_ids], dtype=bool) for s in steps]
    pale, dark, fatal = [], [], []
    for t in range(1, len(steps)):
        x0, x1 = steps[t - 1].step, steps[t].step
        for j, a in enumerate(parent_index[t][: len(alive[t])]):
            if a < len(alive[t - 1]) and alive[t - 1][a]:
                if alive[t][j]:
                    (dark if survivor[t][j] else pale).append([(x0, a), (x1, j)])
                elif dies_here[t][j]:
                    fatal.append([(x0, a), (x1, j)])
    ax.add_collection(LineCollection(pale, colors=_GREY, linewidths=0.6, rasterized=True))
    ax.add_collection(LineCollection(fatal, colors="#eab3ad", linewidths=0.6, rasterized=True))
    ax.add_collection(LineCollection(dark, colors=_BLUE, linewidths=0.9, rasterized=True))
    dead_x, dead_y = [], []
    for t, s in enumerate(steps):
        ys = np.flatnonzero(alive[t])
        ax.scatter(np.full(len(ys), s.step), ys, s=6, c=np.where(survivor[t][ys], _BLUE, "#9aa3ad"), zorder=3)
        dead_y += np.flatnonzero(dies_here[t]).tolist()
        dead_x += [s.step] * int(dies_here[t].sum())
    ax.scatter(dead_x, dead_y, marker="x", s=14, c=_RED, zorder=4, label=f"death ({len(died)})")
    ax.set(title="Genealogy: particles per step, lines to parents (dark: ancestors of the final population)",
           xlabel="step", ylabel="particle index")
    _integer_axes(ax, [s.step for s in steps])
    ax.autoscale()
    if died:
        ax.legend(fontsize=8, loc="upper right")
    return fig


MAX_STEP_TICKS = 25
"""Beyond this many steps a plot labels a readable subset of them (one label per step overprinted)."""


def _integer_axes(ax, steps: list[int]) -> None:
    """Whole numbers on both axes (steps, particle indices): every step labelled when there are few,
    else a readable subset; never a fractional particle index."""
    from matplotlib.ticker import MaxNLocator

    if len(steps) <= MAX_STEP_TICKS:
        ax.set_xticks(steps)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def plot_marginal(trace: GlobalTrace, top: int = 15) -> bytes:
    marginal = trace.final_marginal(top=top)
    fig = Figure(figsize=(6.4, max(2.4, 0.35 * len(marginal) + 1.2)))
    ax = fig.add_subplot()
    if marginal:
        labels = [_clip(repr(k), 40) for k in marginal][::-1]
        ax.barh(labels, list(marginal.values())[::-1], color=_BLUE)
        for y, v in enumerate(list(marginal.values())[::-1]):
            ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
        ax.set_xlim(0, min(1.0, max(marginal.values()) * 1.25))
    else:
        _empty(ax, "no finished particle with positive weight")
    ax.set(title=f"Answer marginal (top {top})", xlabel="posterior probability")
    return _png(fig)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metadata(trace: GlobalTrace) -> list[list[object]]:
    run, fin = trace.run, trace.finished
    rows: list[list[object]] = [["trace file", trace.path]]
    if run:
        started = dt.datetime.fromtimestamp(run.started_at_ns / 1e9, dt.timezone.utc).isoformat(timespec="seconds")
        rows += [["run id", run.run_id], ["policy", run.policy], ["program", run.program],
                 ["particles (N)", run.num_particles], ["runtime", run.runtime], ["started (UTC)", started],
                 ["configuration", json.dumps(run.config, sort_keys=True, default=repr)]]
    rows += [["steps", len(trace.steps)], ["resamplings", sum(s.resampled for s in trace.steps)],
             ["log Z", fmt_float(trace.log_evidence)]]
    if fin:
        rows += [["final ESS", fmt_float(fin.ess, 2)], ["tokens", fin.tokens], ["LLM calls", fin.llm_calls]]
        if run:
            rows.append(["duration", f"{(fin.ended_at_ns - run.started_at_ns) / 1e9:.3f} s"])
        if fin.error:
            rows.append(["error", fin.error])
    else:
        rows.append(["status", "incomplete: no run_finished record"])
    rows += [["warning", p] for p in trace.problems]
    return rows


def _deaths(trace: GlobalTrace) -> list[list[object]]:
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for d in trace.deaths().values():
        groups[(d.kind, d.cause)].append(d)
    rows = []
    for (kind, cause), ds in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        steps = sorted({d.step for d in ds})
        rows.append([cause, kind, len(ds), ", ".join(map(str, steps[:12])) + (" …" if len(steps) > 12 else ""),
                     ", ".join(f"#{d.particle_id}" for d in ds[:5]), ds[0].detail])
    return rows


def _steps(trace: GlobalTrace, limit: int = 200) -> list[list[object]]:
    """One row per step; beyond `limit` steps the first and the last `limit // 2`, with a row
    counting those left out between them (the last steps were dropped)."""
    def row(s: StepRecord) -> list[object]:
        return [s.step, f"{sum(1 for w in s.log_weights if w > -math.inf)}/{len(s.log_weights)}",
                fmt_float(s.ess, 1), fmt_float(s.log_evidence), "yes" if s.resampled else "",
                len(set(s.ancestors)) if s.ancestors else "", s.tokens,
                f"{(s.ended_at_ns - s.started_at_ns) / 1e6:.1f}"]

    steps = trace.steps
    if len(steps) <= limit:
        return [row(s) for s in steps]
    half = limit // 2
    gap: list[object] = [f"… {len(steps) - 2 * half} steps not shown …", "", "", "", "", "", "", ""]
    return [row(s) for s in steps[:half]] + [gap] + [row(s) for s in steps[-half:]]


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:1.6em}table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f5f8}
img{max-width:100%;height:auto;border:1px solid #eee}.grid{display:flex;flex-wrap:wrap;gap:1em}
.grid figure{margin:0;flex:1 1 480px}.muted{color:#666}.warn{color:#a33}"""


def render_html(trace: GlobalTrace, images: dict[str, bytes]) -> str:
    """The page's HTML, with `images` ({plot name: PNG bytes}) embedded as data URIs."""
    def img(name: str, alt: str) -> str:
        data = base64.b64encode(images[name]).decode("ascii")
        return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'

    title = f"{trace.run.policy} on {trace.run.program}" if trace.run else Path(trace.path).name
    deaths = _deaths(trace)
    warnings = list(trace.problems) + genealogy_warnings(trace)
    if trace.failed:
        warnings.insert(0, f"The run failed: {trace.finished.error}")
    if trace.waiting:
        warnings.insert(0, waiting_line(trace.finished) + ". The final-population plots show the population it "
                        "paused with, not a posterior.")
    elif trace.provisional and trace.steps:
        warnings.append(f"The run has no final population: the plots of the final population show step "
                        f"{trace.steps[-1].step}'s, the last one recorded.")
    warn = "".join(f'<p class="warn">{html.escape(p)}</p>' for p in warnings)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>plp-swarm run report: {html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>plp-swarm run report</h1><p class="muted">{html.escape(title)}</p>{warn}
<h2>Run</h2>{_table(["field", "value"], _metadata(trace))}
<h2>Effective sample size and evidence</h2>
<div class="grid">{img("ess", "ESS per step")}{img("log_evidence", "log Z per step")}</div>
<h2>Final population</h2>
<div class="grid">{img("weights", "final weight histogram")}{img("marginal", "answer marginal")}</div>
<h2>Genealogy</h2>{img("genealogy", "genealogy of the population")}
<h2>Deaths by cause</h2>
{_table(["cause", "kind", "particles", "steps", "examples", "detail"], deaths) if deaths else '<p class="muted">No particle died.</p>'}
<h2>Steps</h2>
{_table(["step", "alive", "ESS", "log Z", "resampled", "unique ancestors", "tokens", "ms"], _steps(trace))}
<p class="muted">Generated by <code>swarm report</code> from {html.escape(trace.path)}.</p>
</body></html>
"""


def _output_files(html_path: str | os.PathLike[str], png_dir: str | os.PathLike[str] | None) -> list[Path]:
    return [Path(html_path)] + ([Path(png_dir) / f"{name}.png" for name in PLOTS] if png_dir is not None else [])


def _temporary(path: Path) -> Path:
    """The file beside `path` that is written first, then renamed to it (a directory is refused)."""
    if path.is_dir() or not path.name:
        raise ReportError(f"cannot write the report file {path}: it is a directory (give a file name)")
    return path.with_name(f".{path.name}.tmp")


def check_writable(html_path: str | os.PathLike[str], png_dir: str | os.PathLike[str] | None = None) -> None:
    """Raise `ReportError` now if the report (or its PNGs) could not be written: `swarm run --html`
    checks before the run, so that a bad path does not cost the run. Creates missing directories;
    leaves no file behind."""
    for path in _output_files(html_path, png_dir):
        tmp = _temporary(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(b"")
            tmp.unlink()
        except OSError as exc:
            raise ReportError(f"cannot write the report file {path}: {os_reason(exc)}") from None


def write_report(trace: GlobalTrace, html_path: str | os.PathLike[str],
                 png_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Write the HTML report (and, with `png_dir`, one PNG per plot); return the paths written."""
    images = {"ess": plot_ess(trace), "log_evidence": plot_log_evidence(trace), "weights": plot_weights(trace),
              "genealogy": plot_genealogy(trace), "marginal": plot_marginal(trace)}
    written: dict[str, Path] = {}
    targets = [(Path(html_path), render_html(trace, images).encode("utf-8"), "html")]
    if png_dir is not None:
        targets += [(Path(png_dir) / f"{name}.png", data, name) for name, data in images.items()]
    for path, data, key in targets:
        tmp = _temporary(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise ReportError(f"cannot write the report file {path}: {os_reason(exc)}") from None
        written[key] = path
    return written
