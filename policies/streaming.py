"""Runs you can watch as they go: `policy.stream(program, *args, **kwargs)` yields typed events.

    async for event in policies.SMC(num_particles=16, seed=0).stream(program, "a cat"):
        if event.type == "step_end":
            print(event.step, event.ess, event.log_evidence, event.resampled, event.deaths)
        elif event.type == "text_delta":          # the heaviest particle's text, as it grows
            print(event.delta, end="")
        elif event.type == "run_end":
            result = event.result                  # the same Result as `policy.run` returns

Outside an event loop a plain `for event in policy.stream(...)` works too (it drives its own loop).
The run is a task of the consumer's loop; leaving the iteration early (`break`, an exception, the
`aclose()` of `contextlib.aclosing`) cancels it. A run that raises (e.g. `NoSurvivingParticles`)
raises the same exception from the iterator after the events that came before it.

Events, in order: `RunStart`; per step `StepStart`, then `TextDelta` and `CommittedText` when
the text changed, then `StepEnd`; finally `RunEnd` with the `Result`. Every event carries `run_id`.

- `StepEnd`: the population after the step, before any resampling: ESS = 1/Σ w̄², the running
  log Ẑ, how many particles are alive (weight > 0) and which statement killed how many in this
  step (`deaths`), whether it resampled, and the run's tokens and LLM calls so far.
- `TextDelta`: the text of the currently heaviest particle (largest weight after the step). The
  text of a particle is what its LLM generations wrote, concatenated in trace order (for a reply
  generated in chunks, the reply so far; `text_of=` picks other events, `text_of=None` follows no
  text, which saves its cost when only steps and the Result matter). When the heaviest particle
  changes lineage its text may not extend the last one: `text = previous[:offset] + delta`, and
  `offset < len(previous)` means the tail after `offset` was retracted.
- `CommittedText`: the longest prefix shared by the texts of every live particle. In SMC every later
  particle descends from a live particle of this step and traces only grow, so every final
  particle's text starts with it: it is final, and it only ever grows (a consumer can show it as
  settled). It is emitted only while each step's moving particles continue the particles of the
  previous step (population policies: SMC and its variants, importance sampling); a policy that
  replaces particles otherwise (tree search, beam) or rewrites traces (MCMC moves, which the
  records do not show) does not get it.

Timing: the engine reports a step when it ends (`swarm.listeners.StepRecord`), so `StepStart` is
emitted together with the rest of its step and carries the step's true start time (`at_ns`).

Everything that reads the shape of listener records is `RecordTranslator`, the one place to change
when the engine's records change. For code that listens to records directly (the progress display
as a listener) it also turns the end record into a `RunSummary`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator, Literal, Sequence, Union

from pydantic import BaseModel, ConfigDict

from policies.sync_bridge import boxed
from swarm.errors import BlockingRunError
from swarm.listeners import RunFinished, RunListener, RunStarted, StepRecord
from swarm.result import Result

if TYPE_CHECKING:
    from policies.base import Policy

__all__ = ["RunStart", "StepStart", "StepEnd", "TextDelta", "CommittedText", "RunEnd", "RunSummary", "StreamEvent",
           "RecordTranslator", "RunStream", "generated_text"]


# -- events --------------------------------------------------------------------------------------
class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    run_id: str


class RunStart(_Event):
    type: Literal["run_start"] = "run_start"
    policy: str
    program: str
    num_particles: int
    runtime: str
    at_ns: int


class StepStart(_Event):
    type: Literal["step_start"] = "step_start"
    step: int
    at_ns: int
    """When the step started (`time.time_ns()`)."""


class StepEnd(_Event):
    type: Literal["step_end"] = "step_end"
    step: int
    ess: float
    """1/Σ w̄² of the whole population after the step, before any resampling."""
    log_evidence: float
    """The running estimate log Ẑ after this step."""
    resampled: bool
    alive: int
    """Particles with weight > 0 after the step."""
    num_particles: int
    deaths: dict[str, int]
    """Statement (or error) → particles it killed in this step."""
    tokens: int
    """Tokens the run has spent so far (every call, every particle)."""
    llm_calls: int
    output_tokens: int
    """Of `tokens`, those the LLM calls reported by the records generated (completion tokens)."""
    started_at_ns: int
    at_ns: int


class TextDelta(_Event):
    type: Literal["text_delta"] = "text_delta"
    step: int
    particle_id: int
    """The heaviest particle after this step."""
    offset: int
    """How much of the previously reported text is kept; the rest of it was retracted."""
    delta: str
    text: str
    """The heaviest particle's whole text: previous[:offset] + delta."""


class CommittedText(_Event):
    type: Literal["committed"] = "committed"
    step: int
    delta: str
    """What this step added to the committed text."""
    text: str
    """The prefix every live particle's text shares (every final particle's text starts with it)."""


class RunEnd(_Event):
    type: Literal["run_end"] = "run_end"
    result: Result
    output_tokens: int
    """Completion tokens of every LLM call the records reported (the rest of `tokens` is prompts)."""


class RunSummary(_Event):
    """How a run ended, as its listener records say (for listeners such as the progress display;
    the stream itself ends with `RunEnd`, or raises)."""

    type: Literal["run_summary"] = "run_summary"
    error: str | None
    log_evidence: float | None
    ess: float | None
    tokens: int
    llm_calls: int
    status: Literal["finished", "waiting", "failed"] = "finished"
    """As `swarm.listeners.RunFinished.status`: "waiting" when the run paused for a person."""
    pending: int = 0
    """How many questions a waiting run waits on."""


StreamEvent = Union[RunStart, StepStart, StepEnd, TextDelta, CommittedText, RunEnd]


def generated_text(event: Any) -> str | None:
    """The text an event generated: the completion of an LLM generation (a sample event whose info
    names a backend or model, the rule the span exporter uses too), else None."""
    if event.type == "sample" and isinstance(event.value, str) and ("backend" in event.info or "model" in event.info):
        return event.value
    return None


def _output_tokens(event: Any) -> int:
    usage = event.info.get("usage") if event.type == "sample" else None
    return int(usage.get("output_tokens", 0)) if usage else 0


# -- records → events ----------------------------------------------------------------------------
class RecordTranslator:
    """Turns a run's listener records into stream events (the one reader of record shapes).

    It follows each particle's text through the genealogy: a moving particle appends the text of
    its new events to the text of the particle it continues, and resampling gives each offspring its
    ancestor's text."""

    def __init__(self, text_of: Callable[[Any], str | None] | None = generated_text) -> None:
        self.text_of = text_of
        self.run_id = ""
        self.texts: dict[int, str] = {}
        self.shown = ""
        self.committed = ""
        self.commits = True
        """False once a step's particles did not continue the previous step's (see module doc)."""
        self.output_tokens = 0
        self._steps = 0

    def start(self, record: RunStarted) -> list[_Event]:
        self.run_id = record.run_id
        if record.config.get("rejuvenation_steps"):  # MCMC moves rewrite the reported traces (TemperedSMC)
            self.commits = False
        return [RunStart(run_id=record.run_id, policy=record.policy, program=record.program,
                         num_particles=record.num_particles, runtime=record.runtime, at_ns=record.started_at_ns)]

    def end(self, record: RunFinished) -> RunSummary:
        return RunSummary(run_id=record.run_id, error=record.error, log_evidence=record.log_evidence, ess=record.ess,
                          tokens=record.tokens, llm_calls=record.llm_calls, status=record.status,
                          pending=len(record.pending))

    def step(self, record: StepRecord) -> list[_Event]:
        run_id = self.run_id or record.run_id
        if not self._steps and record.step > 1:  # a resumed run: the texts before it are not in the records
            self.commits = False
        events: list[_Event] = [StepStart(run_id=run_id, step=record.step, at_ns=record.started_at_ns)]
        if self.texts and not record.particles:  # a step that reports no particle (TemperedSMC's
            self.texts, self.commits = {}, False   # stages, whose moves rewrite traces): texts are lost
        deaths = self._advance(record)
        ids, log_w = record.particle_ids, record.log_weights
        tracks_text = self.text_of is not None and bool(self.texts)  # no particle record, no text (VectorizedSMC)
        if ids and len(ids) == len(log_w) and tracks_text:
            events += self._texts(run_id, record.step, ids, log_w)
        events.append(StepEnd(
            run_id=run_id, step=record.step, ess=record.ess, log_evidence=record.log_evidence,
            resampled=record.resampled, alive=len(log_w) - log_w.count(-math.inf),
            num_particles=len(log_w), deaths=deaths, tokens=record.tokens, llm_calls=record.llm_calls,
            output_tokens=self.output_tokens, started_at_ns=record.started_at_ns, at_ns=record.ended_at_ns))
        if tracks_text:
            self._regroup(record)
        self._steps += 1
        return events

    def _advance(self, record: StepRecord) -> dict[str, int]:
        """Append each moving particle's new text; count output tokens and deaths."""
        deaths: Counter[str] = Counter()
        text_of = self.text_of
        for p in record.particles:
            if p.status == "dead":
                deaths[p.killed_by or "unknown"] += 1
            if text_of is None:
                for e in p.new_events:
                    self.output_tokens += _output_tokens(e)
                continue
            base = self.texts.get(p.particle_id)
            if base is None:
                if self._steps:  # not a continuation of a particle we know
                    self.commits = False
                base = self.texts.get(p.parent_id, "") if p.parent_id is not None else ""
            pieces = []
            for e in p.new_events:
                self.output_tokens += _output_tokens(e)
                piece = text_of(e)
                if piece:
                    pieces.append(piece)
            self.texts[p.particle_id] = base + "".join(pieces) if pieces else base
        return dict(deaths)

    def _texts(self, run_id: str, step: int, ids: Sequence[int], log_w: Sequence[float]) -> list[_Event]:
        """The heaviest particle's text delta and the committed text, when they changed."""
        events: list[_Event] = []
        heaviest = max(range(len(log_w)), key=log_w.__getitem__)
        if log_w[heaviest] > -math.inf:
            text = self.texts.get(ids[heaviest], "")
            if text != self.shown:
                offset = len(os.path.commonprefix([self.shown, text]))
                events.append(TextDelta(run_id=run_id, step=step, particle_id=ids[heaviest], offset=offset,
                                        delta=text[offset:], text=text))
                self.shown = text
        if self.commits:
            live = [self.texts.get(i, "") for i, w in zip(ids, log_w) if w > -math.inf]
            common = os.path.commonprefix(live) if live else self.committed
            if not common.startswith(self.committed):
                self.commits = False  # the policy does not keep the invariant: stop committing
            elif len(common) > len(self.committed):
                events.append(CommittedText(run_id=run_id, step=step, delta=common[len(self.committed):], text=common))
                self.committed = common
        return events

    def _regroup(self, record: StepRecord) -> None:
        """After resampling each offspring starts from its ancestor's text; keep the live ids only."""
        ids = record.particle_ids
        if record.resampled and record.ancestors is not None and record.offspring_ids is not None:
            self.texts = {child: self.texts.get(ids[a], "") for child, a in zip(record.offspring_ids, record.ancestors)}
        elif ids:
            self.texts = {i: self.texts.get(i, "") for i in ids}


class _StreamListener(RunListener):
    """Feeds translated events to `put` (on the consumer's event loop, from any thread)."""

    def __init__(self, put: Callable[[Any], None], loop: asyncio.AbstractEventLoop,
                 text_of: Callable[[Any], str | None] | None) -> None:
        self.translator = RecordTranslator(text_of)
        self._put = put
        self._loop = loop
        self._thread = threading.get_ident()

    def _send(self, events: list[_Event]) -> None:
        for event in events:
            if threading.get_ident() == self._thread:
                self._put(event)
            else:
                self._loop.call_soon_threadsafe(self._put, event)

    def on_run_start(self, record: RunStarted) -> None:
        self._send(self.translator.start(record))

    def on_step(self, record: StepRecord) -> None:
        self._send(self.translator.step(record))

    def on_run_end(self, record: RunFinished) -> None:
        pass  # the Result comes from the run itself (RunEnd), errors are raised


# -- the iterator ---------------------------------------------------------------------------------
_DONE = object()


class RunStream:
    """The events of one run of `program(*args, **kwargs)` under `policy`: `async for` inside an
    event loop, plain `for` outside one. Each iteration starts a new run."""

    def __init__(self, policy: "Policy", program: Callable[..., Any], args: tuple = (), kwargs: dict | None = None,
                 *, text_of: Callable[[Any], str | None] | None = generated_text) -> None:
        self.policy = policy
        self.program = program
        self.args = args
        self.kwargs = dict(kwargs or {})
        self.text_of = text_of

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self.events()

    async def result(self) -> RunEnd:
        """Run to the end and return only the last event (no listener is added, so no records are
        made: the cheap path for a consumer that needs the Result and the token counts)."""
        result = await self.policy.run_async(self.program, *self.args, **self.kwargs)
        return RunEnd(run_id=result.run_id or "", result=result, output_tokens=result.diagnostics.output_tokens)

    async def events(self) -> AsyncIterator[StreamEvent]:
        """The run as an async generator; closing it early cancels the run."""
        async with contextlib.aclosing(self._batches()) as batches:
            async for batch in batches:
                for event in batch:
                    yield event

    async def _batches(self) -> AsyncIterator[list[StreamEvent]]:
        """The run's events, each time all those that are ready (at least one): a plain `for` reads a
        batch per turn of its loop, so it keeps up with the run (one event per turn fell behind by a
        step per event read, and a plain program's steps reached it all at the end)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        listener = _StreamListener(queue.put_nowait, loop, self.text_of)
        policy = self.policy.model_copy(update={"listeners": [*self.policy.listeners, listener]})
        task = asyncio.ensure_future(policy.run_async(self.program, *self.args, **self.kwargs))
        task.add_done_callback(lambda _: queue.put_nowait(_DONE))
        try:
            done = False
            while not done:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                if _DONE in batch:  # the run's end: what came after it is not the run's
                    batch, done = batch[:batch.index(_DONE)], True
                if batch:
                    yield batch
            result = task.result()  # raises what the run raised
            translator = listener.translator
            yield [RunEnd(run_id=translator.run_id, result=result, output_tokens=translator.output_tokens)]
        finally:
            if not task.done():
                task.cancel()
                try:
                    await task
                except BaseException:  # noqa: BLE001 - the run was cancelled on purpose
                    pass
            elif not task.cancelled():
                task.exception()  # retrieved: a run that failed after its consumer stopped reading is not
                                  # logged as "Task exception was never retrieved"

    def __iter__(self) -> Iterator[StreamEvent]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise BlockingRunError("iterating a policy stream with a plain `for` inside a running event loop; "
                               "use `async for event in policy.stream(...)` there")
        agen = self._batches()

        with asyncio.Runner() as runner:
            try:
                while True:
                    try:
                        batch = runner.run(boxed(agen.__anext__())).value  # policies.sync_bridge: why boxed
                    except StopAsyncIteration:
                        return
                    yield from batch
            finally:
                runner.run(agen.aclose())
