"""Pausing for a person: `await ask_human(name, question, schema=None)` inside a program.

    async def program(topic):
        draft = await writer.ask(f"Write about {topic}.")
        verdict = await ask_human("review", f"Is this fine? {draft}", schema={"enum": ["yes", "no"]})
        guarantee("approved", verdict == "yes")          # the answer weighs the trace only if you say so
        return draft

The question is recorded as an `interact` event to "human", the answer as a sample site `name` whose
value is supplied from outside (a point mass: log q = 0, the weight is unchanged; the answer is
data, docs/human_in_the_loop.md), then as an `interact` event from "human". Where does the answer
come from?

- answers given to the run (`SMC(..., answers={...})`, `policy.resume(dir, answers={...})`): they
  travel to every execution in the run scope (`ANSWERS_KEY`, a JSON string: plain values reach Ray
  workers too). An answer is found by the question's `id` first, then by its `name`;
- the recorded trace, on replay: a question asked again by a resampled offspring or a resumed
  particle reads its recorded answer (a person is never asked the same thing twice);
- nowhere: the execution raises `AwaitingHuman`, a control signal (a `BaseException`, so the
  program's own `except Exception` cannot swallow it). A run that can pause (SMC, Forward, Importance, BestOfN) marks the
  particle "waiting", finishes the step for the others, checkpoints and returns a `Result` whose
  `status` is "waiting"; in any other run the engine stops it with a `CannotPauseError` naming the
  question (raised where the program cannot catch it).

A question's `id` hashes its name, text and answer schema: identical questions from many particles
are one pending question, answered once.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from typing import Any, Awaitable, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from swarm.distributions import Distribution
from swarm.effects import active_handlers, current_run_scope, run_scope, unawaited_samples
from swarm.errors import AsyncInPlainProgramError, PrimitiveUsageError, SwarmError
from swarm.primitives import interact, sample

__all__ = ["ask_human", "ask_human_sync", "ask", "Question", "AwaitingHuman", "InvalidAnswerError",
           "CannotPauseError", "HumanAnswer", "ANSWERS_KEY", "PAUSABLE_KEY", "encode_answers", "answer_for",
           "validate_answer", "checked_answers", "is_pausable", "unanswered"]

ANSWERS_KEY = "swarm.human.answers"
"""`run_scope()` key: the run's answers as a JSON object {question id or name: answer}."""
PAUSABLE_KEY = "swarm.human.pausable"
"""`run_scope()` key: True when the policy running this execution can pause for a missing answer."""


class InvalidAnswerError(SwarmError, ValueError):
    """An answer that does not fit its question's schema (or is not JSON); names the question."""


class CannotPauseError(SwarmError):
    """A question has no answer and the policy running the program cannot pause for one."""


class Question(BaseModel):
    """A question put to a person. `id` is what identical questions share (name, text and schema)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    """The name the program gave (`ask_human`'s first argument; "approve:<endpoint>" for approvals)."""
    question: str
    answer_schema: dict[str, Any] | None = None
    """The JSON Schema an answer must fit (None: any JSON value)."""
    kind: Literal["question", "approval"] = "question"
    details: dict[str, Any] = Field(default_factory=dict)
    """What the question is about, for a person to read (an approval: the endpoint and arguments)."""
    particles: list[int] = Field(default_factory=list)
    """In `Result.pending`: the ids of the particles waiting for this answer."""

    @classmethod
    def make(cls, name: str, question: str, schema: Any = None, *, kind: str = "question",
             details: dict[str, Any] | None = None) -> "Question":
        if not isinstance(name, str) or not name:
            raise TypeError(f"ask_human() needs a non-empty string name, got {name!r}")
        if not isinstance(question, str):
            raise TypeError(f"ask_human {name!r}: the question must be a string, got {type(question).__name__}")
        answer_schema = json_schema(name, schema)
        key = json.dumps([name, question, answer_schema], sort_keys=True, default=str)
        digest = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
        return cls(id=digest, name=name, question=question, answer_schema=answer_schema, kind=kind,  # type: ignore[arg-type]
                   details=details or {})

    def label(self) -> str:
        return f"{self.name!r} (id {self.id})"


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """A checked JSON Schema's validator (a question is asked again at every replay: built once)."""
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@functools.lru_cache(maxsize=256)
def _schema_of_type(tp: Any) -> dict[str, Any]:
    return TypeAdapter(tp).json_schema()


def json_schema(name: str, schema: Any) -> dict[str, Any] | None:
    """A JSON Schema from what `ask_human` was given: None, a JSON Schema dict, or a Python type
    (`int`, `bool`, a pydantic model, `Literal["yes", "no"]`) turned into one by pydantic."""
    if schema is None or isinstance(schema, dict):
        if schema is not None:
            import jsonschema

            try:
                _validator(json.dumps(schema, sort_keys=True, default=str))
            except jsonschema.SchemaError as exc:
                raise InvalidAnswerError(f"ask_human {name!r}: invalid answer schema: {exc.message}") from None
        return schema
    try:
        return _schema_of_type(schema)
    except Exception as exc:  # noqa: BLE001 - pydantic cannot describe it
        raise TypeError(f"ask_human {name!r}: schema must be a JSON Schema dict or a type pydantic can describe, "
                        f"got {schema!r} ({exc})") from None


class AwaitingHuman(BaseException):
    """Control signal: the execution needs an answer nobody has given yet (see the module docstring)."""

    def __init__(self, question: Question, address: str) -> None:
        super().__init__(f"waiting for an answer to {question.label()}")
        self.question = question
        self.address = address

    def cannot_pause(self) -> "CannotPauseError":
        """The error for a run that cannot pause (raised by the engine, where no user code can
        catch it instead of this signal)."""
        q = self.question
        return CannotPauseError(
            f"{q.kind} {q.label()} at site {self.address!r} has no answer and this run cannot pause for one "
            "(SMC, Forward, Importance and BestOfN can: they return a Result with status 'waiting'); give the answer up front, e.g. "
            f"SMC(..., answers={{{q.name!r}: ...}})")


# -- answers ------------------------------------------------------------------------------------
def encode_answers(answers: dict[str, Any]) -> str:
    """The answers as the JSON object the run scope carries; a value that is not JSON is refused."""
    if not isinstance(answers, dict):
        raise InvalidAnswerError(f"answers must be a dict {{question name or id: answer}}, got {type(answers).__name__}")
    for key, value in answers.items():
        if not isinstance(key, str):
            raise InvalidAnswerError(f"answers: keys are question names or ids (strings), got {key!r}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidAnswerError(f"answer to {key!r} is not a JSON value ({exc}): answers are data that "
                                     "must survive a checkpoint and travel to workers") from None
    return json.dumps(answers, sort_keys=True, allow_nan=False)


@functools.lru_cache(maxsize=64)
def _decoded(text: str) -> dict[str, Any]:
    return json.loads(text)


def _lookup(question: Question, answers: dict[str, Any]) -> tuple[bool, Any]:
    if question.id in answers:
        return True, answers[question.id]
    if question.name in answers:
        return True, answers[question.name]
    return False, None


_APPROVAL_ANSWERS = 'an approval is answered true, false or {"approved": false, "reason": "..."}'


def validate_answer(question: Question, value: Any) -> Any:
    """`value` if it fits the question's schema, else an `InvalidAnswerError` naming the question."""
    if question.answer_schema is not None:
        import jsonschema

        validator = _validator(json.dumps(question.answer_schema, sort_keys=True, default=str))
        problem = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if problem is not None:
            where = "/".join(map(str, problem.path)) or "the answer"
            expected = (_APPROVAL_ANSWERS if question.kind == "approval"
                        else f"schema {json.dumps(question.answer_schema)}")
            raise InvalidAnswerError(f"answer to {question.label()} refused: {where}: {problem.message} "
                                     f"(got {value!r}; {expected})")
    return value


def answer_for(question: Question, address: str) -> Any:
    """The answer the run was given for `question` (validated), or `AwaitingHuman` when there is
    none and the run can pause, or `CannotPauseError` when it cannot."""
    scope = run_scope()
    text = scope.get(ANSWERS_KEY)
    found, value = _lookup(question, _decoded(text)) if text else (False, None)
    if found:  # a copy: the decoded answers are shared by every particle of the process
        return validate_answer(question, value if isinstance(value, (str, int, float, bool, type(None)))
                               else copy.deepcopy(value))
    signal = AwaitingHuman(question, address)
    if not active_handlers():  # the program was called directly, outside any policy
        raise signal.cannot_pause()
    raise signal  # the engine pauses the particle, or turns it into CannotPauseError (`is_pausable`)


def is_pausable(scope: dict[str, Any] | None) -> bool:
    """Whether executions with this run scope may wait for an answer (the policy said so)."""
    return bool(scope and scope.get(PAUSABLE_KEY))


def checked_answers(answers: dict[str, Any], pending: list[Question]) -> dict[str, Any]:
    """Validate `answers` against the pending questions they answer, before anything runs."""
    encode_answers(answers)
    for question in pending:
        found, value = _lookup(question, answers)
        if found:
            validate_answer(question, value)
    return answers


class HumanAnswer(Distribution):
    """The answer to a question, as a sample site's distribution: a point mass at the answer given
    from outside (log q = 0: it is data, not a draw, and does not change the weight)."""

    def __init__(self, question: Question, address: str) -> None:
        self.question = question
        self.address = address

    def sample(self, rng: Any) -> Any:
        return answer_for(self.question, self.address)

    def log_prob(self, value: Any) -> float:
        return 0.0

    def describe(self) -> str:
        return f"Human({self.question.name!r})"


# -- asking -------------------------------------------------------------------------------------
def ask(site: str, question: Question, *, sender: str = "program") -> Any:
    """Put `question` to a person at sample site `site`: the question (an interact event to
    "human"), the answer (sample site `site`, a point mass) and the answer again (an interact event
    from "human"). Returns the answer, or raises `AwaitingHuman` (see the module docstring)."""
    meta = {"question_id": question.id, "name": question.name, "kind": question.kind,
            "answer_schema": question.answer_schema, "details": question.details}
    interact(sender, "human", question.question, kind="question", name=f"{site}/question", info=meta)
    answer = sample(site, HumanAnswer(question, site))
    interact("human", sender, answer, kind="answer", name=f"{site}/answer", info={"question_id": question.id})
    return answer


def ask_human_sync(name: str, question: str, schema: Any = None, *, sender: str = "program",
                   site: str | None = None) -> Any:
    """`ask_human` for a plain (non-async) program."""
    return ask(_site(name, site), Question.make(name, question, schema), sender=sender)


def _site(name: str, site: str | None) -> str:
    """The sample site of a question: `site`, or its name."""
    if site is None:
        return name
    if not isinstance(site, str) or not site:
        raise PrimitiveUsageError(f"ask_human {name!r}: site must be a non-empty string, got {site!r}")
    return site


def ask_human(name: str, question: str, schema: Any = None, *, sender: str = "program",
              site: str | None = None) -> Awaitable[Any]:
    """Ask a person `question`; the answer (fitting `schema`, a JSON Schema dict or a Python type,
    when given) is the value of sample site `site` (default: `name`): `answer = await ask_human(...)`.
    A particle asks at a site once: to ask one question name again (in a loop), give each time its
    own `site` (e.g. f"review{t}"), and an answer by name answers them all. See the module
    docstring. Without the `await` nobody would be asked: in a plain `def` program (which cannot
    await; `ask_human_sync` is for it) this raises `AsyncInPlainProgramError` at once, and in an
    async program an awaitable never awaited is named when the program returns, like `sample`'s."""
    asked = Question.make(name, question, schema)
    where = _site(name, site)
    waiting = unawaited_samples()
    if waiting is None and current_run_scope() is not None and active_handlers():  # a plain program's execution
        raise AsyncInPlainProgramError(
            f"ask_human {name!r}: a plain `def` program cannot await the answer; call "
            f"swarm.human.ask_human_sync({name!r}, ...) (the same arguments), or declare the program "
            f"`async def` and write `await ask_human({name!r}, ...)`")
    token = object()
    pending = _answer(where, asked, sender, token)
    if waiting is not None:  # dropped when it starts; left there, the program never awaited it
        waiting[token] = (where, (pending,), "ask_human")
    return pending


async def _answer(site: str, question: Question, sender: str, token: object) -> Any:
    if (waiting := unawaited_samples()) is not None:
        waiting.pop(token, None)
    return ask(site, question, sender=sender)


def unanswered(events: list[Any]) -> list[Question]:
    """The questions a waiting execution asked and has no answer to: its `question` interact events
    without the `answer` event after them (several when concurrent plate replicas asked)."""
    answered = {e.address for e in events if e.type == "interact" and e.kind == "answer"}
    out = []
    for event in events:
        if event.type != "interact" or event.kind != "question":
            continue
        info = event.info or {}
        if "question_id" in info and event.address.removesuffix("/question") + "/answer" not in answered:
            out.append(Question(id=info["question_id"], name=info["name"], question=event.content,
                                answer_schema=info.get("answer_schema"), kind=info.get("kind", "question"),
                                details=info.get("details") or {}))
    return out
