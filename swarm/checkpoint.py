"""Checkpoints of a population run: an append-only log of the global trace, read back to resume.

    policies.SMC(num_particles=500, seed=0, checkpoint="runs/ckpt").run(program)     # writes
    policies.SMC(num_particles=500, seed=0).resume("runs/ckpt", program)            # continues

A checkpoint directory holds

    population.ckpt   the run's log: a header frame, then one frame per checkpointed step (this module)
    responses.jsonl   the run's response journal: every completed LLM call, appended as it completes
                      (written by `agents.cache.ResponseCache`; the core only names the file)

so that a driver killed at any moment resumes without repeating a completed LLM call: calls made
before the last checkpoint are in the global trace (replay never calls a backend), calls made after
it are in the journal (the response cache answers them). Code running inside a particle, in this
process or a Ray worker, finds the directory in `run_scope()[CHECKPOINT_DIR_KEY]` (the segment
runner carries it); on a cluster the directory must be on a filesystem the nodes share.

A step frame holds only what the step added: the global trace's new nodes (`GlobalTrace.since`), the
population's arrays (ids, parents, leaves, log weights W, effective weights, statuses, sync counts,
finished values: O(N), never the traces), the step's genealogy row and the diagnostics so far. That
is the whole state of an SMC run between steps: all randomness is addressed by (seed, particle
stream, site address) and resampling draws from a generator keyed by (seed, step), so there is no
generator state to save and the resumed run draws exactly what the uninterrupted run would have
(its executions are rebuilt by replay from the tree).

Frame format: one header line, then the payload.

    PLPCKPT2 {"format": "plp-swarm-checkpoint/3", "kind": "step", "step": 3, "payload_bytes": N, "sha256": "…"}\\n
    <N bytes: pickle (protocol 5)>

Format 3 differs from 2 in one respect: a step frame's diagnostics carry only the per-step records
(`Diagnostics.steps`) of the steps since the previous frame, from index `steps_from` of the run's
list, so a run checkpointed at every step writes O(T) of them, not O(T²); the reader puts the whole
list back into every frame it returns. Logs of format 2 (whole lists in every frame) are still read,
and a run resumed from one appends format-3 frames to it. The magic bytes are format 2's.

The payload is a pickle because trace values are arbitrary Python objects and floats include −inf:
resuming must reproduce them exactly, which JSON cannot. Load checkpoints you wrote yourself only
(like `torch.load`, unpickling runs code).

Appending is all-or-nothing for readers: a frame is written with one `write` loop and fsynced; a
frame cut short (the driver killed mid-append) fails its length test and is ignored on load, which
returns the last complete step. A failed write (ENOSPC: disk full, EACCES, ...) truncates the file
back to its previous length and raises a `CheckpointError` naming the file and the cause: the
previous checkpoint is intact. A frame whose checksum fails, or garbage where a frame should start,
is a `CheckpointError` (a damaged file is never silently half-read).
"""

from __future__ import annotations

import copyreg
import dataclasses
import errno
import fcntl
import hashlib
import io
import os
import pickle
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarm.errors import SwarmError
from swarm.result import Diagnostics
from swarm.trace import ErrorEvent, FactorEvent, GuaranteeEvent, InteractEvent, SampleEvent

FORMAT = "plp-swarm-checkpoint/3"
READABLE_FORMATS = (FORMAT, "plp-swarm-checkpoint/2")
MAGIC = b"PLPCKPT2"
POPULATION_FILE = "population.ckpt"
RESPONSE_JOURNAL = "responses.jsonl"
"""The response journal's file name inside a checkpoint directory (written by the agents layer)."""
CHECKPOINT_DIR_KEY = "swarm.checkpoint_dir"
"""`run_scope()` key holding the checkpoint directory of the current run (absent when the run does
not checkpoint). Layers above the core read it, e.g. to journal LLM responses there."""
RUN_ID_KEY = "swarm.run_id"

__all__ = ["CheckpointError", "FrameHeader", "RunHeader", "StepFrame", "PopulationCheckpoint", "Checkpointer",
           "write_atomic", "read_checkpoint", "FORMAT", "POPULATION_FILE", "RESPONSE_JOURNAL", "CHECKPOINT_DIR_KEY",
           "RUN_ID_KEY"]


class CheckpointError(SwarmError):
    """A checkpoint could not be written or read. `.path` names the file; the message says why."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = str(path)
        super().__init__(f"checkpoint {self.path}: {message}")


class FrameHeader(BaseModel):
    """The header line of one frame (after the magic bytes)."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    kind: str
    step: int = Field(ge=0)
    payload_bytes: int = Field(ge=0)
    sha256: str


class RunHeader(BaseModel):
    """The first frame: what run this is (resuming with other settings is refused)."""

    model_config = ConfigDict(extra="forbid")

    policy: str
    config: dict[str, Any]
    """The settings that change the result (num_particles, resampling, ess_threshold, ...)."""
    program: str
    seed: int
    run_id: str
    program_module: str | None = None
    """Where the program is defined (its module, and the module's file), so that a run can be
    resumed without naming it again (`policy.resume(dir, answers=...)`, `swarm resume DIR`)."""
    program_file: str | None = None
    arguments: tuple[tuple, dict] | None = None
    """The program's (args, kwargs), when they pickle (else None: give them again to resume)."""


class StepFrame(BaseModel):
    """What one checkpointed step adds to the log."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    step: int
    tree: dict[str, Any]
    """The global trace's nodes appended since the previous frame (`GlobalTrace.since`)."""
    population: dict[str, Any]
    """The population's arrays after the step (`Population` attributes)."""
    genealogy: list[list[int]]
    """The genealogy rows of the steps since the previous frame."""
    diagnostics: Diagnostics
    """The run's diagnostics after the step. On disk (format 3) their `steps` are the records from
    index `steps_from` on; read back (`decode_log`), every frame holds the run's whole list."""
    steps_from: int = Field(0, ge=0)
    elapsed_s: float = 0.0
    """Wall time spent before this checkpoint (a resumed run's time budget counts it)."""
    answers: dict[str, Any] = Field(default_factory=dict)
    """The answers to people's questions the run had so far (`swarm.human`); a resumed run keeps them."""
    paused: dict[str, Any] | None = None
    """When the run stopped to wait for a person: the step in progress (`swarm.pause.PausedStep`
    state: the segments it produced, the waiting ones partial); the frame's `population` is the one
    before that step."""


class PopulationCheckpoint(BaseModel):
    """A run's log read back: its header, every step frame, and where the last one stands."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    header: RunHeader
    frames: list[StepFrame]
    valid_bytes: int
    """The length of the file's complete frames (a torn tail beyond it is ignored and cut off)."""

    @property
    def step(self) -> int:
        return self.frames[-1].step if self.frames else 0

    @property
    def seed(self) -> int:
        return self.header.seed

    @property
    def last(self) -> StepFrame | None:
        return self.frames[-1] if self.frames else None


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


def encode_frame(kind: str, step: int, obj: Any) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(obj)
    payload = buffer.getvalue()
    header = FrameHeader(kind=kind, step=step, payload_bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    return MAGIC + b" " + header.model_dump_json().encode() + b"\n" + payload


def decode_log(path: Path, data: bytes) -> PopulationCheckpoint:
    """Every complete frame of a log; a torn last frame is left out (see the module docstring)."""
    if not data.startswith(MAGIC + b" "):
        raise CheckpointError(path, f"not a plp-swarm checkpoint (no {MAGIC.decode()} header line; "
                                    f"{len(data)} bytes): the file is torn or of another kind")
    header: RunHeader | None = None
    frames: list[StepFrame] = []
    steps: list[Any] = []
    pos = 0
    while pos < len(data):
        parsed = _frame_at(path, data, pos)
        if parsed is None:  # a frame cut short: the last append was interrupted
            break
        fh, payload, end = parsed
        obj = _unpickle(path, payload)
        if fh.kind == "run":
            header = obj
        else:
            if fh.format == FORMAT:  # the steps since the previous frame, from index steps_from
                steps = steps[:obj.steps_from] + obj.diagnostics.steps
            else:  # format 2: the whole list
                steps = list(obj.diagnostics.steps)
            obj.diagnostics.steps, obj.steps_from = steps, 0
            frames.append(obj)
        pos = end
    if header is None:
        raise CheckpointError(path, "torn checkpoint: the run's header frame is incomplete")
    return PopulationCheckpoint(header=header, frames=frames, valid_bytes=pos)


def _frame_at(path: Path, data: bytes, pos: int) -> tuple[FrameHeader, bytes, int] | None:
    line_end = data.find(b"\n", pos)
    if not data.startswith(MAGIC + b" ", pos):
        raise CheckpointError(path, f"corrupt checkpoint: no frame starts at byte {pos}")
    if line_end == -1:
        return None
    try:
        fh = FrameHeader.model_validate_json(data[pos + len(MAGIC) + 1:line_end])
    except ValidationError as exc:
        raise CheckpointError(path, f"unreadable frame header at byte {pos}: "
                                    f"{exc.errors(include_url=False)[0]['msg']}") from None
    if fh.format not in READABLE_FORMATS:
        raise CheckpointError(path, f"format {fh.format!r} is not one of {', '.join(map(repr, READABLE_FORMATS))}")
    payload = data[line_end + 1:line_end + 1 + fh.payload_bytes]
    if len(payload) != fh.payload_bytes:
        return None
    if hashlib.sha256(payload).hexdigest() != fh.sha256:
        raise CheckpointError(path, f"corrupt checkpoint: the payload's sha256 does not match the header "
                                    f"(frame of step {fh.step} at byte {pos})")
    return fh, payload, line_end + 1 + fh.payload_bytes


def _unpickle(path: Path, payload: bytes) -> Any:
    try:
        return pickle.loads(payload)
    except Exception as exc:  # noqa: BLE001 - e.g. a class the program defined was renamed
        raise CheckpointError(path, f"payload cannot be unpickled: {type(exc).__name__}: {exc}") from None


def write_atomic(path: str | os.PathLike[str], data: bytes, *, what: str = "") -> None:
    """Write `data` to `path` atomically: temp file, fsync, `os.replace`, fsync of the directory.

    On failure the temp file is removed, `path` keeps its previous content, and a `CheckpointError`
    names the file and the OS error (with a hint for a full disk)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _write_error(path, exc, what) from exc
    _fsync_directory(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_error(path: Path, exc: OSError, what: str) -> CheckpointError:
    hint = " (the disk is full)" if exc.errno == errno.ENOSPC else ""
    kept = "the previous checkpoint is intact" if path.exists() and path.stat().st_size else "no checkpoint was written"
    return CheckpointError(path, f"could not write {what or 'it'}: {exc.strerror or exc}{hint}; {kept}")


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
    return decode_log(path, data)


# -- a run's checkpoint directory ---------------------------------------------------------------
LOCK_FILE = ".lock"


def hold_directory(directory: str | os.PathLike[str]) -> Callable[[], None]:
    """Take `directory` for one run and return the function that lets it go (closing the lock file;
    the kernel lets it go too if the process dies). Two runs writing into one directory at once
    (two resumes of one paused run, two runs given one `checkpoint=`) interleave their frames: the
    log they leave cannot be resumed ("global trace log entry starts at node 0, the tree has 250
    nodes"), and a fresh run deletes the other's log. The second one is refused instead, before it
    writes anything. The lock is an advisory `flock` on `<directory>/.lock`, so it holds across
    processes on one machine and between two runs in one process."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CheckpointError(path, f"cannot prepare the directory: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise CheckpointError(path, "another run is writing into this directory right now (a second resume "
                                        "of one paused run?); let it end, or give this run its own directory") from None
        raise CheckpointError(path, f"cannot lock the directory: {exc.strerror or exc}") from exc
    return lambda: os.close(fd)


class Checkpointer:
    """The checkpoint directory of one run: appends a frame to `population.ckpt` every `every` steps."""

    def __init__(self, directory: str | os.PathLike[str], every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"Checkpointer: every must be >= 1, got {every}")
        self.directory = Path(directory)
        self.every = every
        self.written = 0
        """Frames written by this object."""
        self.last_step: int | None = None

    @property
    def population_path(self) -> Path:
        return self.directory / POPULATION_FILE

    @property
    def journal_path(self) -> Path:
        return self.directory / RESPONSE_JOURNAL

    def start_fresh(self, header: RunHeader) -> None:
        """A new run: create the directory; remove a previous run's log and journal; write the header."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for path in (self.population_path, self.journal_path):
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise CheckpointError(self.directory, f"cannot prepare the directory: {exc.strerror or exc}") from exc
        self._append(encode_frame("run", 0, header), "the run's header")

    def due(self, step: int, final: bool = False) -> bool:
        return final or step % self.every == 0

    def save(self, frame: StepFrame) -> None:
        try:
            data = encode_frame("step", frame.step, frame)
        except Exception as exc:  # noqa: BLE001 - e.g. a lambda or an open file among the values
            raise CheckpointError(self.population_path, f"the population of step {frame.step} cannot be pickled "
                                  f"({type(exc).__name__}: {exc}); sampled values, interact contents and return "
                                  "values must be picklable to checkpoint a run") from exc
        self._append(data, f"the checkpoint of step {frame.step}")
        self.written += 1
        self.last_step = frame.step

    def _append(self, data: bytes, what: str) -> None:
        """Append one frame; on failure cut the file back to its previous length."""
        path = self.population_path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise _write_error(path, exc, what) from exc
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, size)
                except OSError:  # pragma: no cover - the reader ignores a torn tail anyway
                    pass
                raise _write_error(path, exc, what) from exc
        finally:
            os.close(fd)

    def load(self) -> PopulationCheckpoint:
        state = read_checkpoint(self.population_path)
        if state.valid_bytes < self.population_path.stat().st_size:  # cut a torn tail before appending again
            os.truncate(self.population_path, state.valid_bytes)
        return state

    def describe(self) -> dict[str, Any]:
        """What is on disk: the last step written and the journal's size (for logs and the CLI)."""
        info: dict[str, Any] = {"directory": str(self.directory), "step": None}
        try:
            data = self.population_path.read_bytes()
        except OSError:
            data = b""
        pos = 0
        while data.startswith(MAGIC + b" ", pos):  # headers only: cheap enough to poll
            line_end = data.find(b"\n", pos)
            try:
                fh = FrameHeader.model_validate_json(data[pos + len(MAGIC) + 1:line_end]) if line_end != -1 else None
            except ValidationError:
                fh = None
            if fh is None or line_end + 1 + fh.payload_bytes > len(data):
                break
            if fh.kind == "step":
                info["step"] = fh.step
            pos = line_end + 1 + fh.payload_bytes
        info["journal_bytes"] = self.journal_path.stat().st_size if self.journal_path.exists() else 0
        return info
