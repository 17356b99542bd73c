"""Checkpoints of a population run: written atomically after each step, read back to resume.

    policies.SMC(num_particles=500, seed=0, checkpoint="runs/ckpt").run(program)     # writes
    policies.SMC(num_particles=500, seed=0).resume("runs/ckpt", program)            # continues

A checkpoint directory holds

    population.ckpt   the population after the last completed step (this module)
    responses.jsonl   the run's response journal: every completed LLM call, appended as it completes
                      (written by `agents.cache.ResponseCache`; the core only names the file)

so that a driver killed at any moment resumes without repeating a completed LLM call: calls made
before the last checkpoint are in the particles' traces (replay never calls a backend), calls made
after it are in the journal (the response cache answers them). Particles that run in other
processes (Ray segment workers) learn the directory from a `CheckpointScope` handler that the
policy adds to every segment (`active_checkpoint()` finds it), and append to the same journal (one
`write` per line in append mode; on a cluster the directory must be on a filesystem the nodes share).

What `population.ckpt` holds (`PopulationCheckpoint`): the step, the run seed, every particle's last
segment (trace, status, value, sync count, weights), ids, parent ids, log weights W and effective
log weights, the next free id, the genealogy and the diagnostics so far. That is the whole state of
an SMC run between steps: all randomness is addressed by (seed, particle stream, site address) and
resampling draws from a generator keyed by (seed, step) (`RunContext.step_rng`), so there is no
generator state to save and the resumed run draws exactly what the uninterrupted run would have.

File format: one header line, then the payload.

    PLPCKPT1 {"format": "plp-swarm-checkpoint/1", "step": 3, "payload_bytes": N, "sha256": "…"}\\n
    <N bytes: pickle (protocol 5) of a PopulationCheckpoint>

The payload is a pickle because trace values are arbitrary Python objects (tuples, dataclasses,
pydantic objects) and floats include -inf: resuming must reproduce them exactly, which JSON cannot.
Load checkpoints you wrote yourself only (like `torch.load`, unpickling runs code).

Writing is atomic: the bytes go to `population.ckpt.tmp`, which is fsynced, then `os.replace`d over
the old file (and the directory fsynced), so a reader sees the previous checkpoint or the new one.
A torn or corrupted file (a copy cut short, a disk error) fails the length or checksum test on load
with a `CheckpointError` that says which. A failed write (ENOSPC: disk full, EACCES, ...) raises a
`CheckpointError` naming the file and the cause, removes the partial temporary file and leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import copyreg
import dataclasses
import errno
import hashlib
import io
import json
import os
import pickle
from operator import attrgetter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarm.errors import SwarmError
from swarm.execution import Segment
from swarm.result import Diagnostics
from swarm.runtime import Handler, active_handlers
from swarm.trace import ErrorEvent, FactorEvent, GuaranteeEvent, InteractEvent, SampleEvent

FORMAT = "plp-swarm-checkpoint/1"
MAGIC = b"PLPCKPT1"
POPULATION_FILE = "population.ckpt"
RESPONSE_JOURNAL = "responses.jsonl"
"""The response journal's file name inside a checkpoint directory (written by the agents layer)."""
CHECKPOINT_DIR_KEY = "swarm.checkpoint_dir"
"""`run_scope()` key holding the checkpoint directory of the current run (None-less: absent when the
run does not checkpoint). Layers above the core read it, e.g. to journal LLM responses there."""

__all__ = ["CheckpointError", "CheckpointHeader", "PopulationCheckpoint", "Checkpointer", "write_atomic",
           "read_checkpoint", "CheckpointScope", "ScopedHandlers", "active_checkpoint", "FORMAT", "POPULATION_FILE",
           "RESPONSE_JOURNAL", "CHECKPOINT_DIR_KEY"]


class CheckpointError(SwarmError):
    """A checkpoint could not be written or read. `.path` names the file; the message says why."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = str(path)
        super().__init__(f"checkpoint {self.path}: {message}")


class CheckpointHeader(BaseModel):
    """The first line of a checkpoint file (after the magic bytes)."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    step: int = Field(ge=0)
    payload_bytes: int = Field(ge=0)
    sha256: str


class PopulationCheckpoint(BaseModel):
    """The state of a population run after `step` (see the module docstring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    policy: str
    """The policy class name; resuming with another policy is refused."""
    config: dict[str, Any]
    """The settings that change the result (num_particles, resampling, ess_threshold, ...)."""
    program: str
    seed: int
    run_id: str
    step: int = Field(ge=0)
    segments: list[Segment | None]
    ids: list[int]
    parents: list[int | None]
    log_w: list[float]
    eff: list[float]
    resume: list[int | str | None]
    next_id: int
    genealogy: list[list[int]]
    diagnostics: Diagnostics
    elapsed_s: float = 0.0
    """Wall time spent before this checkpoint (a resumed run's time budget counts it)."""


# -- bytes on disk ------------------------------------------------------------------------------
_EVENT_CLASSES = (SampleEvent, FactorEvent, GuaranteeEvent, InteractEvent, ErrorEvent)
_EVENT_FIELDS = tuple(tuple(f.name for f in dataclasses.fields(c) if f.name != "type") for c in _EVENT_CLASSES)


def _rebuild_event(tag: int, values: tuple) -> Any:
    """Unpickle an event pickled as (class tag, field values)."""
    return _EVENT_CLASSES[tag](**dict(zip(_EVENT_FIELDS[tag], values)))


def _event_reducer(tag: int, get: Any) -> Any:
    return lambda event: (_rebuild_event, (tag, get(event)))


_DISPATCH = copyreg.dispatch_table.copy()
for _tag, (_cls, _names) in enumerate(zip(_EVENT_CLASSES, _EVENT_FIELDS)):
    _DISPATCH[_cls] = _event_reducer(_tag, attrgetter(*_names))
"""Events as (tag, field tuple): 3-4x faster to pickle than the default reduction of slotted classes."""


def encode(state: PopulationCheckpoint) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(state)
    payload = buffer.getvalue()
    header = CheckpointHeader(step=state.step, payload_bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    return MAGIC + b" " + header.model_dump_json().encode() + b"\n" + payload


def decode(path: Path, data: bytes) -> PopulationCheckpoint:
    """The checkpoint in `data` (read from `path`), after the magic, length and checksum tests."""
    line, newline, payload = data.partition(b"\n")
    if not line.startswith(MAGIC + b" ") or not newline:
        raise CheckpointError(path, f"not a plp-swarm checkpoint (no {MAGIC.decode()} header line; "
                                    f"{len(data)} bytes): the file is torn or of another kind")
    try:
        header = CheckpointHeader.model_validate_json(line[len(MAGIC) + 1:])
    except ValidationError as exc:
        raise CheckpointError(path, f"unreadable header: {exc.errors(include_url=False)[0]['msg']}") from None
    if header.format != FORMAT:
        raise CheckpointError(path, f"format {header.format!r} is not {FORMAT!r}")
    if len(payload) != header.payload_bytes:
        raise CheckpointError(path, f"torn checkpoint: the header announces {header.payload_bytes} payload bytes, "
                                    f"the file has {len(payload)} (the write or a copy was interrupted)")
    if hashlib.sha256(payload).hexdigest() != header.sha256:
        raise CheckpointError(path, "corrupt checkpoint: the payload's sha256 does not match the header")
    try:
        state = pickle.loads(payload)
    except Exception as exc:  # noqa: BLE001 - e.g. a class the program defined was renamed
        raise CheckpointError(path, f"payload cannot be unpickled: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, PopulationCheckpoint):
        raise CheckpointError(path, f"payload is a {type(state).__name__}, not a PopulationCheckpoint")
    return state


def write_atomic(path: str | os.PathLike[str], data: bytes, *, what: str = "") -> None:
    """Write `data` to `path` atomically: temp file, fsync, `os.replace`, fsync of the directory.

    On failure the temp file is removed, `path` keeps its previous content, and a `CheckpointError`
    names the file and the OS error (with a hint for a full disk)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        hint = " (the disk is full)" if exc.errno == errno.ENOSPC else ""
        kept = "the previous checkpoint is intact" if path.exists() else "no checkpoint was written"
        raise CheckpointError(path, f"could not write {what or 'it'}: {exc.strerror or exc}{hint}; {kept}") from exc
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | os.PathLike[str]) -> PopulationCheckpoint:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(path, "no checkpoint here (nothing was written, or the directory is wrong)") from None
    except OSError as exc:
        raise CheckpointError(path, f"cannot read it: {exc.strerror or exc}") from exc
    return decode(path, data)


# -- a run's checkpoint directory ---------------------------------------------------------------
class Checkpointer:
    """The checkpoint directory of one run: writes `population.ckpt` every `every` steps."""

    def __init__(self, directory: str | os.PathLike[str], every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"Checkpointer: every must be >= 1, got {every}")
        self.directory = Path(directory)
        self.every = every
        self.written = 0
        """Checkpoints written by this object."""
        self.last_step: int | None = None

    @property
    def population_path(self) -> Path:
        return self.directory / POPULATION_FILE

    @property
    def journal_path(self) -> Path:
        return self.directory / RESPONSE_JOURNAL

    def start_fresh(self) -> None:
        """A new run: create the directory; remove a previous run's checkpoint and journal."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for path in (self.population_path, self.journal_path):
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise CheckpointError(self.directory, f"cannot prepare the directory: {exc.strerror or exc}") from exc

    def due(self, step: int, final: bool = False) -> bool:
        return final or step % self.every == 0

    def save(self, state: PopulationCheckpoint) -> None:
        try:
            data = encode(state)
        except Exception as exc:  # noqa: BLE001 - e.g. a lambda or an open file among the values
            raise CheckpointError(self.population_path, f"the population of step {state.step} cannot be pickled "
                                  f"({type(exc).__name__}: {exc}); sampled values, interact contents and return "
                                  "values must be picklable to checkpoint a run") from exc
        write_atomic(self.population_path, data, what=f"the checkpoint of step {state.step}")
        self.written += 1
        self.last_step = state.step

    def load(self) -> PopulationCheckpoint:
        return read_checkpoint(self.population_path)

    def describe(self) -> dict[str, Any]:
        """What is on disk: the last step written and the journal's size (for logs and the CLI)."""
        info: dict[str, Any] = {"directory": str(self.directory)}
        try:
            with open(self.population_path, "rb") as fh:
                line = fh.readline()
            info["step"] = json.loads(line[len(MAGIC) + 1:])["step"]
        except (OSError, ValueError, KeyError):
            info["step"] = None
        info["journal_bytes"] = self.journal_path.stat().st_size if self.journal_path.exists() else 0
        return info


# -- the checkpoint directory, seen from inside a particle ----------------------------------------
class CheckpointScope(Handler):
    """A no-op handler that names the run's checkpoint directory (and run id) to the code running
    inside a particle, wherever the segment runs (it travels with the `SegmentRunner`)."""

    def __init__(self, directory: str, run_id: str) -> None:
        super().__init__()
        self.checkpoint_dir = directory
        self.run_id = run_id


def active_checkpoint() -> tuple[str, str] | None:
    """(directory, run id) of the checkpointed run whose particle is executing here, if any."""
    for handler in active_handlers():
        if isinstance(handler, CheckpointScope):
            return handler.checkpoint_dir, handler.run_id
    return None


class ScopedHandlers:
    """A picklable `extra_handlers` factory: a `CheckpointScope` first, then `inner()`'s handlers."""

    def __init__(self, directory: str, run_id: str, inner: Any = None) -> None:
        self.directory = directory
        self.run_id = run_id
        self.inner = inner

    def __call__(self) -> list[Handler]:
        return [CheckpointScope(self.directory, self.run_id), *(self.inner() if self.inner is not None else [])]
