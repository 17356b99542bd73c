"""`swarm inspect`: a run's population as a genealogy tree, from its trace file.

Each particle is a node under the particle it was copied from at resampling (initial particles
are roots). A node shows the steps it lived through, its log weight and normalised weight at its
last step, and how it ended: finished with a value, in the final population (★), or killed (✗)
by the factor, guarantee, zero-probability sample or error that decided its death. A run that did
not finish, or failed, has no final population: its last recorded one is marked ◦ (◦ paused: the
population a run that waits for a person paused with).

A population of N particles over many steps is too big to print, so the tree keeps the lineages of
the `max_particles` heaviest final particles and up to `max_particles` dead ones (taken in turn from
each cause of death, so every cause appears); a line under a node counts the children left out.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import IO, Any

from observability.global_trace import Death, GlobalTrace, _normalized
from observability.progress import fmt_float
from swarm.listeners import RunFinished


@dataclass
class Node:
    """One particle of the run, summarised over the steps it lived through."""

    id: int
    parent: int | None = None
    first_step: int | None = None
    last_step: int | None = None
    log_weight: float = 0.0
    normalized_weight: float = 0.0
    status: str = "running"
    value: Any = None
    final: bool = False
    provisional: bool = False
    paused: bool = False
    """In the population a run paused with (it waits for a person's answer)."""
    """In the last recorded population of a run that did not finish (or failed), not a final one."""
    death: Death | None = None
    children: list[int] = field(default_factory=list)


def build_nodes(trace: GlobalTrace) -> dict[int, Node]:
    """Every particle of the run as a `Node`, linked to its parent and children."""
    nodes: dict[int, Node] = {}
    for step in trace.steps:
        w = _normalized(step.log_weights)
        for i, pid in enumerate(step.particle_ids):
            node = nodes.setdefault(pid, Node(pid, first_step=step.step))
            node.last_step, node.log_weight, node.normalized_weight = step.step, step.log_weights[i], float(w[i])
        for ps in step.particles:
            node = nodes.setdefault(ps.particle_id, Node(ps.particle_id, first_step=step.step))
            node.status, node.value = ps.status, ps.value
    last_step = trace.steps[-1].step if trace.steps else None
    for fp in trace.final_population():
        node = nodes.setdefault(fp.id, Node(fp.id, first_step=last_step, last_step=last_step, status="finished"))
        node.final, node.provisional, node.paused, node.value = True, trace.provisional, trace.waiting, fp.value
        node.log_weight, node.normalized_weight = fp.log_weight, fp.normalized_weight
    for pid, parent in trace.genealogy().items():
        node = nodes.setdefault(pid, Node(pid))
        node.parent = parent
        if parent is not None:
            nodes.setdefault(parent, Node(parent)).children.append(pid)
    for pid, death in trace.deaths().items():
        nodes[pid].death, nodes[pid].status, nodes[pid].last_step = death, "dead", death.step
    return nodes


def select(nodes: dict[int, Node], max_particles: int, focus: int | None = None) -> set[int]:
    """The ids to show: the lineages of the heaviest final particles and of some dead ones, one
    cause at a time (or, with `focus`, that particle's lineage and its descendants)."""
    if len(nodes) <= max_particles and focus is None:
        return set(nodes)
    picked: list[int] = []
    if focus is not None:
        stack = [focus]
        while stack and len(picked) < max_particles:
            pid = stack.pop()
            picked.append(pid)
            stack.extend(reversed(nodes[pid].children))
    else:
        finals = sorted((n for n in nodes.values() if n.final), key=lambda n: (-n.normalized_weight, n.id))
        picked += [n.id for n in finals[:max_particles]]
        by_cause: dict[str, list[int]] = defaultdict(list)
        for n in sorted(nodes.values(), key=lambda n: n.id):
            if n.death is not None:
                by_cause[n.death.cause].append(n.id)
        queues = [list(reversed(ids)) for ids in by_cause.values()]
        dead: list[int] = []
        while queues and len(dead) < max_particles:  # one of each cause in turn, at most max_particles
            for queue in list(queues)[: max_particles - len(dead)]:
                dead.append(queue.pop())
                if not queue:
                    queues.remove(queue)
        picked += dead
    keep: set[int] = set()
    for pid in picked:
        while pid is not None and pid not in keep:
            keep.add(pid)
            pid = nodes[pid].parent
    return keep


def label(node: Node) -> str:
    """A node's one-line description (plain text)."""
    if node.first_step is None:
        steps = "final population"
    elif node.first_step == node.last_step:
        steps = f"step {node.first_step}"
    else:
        steps = f"steps {node.first_step}-{node.last_step}"
    text = f"#{node.id}  {steps}  log w {fmt_float(node.log_weight)}  w̄ {node.normalized_weight:.4g}"
    if node.death is not None:
        return f"{text}  ✗ killed by {node.death.kind} {node.death.cause!r}" + (
            f" ({node.death.detail})" if node.death.kind == "error" else "")
    if node.status == "finished" or node.value is not None:
        text += f"  → {_short(node.value)}"
    if node.final:
        text += ("  ◦ paused" if node.paused else "  ◦ last recorded") if node.provisional else "  ★ final"
    return text


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def tree(nodes: dict[int, Node], keep: set[int], roots: list[int] | None = None) -> list[tuple[str, list]]:
    """The kept nodes as nested (label, children) pairs, with a line counting hidden children."""
    def build(pid: int) -> tuple[str, list]:
        node = nodes[pid]
        shown = [build(c) for c in node.children if c in keep]
        hidden = [nodes[c] for c in node.children if c not in keep]
        if hidden:
            dead = sum(1 for n in hidden if n.death is not None)
            shown.append((f"… {len(hidden)} more offspring hidden ({dead} dead)", []))
        return label(node), shown

    if roots is None:
        roots = sorted(pid for pid in keep if nodes[pid].parent is None or nodes[pid].parent not in keep)
    return [build(pid) for pid in roots]


def summary(trace: GlobalTrace) -> list[str]:
    """The header lines: policy, program, N, steps, resamplings, log Z, ESS, deaths, cost."""
    run, fin = trace.run, trace.finished
    n = (run.num_particles if run else 0) or (fin.num_particles if fin else 0)
    ess = fin.ess if fin and (fin.ess is not None or fin.error) else (trace.steps[-1].ess if trace.steps else None)
    deaths = trace.deaths()
    causes: dict[str, int] = defaultdict(int)
    for d in deaths.values():
        causes[f"{d.kind} {d.cause!r}"] += 1
    lines = [f"run {run.run_id if run else '?'}: {run.policy if run else '?'} on {run.program if run else '?'} "
             f"(runtime {run.runtime if run else '?'})",
             f"N = {n}, steps = {len(trace.steps)}, resamplings = {sum(s.resampled for s in trace.steps)}, "
             f"log Z = {fmt_float(trace.log_evidence)}, ESS = {fmt_float(ess, 1)}, particles = {len(trace.genealogy())}",
             f"deaths: {len(deaths)}" + (" (" + ", ".join(f"{c}: {k}" for c, k in
                                                          sorted(causes.items(), key=lambda kv: -kv[1])) + ")"
                                         if causes else "")]
    if fin is not None:
        lines.append(f"tokens = {fin.tokens}, LLM calls = {fin.llm_calls}"
                     + (f", duration = {(fin.ended_at_ns - run.started_at_ns) / 1e9:.2f} s" if run else ""))
        if fin.error:
            lines.append(f"run failed: {fin.error}")
        if trace.waiting:
            lines.append(waiting_line(fin) + "; ◦: the population it paused with, not a posterior yet")
        elif trace.provisional and trace.steps:
            lines.append(f"(◦: the population of step {trace.steps[-1].step}, the last one recorded before "
                         "it failed)")
    else:
        lines.append("the run has no run_finished record (still running, or the writer was killed); "
                     "◦: the last recorded population")
    lines += [f"warning: {p}" for p in trace.problems + genealogy_warnings(trace)]
    return lines


def waiting_line(fin: RunFinished) -> str:
    """What a run that paused for a person waits on, and where to continue it."""
    counts: dict[str, int] = {}
    for question in fin.pending:
        counts[question.get("name")] = counts.get(question.get("name"), 0) + 1
    names = ", ".join(f"{name!r}" + (f" ×{k}" if k > 1 else "") for name, k in list(counts.items())[:5])
    names += " …" if len(counts) > 5 else ""
    where = f"; continue with: swarm resume {fin.checkpoint} --answer NAME=VALUE" if fin.checkpoint else ""
    return f"run waits for a person: {len(fin.pending)} question(s) ({names}){where}"


def genealogy_warnings(trace: GlobalTrace) -> list[str]:
    """Why the genealogy may be incomplete (a policy's step records that contradict themselves)."""
    bad = trace.inconsistent_steps()
    if not bad:
        return []
    shown = ", ".join(map(str, bad[:8])) + (" …" if len(bad) > 8 else "")
    return [f"the records of resampling step(s) {shown} give offspring their own ids as parents (the policy "
            "recorded ids after resampling, not before): lineages are cut there"]


def history(trace: GlobalTrace, particle_id: int) -> list[str]:
    """The steps of a particle and its ancestors: site, increment, weight and the new events."""
    lines = ["lineage: " + " → ".join(f"#{p}" for p in trace.lineage(particle_id))]
    for ps in trace.particle_history(particle_id, with_ancestors=True):
        events = ", ".join(_event(e) for e in ps.new_events) or "no new events"
        lines.append(f"  step {ps.step} #{ps.particle_id}: {ps.status} at {ps.site or ps.killed_by or 'end'}, "
                     f"Δ log w {fmt_float(ps.log_increment)}, log w {fmt_float(ps.log_weight)}; {events}")
    return lines


def _event(e: Any) -> str:
    if e.type == "sample":
        return f"{e.address}={_short(e.value, 30)}"
    if e.type == "factor":
        return f"factor {e.address} {fmt_float(e.log_potential, 3)}" + (" (shaping)" if e.shaping else "")
    if e.type == "guarantee":
        return f"guarantee {e.address} {'ok' if e.satisfied else 'FAILED'}"
    if e.type == "error":
        return f"error {e.error_type}: {_short(e.message, 40)}"
    return f"{e.kind} {e.sender}→{e.receiver}"


def render(trace: GlobalTrace, stream: IO[str], *, tty: bool, max_particles: int = 20,
           particle: int | None = None) -> None:
    """Print the summary, the (pruned) genealogy tree and, with `particle`, its history."""
    nodes = build_nodes(trace)
    if particle is not None and particle not in nodes:
        raise KeyError(f"particle {particle} does not appear in {trace.path} "
                       f"(ids run from {min(nodes, default=0)} to {max(nodes, default=0)})")
    keep = select(nodes, max_particles, focus=particle)
    roots = [particle] if particle is not None else None
    if particle is not None:
        lineage = trace.lineage(particle)
        keep |= set(lineage)
        roots = [lineage[0]]
    forest = tree(nodes, keep, roots)
    head = summary(trace)
    extra = history(trace, particle) if particle is not None else []
    shown = f"genealogy ({len(keep)} of {len(nodes)} particles shown; --max-particles to change)"
    if tty:
        _render_rich(stream, head, shown, forest, extra)
        return
    for line in [*head, "", shown]:
        print(line, file=stream)
    for item in forest:
        _plain(item, 0, stream)
    for line in ([""] + extra if extra else []):
        print(line, file=stream)


def _plain(item: tuple[str, list], depth: int, stream: IO[str]) -> None:
    text, children = item
    print(f"{'  ' * depth}- {text}", file=stream)
    for child in children:
        _plain(child, depth + 1, stream)


def _render_rich(stream: IO[str], head: list[str], shown: str, forest: list, extra: list[str]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.tree import Tree

    console = Console(file=stream, force_terminal=True)
    console.print("[bold]" + escape(head[0]) + "[/bold]")
    for line in head[1:]:
        console.print(escape(line), highlight=False)
    root = Tree(f"[bold]{escape(shown)}[/bold]", guide_style="dim")

    def add(parent: Any, item: tuple[str, list]) -> None:
        text, children = item
        style = ("red" if "✗" in text else "green" if "★" in text else "yellow" if "◦" in text
                 else "dim" if text.startswith("…") else "")
        branch = parent.add(f"[{style}]{escape(text)}[/{style}]" if style else escape(text))
        for child in children:
            add(branch, child)

    for item in forest:
        add(root, item)
    console.print(root)
    for line in extra:
        console.print(escape(line), highlight=False)
