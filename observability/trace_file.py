"""The global trace of a run as JSON Lines: `TraceFileWriter` writes it, `read_trace_file` reads it.

    writer = TraceFileWriter("runs/out.jsonl")
    result = policies.SMC(num_particles=200, listeners=[writer]).run(program)
    writer.close()                       # raises TraceFileError if any write failed
    trace = read_trace_file("runs/out.jsonl")
    trace.lineage(result.particles[0].id), trace.deaths(), trace.final_marginal()

File format (`FORMAT`), one JSON object per line, each written with a single `write(2)` call:

    {"kind": "run_started", "format": "plp-swarm-trace/1", ...RunStarted fields}
    {"kind": "step", ...StepRecord fields, every ParticleStep with its new events}   (one per step)
    {"kind": "run_finished", ...RunFinished fields}

Records are dumped by their pydantic models (`model_dump()`, events included) and made JSON-safe:
tuples and sets become lists, dictionary keys strings, numpy scalars and arrays numbers and lists,
nested models and dataclasses objects, and any other value its `repr` string.
Non-finite floats (a dead particle's -inf log weight) are written as the strings "-inf", "inf"
or "nan", and the line's `"nonfinite"` key lists the path of every such string (e.g.
`["particles", 3, "log_weight"]`), so the reader turns exactly those back into floats: every float
of a record, finite or not, reads back bit for bit (finite floats are written with `repr`).

Failures: a listener must never raise into a run, so `TraceFileWriter` catches its own `OSError`
(disk full, permission denied, a vanished directory) and serialisation errors, keeps the first one
as `.error` (a `TraceFileError` naming the path and the record), logs it once, and stops writing.
`close()` (and `check()`) re-raise it; using the writer as a context manager calls `close()`.

Reading: a last line without its newline (the writer was killed mid-write) is dropped and sets
`GlobalTrace.truncated`; any other malformed line raises `TraceFileError` naming the path, the
line number and the field at fault, and so does a file with no complete record at all (empty, or
only a torn line: not a trace file, or nothing worth reading).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from observability.global_trace import Death, FinalParticle, GlobalTrace
from swarm.errors import SwarmError, redact_text
from swarm.listeners import RunFinished, RunListener, RunStarted, StepRecord

log = logging.getLogger("observability.trace_file")

FORMAT = "plp-swarm-trace/1"
_MODELS: dict[str, type[BaseModel]] = {"run_started": RunStarted, "step": StepRecord, "run_finished": RunFinished}
_NONFINITE = {"-inf": -math.inf, "inf": math.inf, "nan": math.nan}

__all__ = ["FORMAT", "TraceFileError", "TraceFileWriter", "read_trace_file", "read_trace_runs", "encode_record",
           "GlobalTrace", "FinalParticle", "Death"]


class TraceFileError(SwarmError):
    """A trace file could not be written or read. `.path` names the file; the message says why."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = str(path)
        super().__init__(f"trace file {self.path}: {message}")


# -- encoding ------------------------------------------------------------------------------------
def _jsonable(obj: Any, path: list[Any], found: list[list[Any]]) -> Any:
    """A python-mode dump made JSON-safe: containers become lists/objects, numpy scalars plain
    numbers, anything else its repr; non-finite floats become strings, their paths noted in `found`."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return float(obj)
        found.append(list(path))
        return "nan" if math.isnan(obj) else ("-inf" if obj < 0 else "inf")
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            key = key if isinstance(key, str) else (str(key) if isinstance(key, (int, float)) else repr(key))
            path.append(key)
            out[key] = _jsonable(value, path, found)
            path.pop()
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        out_list = []
        for i, value in enumerate(obj):
            path.append(i)
            out_list.append(_jsonable(value, path, found))
            path.pop()
        return out_list
    if isinstance(obj, (np.generic, np.ndarray)):
        return _jsonable(obj.tolist(), path, found)
    if isinstance(obj, BaseModel):
        return _jsonable(obj.model_dump(), path, found)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, path, found)
    return repr(obj)


def encode_record(kind: str, record: BaseModel) -> bytes:
    """One line of the trace file (with its trailing newline) for a listener record."""
    body = _jsonable(record.model_dump(mode="python"), [], found := [])
    head: dict[str, Any] = {"kind": kind}
    if kind == "run_started":
        head["format"] = FORMAT
    if found:
        head["nonfinite"] = found
    line = json.dumps({**head, **body}, allow_nan=False, separators=(",", ":"))
    return (redact_text(line) + "\n").encode()  # registered secrets (API keys) never reach the file


def _restore_nonfinite(obj: dict[str, Any], paths: list[list[Any]]) -> None:
    for path in paths:
        *parents, last = path
        container: Any = obj
        for key in parents:
            container = container[key]
        container[last] = _NONFINITE[container[last]]


def os_reason(exc: OSError) -> str:
    """Why a write failed, in words: a path component that is a file says so (mkdir's bare
    "File exists" does not)."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and exc.filename is not None:
        blocker = next((p for p in [Path(exc.filename), *Path(exc.filename).parents] if p.is_file()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a directory"
    return exc.strerror or str(exc)


# -- writing -------------------------------------------------------------------------------------
class TraceFileWriter(RunListener):
    """A `RunListener` that appends every record of a run to a JSONL file (see the module doc).

    The file is created (truncated) at the first record; a later run seen by the same writer is
    appended. Each line is one unbuffered `os.write` of the whole line, so readers (and `tail -f`)
    never see half a record unless the process dies or the disk fills mid-line. `fsync=True` also
    syncs every line to the device. The descriptor is closed at the end of each run.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.error: TraceFileError | None = None
        """The first failure (None if every record was written); `close()` re-raises it."""
        self.lines_written = 0
        self._fd: int | None = None
        self._opened_before = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create (or truncate) the file now, so that a path that cannot be written fails before a
        run rather than after it (`swarm run --trace` calls it). Raises `TraceFileError`."""
        with self._lock:
            if self._fd is not None:
                return
            try:
                self._open()
            except OSError as exc:
                raise TraceFileError(self.path, f"cannot create it: {os_reason(exc)}") from None

    def on_run_start(self, record: RunStarted) -> None:
        self._write("run_started", record)

    def on_step(self, record: StepRecord) -> None:
        self._write("step", record)

    def on_run_end(self, record: RunFinished) -> None:
        self._write("run_finished", record)
        with self._lock:
            self._close_fd()

    def _write(self, kind: str, record: BaseModel) -> None:
        with self._lock:
            if self.error is not None:
                return
            what = f"the {kind} record" + (f" of step {record.step}" if isinstance(record, StepRecord) else "")
            try:
                data = encode_record(kind, record)
            except Exception as exc:  # noqa: BLE001 - a listener must not raise into the run
                self._fail(f"cannot serialise {what}: {type(exc).__name__}: {exc}")
                return
            try:
                if self._fd is None:
                    self._open()
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
                if self.fsync:
                    os.fsync(self._fd)
                self.lines_written += 1
            except OSError as exc:
                self._fail(f"cannot write {what}: {os_reason(exc)} (errno {exc.errno})")

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if self._opened_before else os.O_TRUNC)
        self._fd = os.open(self.path, flags, 0o644)
        self._opened_before = True

    def _fail(self, message: str) -> None:
        self.error = TraceFileError(self.path, message + "; later records of this run were not written")
        log.error("%s", self.error)
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def check(self) -> None:
        """Raise the recorded `TraceFileError`, if a write failed."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Close the file and raise the recorded `TraceFileError`, if a write failed."""
        with self._lock:
            self._close_fd()
        self.check()

    def __enter__(self) -> "TraceFileWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading ---------------------------------------------------------------------------------------
def _parse_line(path: Path, number: int, raw: bytes) -> tuple[str, BaseModel]:
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise TraceFileError(path, f"line {number} is not valid JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("kind") not in _MODELS:
        found = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
        raise TraceFileError(path, f"line {number}: 'kind' must be one of {sorted(_MODELS)}, got {found!r}")
    kind = obj.pop("kind")
    fmt = obj.pop("format", FORMAT)
    if fmt != FORMAT:
        raise TraceFileError(path, f"line {number}: format {fmt!r} is not {FORMAT!r}")
    try:
        _restore_nonfinite(obj, obj.pop("nonfinite", []))
    except (KeyError, IndexError, TypeError) as exc:
        raise TraceFileError(path, f"line {number}: a 'nonfinite' path does not lead to one of "
                                   f"'-inf', 'inf', 'nan' ({type(exc).__name__}: {exc})") from None
    try:
        return kind, _MODELS[kind].model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "<record>"
        raise TraceFileError(path, f"line {number} ({kind} record): field {where}: {err['msg']} "
                                   f"({exc.error_count()} error(s))") from None


def read_trace_runs(path: str | os.PathLike[str]) -> list[GlobalTrace]:
    """Every run in a trace file, in the order they started (see `read_trace_file`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TraceFileError(path, f"cannot read it: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline, as a complete file does
    runs: dict[str, GlobalTrace] = {}
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        kind, record = _parse_line(path, number, raw)
        run_id = record.run_id  # type: ignore[attr-defined]
        trace = runs.setdefault(run_id, GlobalTrace(path=str(path)))
        if kind == "run_started":
            trace.run = record  # type: ignore[assignment]
        elif kind == "step":
            trace.steps.append(record)  # type: ignore[arg-type]
        else:
            trace.finished = record  # type: ignore[assignment]
    if not runs:
        torn_note = f" (only {len(torn)} bytes without a newline)" if torn else ""
        raise TraceFileError(path, f"the file holds no complete record{torn_note}: is it a plp-swarm trace file, "
                                   "and did its run get as far as starting?")
    if torn:
        message = (f"line {len(lines) + 1} is incomplete ({len(torn)} bytes without a newline): the "
                   "writer was probably killed mid-write; it was ignored")
        log.warning("trace file %s: %s", path, message)
        last = list(runs.values())[-1]
        last.truncated = True
        last.problems.append(message)
    return list(runs.values())


def read_trace_file(path: str | os.PathLike[str], run_id: str | None = None) -> GlobalTrace:
    """Read a trace file written by `TraceFileWriter`: the run `run_id`, or the last run in it.

    Raises `TraceFileError` (naming the file, line and field) for a missing or malformed file; a
    torn last line only sets `.truncated` and a note in `.problems`.
    """
    runs = read_trace_runs(path)
    if run_id is None:
        return runs[-1]
    for trace in runs:
        if (trace.run and trace.run.run_id == run_id) or (trace.finished and trace.finished.run_id == run_id):
            return trace
    ids = [t.run.run_id for t in runs if t.run]
    raise TraceFileError(path, f"no run {run_id!r} in it (runs: {', '.join(ids) or 'none'})")
