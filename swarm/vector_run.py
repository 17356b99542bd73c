"""A vectorised execution: one run of a program for all N particles at once.

Under `VectorRun`, a statement acts on the whole population: `sample(name, dist)` returns an array
of N values (x_i ~ q, drawn by `swarm.vector_draws`), `factor(name, ℓ)` takes N log-potentials (or
one shared by all), `guarantee(name, c)` N truth values. The program must be array-polymorphic:
every particle executes the same statements, so control flow may not branch on a particle's value
(`np.where` instead of `if`). What it buys: the per-particle cost of a statement is a numpy
element, not a Python call.

The weights, per particle i (docs/theory.md §1.3 and §3):

    sample with a proposal q ≠ p:   W_i ← W_i + log p(x_i) − log q(x_i)
    target factor ℓ:                W_i ← W_i + ℓ_i
    shaping factor s (a twist):     W_i ← W_i + s_i − s_i⁻  (s⁻ the previous twist; removed at the end)
    guarantee c:                    W_i ← −∞ where c_i is false

Sync points are those of `policies.SMC`: each weighting statement outside a plate, and the end of a
plate that weighted. At each one the handler calls `on_sync(site)`, where the policy weighs the
population and may resample. Resampling cannot move a Python program's local variables between
particles, so it *restarts* the execution: every recorded site is gathered by the ancestors
(x ← x[a], as offspring inherit their parent's past), the program runs again from its start with
each statement replaying its recorded column (no draw, no weight), and continues live after the
sync point. A resampling costs O(statements so far) array operations, whatever N is.

A generator program (`VectorRun.drive`) hands its state to the engine instead: each step ends with
`state = yield state`, the yields are the sync points, and a resampling gathers the yielded state
and sends it back, so nothing is replayed and the run is linear in its steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Generator

import numpy as np

from swarm.effects import Handler, Message, set_vector_run, reset_vector_run
from swarm.errors import InvalidDistributionError, InvalidPotentialError, NondeterminismError, NotVectorizable
from swarm.trace import LazyTrace, factor_event, guarantee_event, sample_event
from swarm.vector_draws import draw_batch, log_prob_batch, one_per_particle

__all__ = ["Column", "Restart", "Stop", "VectorRun", "VectorTrace", "gather_state", "per_particle"]


class Restart(BaseException):
    """Raised at a sync point after resampling: run the program again from its start (replaying)."""


class Stop(BaseException):
    """Raised at a sync point when the policy stops the run there (max_steps, a budget)."""


@dataclass(slots=True)
class Column:
    """One executed statement for the whole population: N values (a sample's draws, a factor's
    log-potentials, a guarantee's truth values), particle i's in row i."""

    kind: str
    address: str
    value: np.ndarray
    log_prob: np.ndarray | None = None
    """A sample's log q(x_i)."""
    target_log_prob: np.ndarray | None = None
    """A sample's log p(x_i) when it was drawn from a proposal q ≠ p (else None)."""
    shaping: bool = False
    dist: str = ""
    epoch: int = 0
    """The number of resamplings before the population whose order the rows follow."""

    def gather(self, index: np.ndarray, epoch: int) -> "Column":
        """The column in the order of the population at `epoch`: row j ← row index[j]."""
        take = (lambda a: None if a is None else a[index])
        return Column(self.kind, self.address, self.value[index], take(self.log_prob),
                      take(self.target_log_prob), self.shaping, self.dist, epoch)

    def event(self, i: int) -> Any:
        """Particle i's trace event for this statement."""
        value = self.value[i]
        value = value.item() if isinstance(value, np.generic) else value
        if self.kind == "sample":
            target = None if self.target_log_prob is None else float(self.target_log_prob[i])
            return sample_event(self.address, value, float(self.log_prob[i]), target, self.dist, {})
        if self.kind == "factor":
            return factor_event(self.address, float(value), self.shaping, 1.0)
        return guarantee_event(self.address, bool(value))


class VectorTrace(LazyTrace):
    """Particle i's `Trace`, built from the run's columns the first time it is read."""

    __slots__ = ("_columns", "_index")

    def __init__(self, columns: list[Column], index: int) -> None:
        super().__init__()
        self._columns = columns
        self._index = index

    def _materialise(self) -> list[Any]:
        return [column.event(self._index) for column in self._columns]


class VectorRun(Handler):
    """The handler of a vectorised execution (see the module docstring). `on_sync(site)` is the
    policy's step; it may call `resample(ancestors, log_w)` (the execution then restarts) or
    `stop()` (the execution ends at this sync point)."""

    def __init__(self, n: int, rng: np.random.Generator, on_sync: Callable[[str], None]) -> None:
        super().__init__()
        self.n = n
        self.rng = rng
        self.on_sync = on_sync
        self.columns: list[Column] = []
        self.ancestry: list[np.ndarray] = []
        """The ancestors of each resampling so far: resampling e takes the population at epoch e
        to epoch e + 1 (particle j ← particle ancestry[e][j])."""
        self.log_w = np.zeros(n)
        self.twist = np.zeros(n)
        self.deaths: dict[str, int] = {}
        self._position = 0
        self._names: dict[str, int] = {}
        self._pending = False
        self._restart = self._stop = False
        self.explicit_steps = False
        """A generator program (see `drive`): its steps end at its yields, not at each weighting
        statement, and resampling gathers the state it yields instead of restarting it."""

    # -- the policy's side ------------------------------------------------------------------------
    def begin(self) -> None:
        """Start (or restart) an execution of the program: replay the recorded columns, then go on."""
        self._position = 0
        self._names = {}
        self._pending = self._restart = self._stop = False

    def resample(self, ancestors: np.ndarray, log_w: np.ndarray) -> None:
        """Particle j becomes a copy of particle ancestors[j]; the execution restarts after `on_sync`
        (a generator program's yielded state is gathered instead: `drive`)."""
        self.ancestry.append(ancestors)
        if not self.explicit_steps:  # the restart replays the columns: in the new population's order
            self.columns = [column.gather(ancestors, len(self.ancestry)) for column in self.columns]
        self.twist = self.twist[ancestors]
        self.log_w = log_w
        self._restart = not self.explicit_steps

    def final_columns(self) -> list[Column]:
        """Every column in the order of the final population: a column recorded at epoch e is
        gathered once by the composed ancestors a_e ∘ … ∘ a_last (linear in the steps, where
        gathering every column at every resampling would be quadratic). The columns are gathered
        in place, newest first (their epochs never decrease along the list), so the run holds one
        composed index and one column's old rows at a time on top of its columns."""
        last = len(self.ancestry)
        columns = self.columns
        composed: np.ndarray | None = None
        epoch = last
        for i in range(len(columns) - 1, -1, -1):
            column = columns[i]
            while epoch > column.epoch:
                epoch -= 1
                composed = self.ancestry[epoch] if composed is None else self.ancestry[epoch][composed]
            if column.epoch != last:
                columns[i] = column.gather(composed, last)
        return columns

    def stop(self) -> None:
        self._stop = True

    def finish(self) -> None:
        """The program returned: remove the last twist (shaping factors telescope to zero)."""
        self.log_w = self.log_w - self.twist
        self.twist = np.zeros(self.n)

    # -- the program's side -------------------------------------------------------------------------
    def __enter__(self) -> "VectorRun":
        super().__enter__()
        self._vector_token = set_vector_run(self.n)
        return self

    def __exit__(self, *exc: Any) -> None:
        reset_vector_run(self._vector_token)
        super().__exit__(*exc)

    def process_message(self, msg: Message) -> None:
        kind = msg.type
        if kind == "sample":
            self._sample(msg)
        elif kind == "factor" or kind == "guarantee":
            self._weigh(msg)
        elif kind == "sync":
            if not msg.plates and self._pending and not self.explicit_steps:
                self._sync(msg.name)
        elif kind == "name":
            msg.value = self._names.get(msg.name, 0)
            self._names[msg.name] = msg.value + 1
        elif kind == "interact":
            raise NotVectorizable(f"{msg.name!r}: a message between agents (interact) is per particle; a vectorised "
                                  "run executes numeric statements for all particles at once: use policies.SMC")
        else:
            raise NotVectorizable(f"{msg.name!r}: a {kind!r} statement has no vectorised meaning: use policies.SMC")

    def _replayed(self, msg: Message, kind: str) -> Column | None:
        """The recorded column this statement replays, checked against it, or None when live."""
        if self._position >= len(self.columns):
            return None
        column = self.columns[self._position]
        if column.kind != kind or column.address != msg.name:
            raise NondeterminismError(
                f"vectorised replay: statement {self._position} was {column.kind} {column.address!r}, the program "
                f"now executed {kind} {msg.name!r}; a vectorised program must execute the same statements each run")
        self._position += 1
        msg.replayed = True
        return column

    def _sample(self, msg: Message) -> None:
        if msg.is_async:
            raise NotVectorizable(f"sample {msg.name!r}: {msg.fn.describe()} is an LLM generation (asynchronous), "
                                  "which a vectorised run cannot draw for all particles at once: use policies.SMC, "
                                  "whose backends batch the particles' calls")
        column = self._replayed(msg, "sample")
        if column is not None:
            msg.value, msg.log_prob, msg.target_log_prob = column.value, 0.0, None
            return
        dist, proposal = msg.fn, msg.proposal
        try:
            values, log_q = draw_batch(dist if proposal is None else proposal, self.rng, self.n)
            log_p = None if proposal is None else log_prob_batch(dist, values)
        except NotVectorizable as exc:
            raise NotVectorizable(f"sample {msg.name!r}: {exc}") from exc
        if len(values) != self.n or len(log_q) != self.n:
            raise InvalidDistributionError(f"sample {msg.name!r}: a batched draw returned {len(values)} values "
                                           f"for {self.n} particles")
        if np.isnan(log_q).any() or (log_p is not None and np.isnan(log_p).any()):
            raise InvalidDistributionError(f"sample {msg.name!r}: a log-probability is NaN")
        if log_p is not None:
            with np.errstate(invalid="ignore"):
                increment = np.where(log_p == -math.inf, -math.inf, log_p - log_q)
            self._add(msg.name, increment)
            self._pending = True
        self.columns.append(Column("sample", msg.name, values, log_q, log_p, dist=dist.describe(),
                                   epoch=len(self.ancestry)))
        self._position += 1
        msg.value, msg.log_prob, msg.target_log_prob = values, 0.0, None

    def _weigh(self, msg: Message) -> None:
        kind = msg.type
        if self._replayed(msg, kind) is not None:
            return
        if kind == "factor":
            values = potentials(msg.name, msg.value, self.n)
            if msg.shaping:
                self._add(msg.name, values - self.twist)
                self.twist = values
            else:
                self._add(msg.name, values)
        else:
            values = conditions(msg.name, msg.value, self.n)
            self._add(msg.name, np.where(values, 0.0, -math.inf))
        self.columns.append(Column(kind, msg.name, values, shaping=bool(msg.shaping), epoch=len(self.ancestry)))
        self._position += 1
        if msg.plates or self.explicit_steps:
            self._pending = True
        else:
            self._sync(msg.name)

    def _add(self, site: str, increment: np.ndarray) -> None:
        alive = self.log_w > -math.inf
        self.log_w = self.log_w + increment
        killed = int(np.count_nonzero(alive & (self.log_w == -math.inf)))
        if killed:
            self.deaths[site] = self.deaths.get(site, 0) + killed

    def _sync(self, site: str) -> None:
        self._pending = False
        self.on_sync(site)
        if self._stop:
            raise Stop()
        if self._restart:
            raise Restart()

    # -- generator programs: explicit state, no restart -------------------------------------------
    def drive(self, program: Generator[Any, Any, Any]) -> Any:
        """Run a generator program, whose steps end at its yields:

            state = yield state      # a sync point; after resampling, state ← state[a]

        The state it yields (arrays with one row per particle, or tuples, lists and dicts of them)
        is all it carries from one step to the next; resampling gathers it and sends it back, so
        the program goes on live with no restart: linear in the steps. A local variable of the
        program that holds per-particle values across a yield without being part of the state
        would keep its old rows: that raises `NotVectorizable` naming it. Returns the value the
        program returns."""
        self.explicit_steps = True
        sent: Any = None
        step = 0
        try:
            while True:
                try:
                    state = program.send(sent)
                except StopIteration as stop:
                    return stop.value
                step += 1
                resamplings = len(self.ancestry)
                if self._pending:
                    self._sync(f"yield {step}")
                sent = state
                if len(self.ancestry) > resamplings:
                    _check_carried(program, state, self.n)
                    sent = gather_state(state, self.ancestry[-1], self.n)
        finally:
            program.close()


def gather_state(state: Any, ancestors: np.ndarray, n: int) -> Any:
    """`state` with every per-particle array (first axis of length N) indexed by the ancestors,
    through tuples, lists and dicts; anything else (a shared value) as it is."""
    if isinstance(state, np.ndarray):
        return state[ancestors] if state.ndim >= 1 and state.shape[0] == n else state
    if isinstance(state, (tuple, list)):
        return type(state)(gather_state(v, ancestors, n) for v in state)
    if isinstance(state, dict):
        return {k: gather_state(v, ancestors, n) for k, v in state.items()}
    return state


def _per_particle_objects(value: Any, n: int, depth: int = 0) -> list[int]:
    """The ids of the per-particle arrays in `value` (through tuples, lists, dicts)."""
    if isinstance(value, np.ndarray):
        return [id(value)] if value.ndim >= 1 and value.shape[0] == n else []
    if depth < 4 and isinstance(value, (tuple, list)):
        return [i for v in value for i in _per_particle_objects(v, n, depth + 1)]
    if depth < 4 and isinstance(value, dict):
        return [i for v in value.values() for i in _per_particle_objects(v, n, depth + 1)]
    return []


def _check_carried(program: Generator[Any, Any, Any], state: Any, n: int) -> None:
    """Refuse a program that keeps per-particle values across a yield outside its yielded state:
    after resampling they would still be the old particles' rows."""
    frame = program.gi_frame
    if frame is None:
        return
    yielded = set(_per_particle_objects(state, n))
    for name, value in frame.f_locals.items():
        held = _per_particle_objects(value, n)
        if any(i not in yielded for i in held):
            raise NotVectorizable(
                f"the program keeps per-particle values in {name!r} across a yield without yielding them: after "
                f"resampling they would be other particles' rows. Yield them with the state, or `del {name}` "
                f"before the yield (an array whose first axis has the population's length, {n}, counts as "
                "per-particle)")


def potentials(name: str, value: Any, n: int) -> np.ndarray:
    """A factor's N log-potentials as floats: an array of shape (N,), or one value for every particle;
    no NaN, no +inf (−inf kills)."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, np.ndarray) and value.dtype == bool):
        raise InvalidPotentialError(f"factor {name!r}: got booleans; use guarantee({name!r}, condition) for hard "
                                    "constraints")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidPotentialError(f"factor {name!r}: the log-potentials must be real numbers ({exc})") from exc
    arr = _per_particle_shape(name, "factor", "log-potentials", arr, n)
    if np.isnan(arr).any():
        raise InvalidPotentialError(f"factor {name!r}: the log-potential of particle {int(np.argmax(np.isnan(arr)))} "
                                    "is NaN")
    if (arr == math.inf).any():
        raise InvalidPotentialError(f"factor {name!r}: the log-potential of particle {int(np.argmax(arr == math.inf))} "
                                    "is +inf (Φ must be finite)")
    return arr


def conditions(name: str, value: Any, n: int) -> np.ndarray:
    """A guarantee's N truth values: an array of shape (N,), or one for every particle; no NaN."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise InvalidPotentialError(f"guarantee {name!r}: a condition is NaN (bool(NaN) would be True); pass a "
                                    "comparison, e.g. score > threshold")
    if arr.dtype.kind not in "biuf":
        raise InvalidPotentialError(f"guarantee {name!r}: the conditions must be truth values, got {arr.dtype} "
                                    "values")
    return _per_particle_shape(name, "guarantee", "conditions", arr.astype(bool), n)


def _per_particle_shape(name: str, kind: str, what: str, arr: np.ndarray, n: int) -> np.ndarray:
    rows = one_per_particle(arr, n)
    if rows is None:
        raise InvalidPotentialError(f"{kind} {name!r}: a vectorised run of {n} particles needs {n} {what} (shape "
                                    f"({n},)) or one for all, got shape {arr.shape}")
    return rows


def per_particle(value: Any, n: int) -> list[Any]:
    """The program's return value split into the N particles' values: an array whose first axis is
    the particles (row i is particle i's), a tuple of such arrays (particle i gets the tuple of its
    rows), or a value with no particle axis (shared by all)."""
    if isinstance(value, np.ndarray) and value.ndim >= 1:
        if value.shape[0] != n:
            raise NotVectorizable(f"the program returned an array of shape {value.shape}; a vectorised program "
                                  f"returns one row per particle (shape ({n}, ...)), a tuple of such arrays, or one "
                                  "value shared by all")
        return value.tolist() if value.dtype != object or value.ndim == 1 else list(value)
    if isinstance(value, tuple) and value and all(isinstance(v, np.ndarray) and v.ndim >= 1 for v in value):
        return list(zip(*(per_particle(v, n) for v in value)))
    if isinstance(value, (list, dict, set)):
        raise NotVectorizable(f"the program returned a {type(value).__name__}; a vectorised program returns one row "
                              f"per particle: an array of shape ({n}, ...) (np.stack a list of arrays), a tuple of "
                              "such arrays, or one value shared by all")
    return [value.item() if isinstance(value, np.generic) else value] * n
