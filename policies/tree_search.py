"""Monte Carlo tree search over program steps, with PUCT selection and a MellowMax backup."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from policies.base import Policy, RunContext
from policies.critics import bind_critic, evaluate_all
from policies.mellowmax import backup as backup_value
from policies.search import Objective, evidence_lower_bound, joint_log_mass, score, segment_log_prob, trace_key
from swarm.execution import Segment, SegmentRunner, SegmentTask
from swarm.population import ess, logsumexp
from swarm.result import Particle, Result, StepStats

__all__ = ["TreeSearch"]


@dataclass(eq=False)
class _Node:
    """A prefix at a sync point (the root: the empty prefix), with its search statistics."""

    seg: Segment | None
    stream: int | None
    score: float = 0.0
    """The objective's score of the prefix (log w, or log π + log w)."""
    log_prior: float = 0.0
    """log π(this step | parent): the proposal probability of the segment that led here."""
    value: float = 0.0
    """Q: the leaf estimate until expanded, then the backup of the children's values."""
    visits: int = 0
    children: list["_Node"] = field(default_factory=list)
    keys: dict = field(default_factory=dict)
    expanded: bool = False
    closed: bool = False
    """Nothing left to explore below: a finished or dead trace, or every child closed."""

    @property
    def status(self) -> str:
        return "running" if self.seg is None else self.seg.status


class TreeSearch(Policy):
    """MCTS over program steps (nodes: prefixes at sync points), after AlphaZero's PUCT and the
    "hybrid MCTS" of docs/theory.md §7.3.

        repeat num_simulations times (or until the whole tree is explored):
            select:  from the root, go to the open child maximising
                       U(c) = q̄(c) + c_puct · P(c) · √N(s) / (1 + N(c)),
                     q̄ = Q min-max normalised over the tree (MuZero), P(c) = π(c|s)/Σ_c' π(c'|s)
                     the proposal probability of the step to c among the children drawn;
            expand:  run the leaf on `expand` fresh random streams to its next sync point; equal
                     children (same sampled values) merge; a finished child is a leaf with value
                     score(τ), a dead one −inf, a running one  score(s') + V̂(s')  with V̂ from `value`
                     (0 when None: the accumulated weight alone);
            backup:  along the path, N += 1 and Q(s) = backup_{live children c} Q(c) with
                     "mellowmax": mm_ω(x) = (LSE(ωx) − log n)/ω  (intensive: a uniform tree of any
                                  depth or width has the value of its leaves, docs/theory.md §7.2),
                     "max" (the best found), "mean", "logsumexp" (extensive: counts paths).
                     Dead children (−inf) are left out of the backup.

    score(s) is log w(s) (objective="weight") or log π(s) + log w(s) (objective="joint"); `value`
    should estimate the future of that score: a callable on the prefix trace, or
    `RolloutCritic(num_rollouts, reduce="max")` (best rollout) / `RolloutCritic(...)` (log-mean-exp
    rollouts: the soft value log Σ π(rest|s)Φ(rest), natural for "joint").

    **It does not target p.** It searches for high-scoring traces; as num_simulations grows it
    explores the whole (drawn) tree, and with `expand` large enough to draw every value its best
    trace is the exact argmax of the score (Enumerate's MAP trace for objective="joint").

    **What is returned.** `particles`: every distinct complete trace found, best score first, each
    with log weight log π(τ) + log w(τ) (so `marginal()` is p restricted to them);
    `log_evidence = log Σ_{found τ} π(τ)Φ(τ) ≤ log Z` (exact once every path was found; −inf when
    none finished). `extra`: "best", "best_score", "scores", "root_value" (Q of the root),
    "root_children" (value, visits, prior, sampled values of each), "num_nodes", "executions",
    "simulations", "exhausted" (the whole tree was explored), "objective", "backup".
    """

    expand: int = Field(4, gt=0)
    """Children drawn per expanded node (on distinct random streams; duplicates merge)."""
    value: Any = None
    """None, callable(prefix: Trace) -> float | Awaitable[float], or an object with .bind (RolloutCritic)."""
    backup: Literal["mellowmax", "max", "mean", "logsumexp"] = "mellowmax"
    omega: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    num_simulations: int = Field(64, gt=0)
    c_puct: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    objective: Objective = "weight"

    @field_validator("value")
    @classmethod
    def _valid_value(cls, value: Any) -> Any:
        if value is None or callable(value) or callable(getattr(value, "bind", None)):
            return value
        raise ValueError(f"value must be None, a callable on a prefix trace, or have .bind; got {type(value).__name__}")

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.expand)
        runner = ctx.runner(args, kwargs)
        critic = None if self.value is None else bind_critic(self.value, ctx.program, args, kwargs, ctx.seed)
        root = _Node(seg=None, stream=None)
        state = {"next_stream": 0, "executions": 0, "nodes": 1, "lo": math.inf, "hi": -math.inf, "finished": []}
        simulations = 0
        while simulations < self.num_simulations and not root.closed:
            simulations += 1
            started = time.time_ns()
            path = self._select(root, state)
            children = await self._expand(ctx, runner, critic, path[-1], state)
            self._backup(path, state)
            self._record(ctx, simulations, path[-1], children, state, started)
            if ctx.out_of_budget():
                break
        return self._result(ctx, root, state, simulations, critic)

    # -- the three phases --------------------------------------------------------------------------
    def _select(self, root: _Node, state: dict) -> list[_Node]:
        path = [root]
        node = root
        while node.expanded:
            node = max((c for c in node.children if not c.closed), key=lambda c: self._puct(node, c, state))
            path.append(node)
        return path

    def _puct(self, parent: _Node, child: _Node, state: dict) -> float:
        lo, hi = state["lo"], state["hi"]
        if child.value == -math.inf:
            q = 0.0
        elif hi > lo:
            q = (child.value - lo) / (hi - lo)
        else:
            q = 0.5
        prior = math.exp(child.log_prior - logsumexp(np.array([c.log_prior for c in parent.children])))
        return q + self.c_puct * prior * math.sqrt(parent.visits) / (1 + child.visits)

    async def _expand(self, ctx: RunContext, runner: SegmentRunner, critic: Any, node: _Node,
                      state: dict) -> list[_Node]:
        """Draw `expand` children of a running leaf; merge duplicates; evaluate the new children."""
        start = 0 if node.seg is None else len(node.seg.trace)
        tasks = []
        for c in range(self.expand):
            tasks.append(SegmentTask(stream=state["next_stream"], prefix=None if node.seg is None else node.seg.trace,
                                     stop_at=1 if node.seg is None else node.seg.sync_count + 1,
                                     continue_from=node.stream if c == 0 else None))
            state["next_stream"] += 1
        segments = await ctx.advance(runner, tasks)
        state["executions"] += len(tasks)
        new: list[_Node] = []
        state["dead_duplicates"] = []
        for task, seg in zip(tasks, segments):
            key = trace_key(seg.trace)
            if key in node.keys:
                if seg.status != "running" and seg.status != "finished":  # its death is counted: show it
                    state["dead_duplicates"].append(_Node(seg=seg, stream=task.stream, score=-math.inf))
                continue
            child = _Node(seg=seg, stream=task.stream, score=score(seg, self.objective),
                          log_prior=segment_log_prob(seg, start))
            node.keys[key] = child
            node.children.append(child)
            new.append(child)
        await self._evaluate(ctx, critic, new, state)
        node.expanded = True
        state["nodes"] += len(new)
        return new

    async def _evaluate(self, ctx: RunContext, critic: Any, nodes: list[_Node], state: dict) -> None:
        running = [n for n in nodes if n.status == "running" and n.score > -math.inf]
        estimates = [0.0] * len(running)
        if critic is not None and running:
            estimates = await evaluate_all(critic, [n.seg.trace for n in running], "TreeSearch value")
            self._charge(ctx, critic, state)
        for n, v in zip(running, estimates):
            n.value = n.score + v
        for n in nodes:
            if n.status != "running" or n.score == -math.inf:
                n.value = n.score if n.status == "finished" else -math.inf
                n.closed = True
                if n.status == "finished" and n.score > -math.inf:
                    state["finished"].append(n)
            self._widen(state, n.value)

    @staticmethod
    def _charge(ctx: RunContext, critic: Any, state: dict) -> None:
        """Charge the value function's own executions (rollouts) to the run's tokens and LLM calls."""
        usage = getattr(critic, "usage", None)
        if usage:
            spent = state.setdefault("value_spent", {"tokens": 0, "llm_calls": 0})
            ctx.diagnostics.tokens += usage["tokens"] - spent["tokens"]
            ctx.diagnostics.llm_calls += usage["llm_calls"] - spent["llm_calls"]
            spent.update(tokens=usage["tokens"], llm_calls=usage["llm_calls"])

    def _backup(self, path: list[_Node], state: dict) -> None:
        for node in reversed(path):
            node.visits += 1
            live = [c.value for c in node.children if c.value > -math.inf]
            node.value = backup_value(live, self.backup, self.omega) if live else -math.inf
            node.closed = all(c.closed for c in node.children)
            self._widen(state, node.value)

    @staticmethod
    def _widen(state: dict, value: float) -> None:
        if math.isfinite(value):
            state["lo"], state["hi"] = min(state["lo"], value), max(state["hi"], value)

    # -- reporting ---------------------------------------------------------------------------------
    def _record(self, ctx: RunContext, simulation: int, leaf: _Node, children: list[_Node], state: dict,
                started: int) -> None:
        """A simulation's step: the children it expanded, weighed by their joint mass log π + log w
        (the result's particle weights, as Beam's steps), in `diagnostics.steps` (ESS 1/Σ w̄² of
        those, the live children) and in the listener record alike; the record also holds the
        children that died as duplicates of another (merged, but counted in `diagnostics.deaths`,
        so listeners count the same deaths). The record carried the
        children's values Q as log weights and the diagnostics the number of children as ESS and
        of traces found as alive, so a stream and the diagnostics disagreed at most steps."""
        bound = evidence_lower_bound([n.seg.trace for n in state["finished"]])
        log_p = np.array([joint_log_mass(c.seg.trace) for c in children])
        live = int(np.sum(log_p > -math.inf))
        ctx.diagnostics.steps.append(StepStats(step=simulation, ess=float(ess(log_p)) if live else 0.0,
                                               log_evidence=bound, resampled=False, num_alive=live))
        shown = children + state.pop("dead_duplicates", [])  # dead duplicates: merged, but their deaths count
        if shown:
            ctx.emit_segments(simulation, [c.seg for c in shown],
                              np.concatenate([log_p, np.full(len(shown) - len(children), -math.inf)]), bound,
                              ids=[c.stream for c in shown], parents=[leaf.stream] * len(shown),
                              increments=np.zeros(len(shown)))

    def _result(self, ctx: RunContext, root: _Node, state: dict, simulations: int, critic: Any) -> Result:
        found = sorted(state["finished"], key=lambda n: -n.score)
        if not found and root.closed:
            raise ctx.diagnostics.no_survivors(ctx.policy_name)
        particles = [Particle(id=n.stream, value=n.seg.value, log_weight=joint_log_mass(n.seg.trace),
                              trace=n.seg.trace) for n in found]
        children = [{"value": c.value, "visits": c.visits, "log_prior": c.log_prior, "status": c.status,
                     "samples": c.seg.trace.samples()} for c in root.children]
        return ctx.result(particles, evidence_lower_bound([n.seg.trace for n in found]), extra={
            "best": particles[0] if particles else None, "best_score": found[0].score if found else -math.inf,
            "scores": [n.score for n in found], "root_value": root.value, "root_children": children,
            "num_nodes": state["nodes"], "executions": state["executions"], "simulations": simulations,
            "exhausted": root.closed, "objective": self.objective, "backup": self.backup,
            "value_usage": dict(getattr(critic, "usage", {}) or {})})
