"""Tools: typed Python functions an agent may call.

A tool's arguments are a pydantic model built from the function's signature (string annotations,
`from __future__ import annotations`, are resolved in the function's module), so a call with bad
arguments (a wrong type, a missing field, one the function does not take) is rejected with the tool
and each field named; the function gets the validated values (a pydantic-model parameter as the
model), and a result that is not a string is given as JSON. A plain (non-`async`) function runs in
a worker thread (`asyncio.to_thread`, with the caller's context), so a slow one (an HTTP API
through `requests`, a subprocess) does not stop every other particle's calls while it runs;
`@tool(in_thread=False)` keeps it on the event loop's thread (for a function that must run there,
or one so cheap that the hand-off would cost more than the call). A tool error never crashes the
particle: it comes back to the agent as the tool result ("error: ..."), as a human tool user would
see it. The exception is the framework's own errors (`swarm.SwarmError`: a backend lost after its
retries, a sandbox that cannot start): they are infrastructure, not information, and propagate
(docs/theory.md §3.4).

Protocols. Backends with native tool calling (OpenAI-compatible servers) get the OpenAI schemas;
for the others (the embedded model) the system prompt describes the tools and the model writes

    <tool_call>{"name": "calculator", "arguments": {"expression": "2 + 2"}}</tool_call>

Native calls are rewritten into this text form, so one parser serves both and replaying a recorded
completion reproduces the calls exactly.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import re
import sys
import time
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, StrictBool, TypeAdapter, ValidationError, create_model, field_validator
from pydantic.errors import PydanticInvalidForJsonSchema, PydanticSchemaGenerationError
from pydantic_core import to_jsonable_python

from swarm.distributions import Distribution, Draw
from swarm.errors import SwarmError


class Tool(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    description: str = ""
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    requires_approval: StrictBool | Callable[[Any, Any], bool] = False
    """Ask a person before each call (True), or before the calls for which `requires_approval(tool,
    arguments)` is True; a refusal is the call's result (`agents.approvals`)."""
    in_thread: StrictBool = True
    """Run a plain function in a worker thread (see the module docstring); an `async def` one always
    runs on the event loop."""

    @field_validator("requires_approval")
    @classmethod
    def _rule_takes_tool_and_arguments(cls, rule: Any) -> Any:
        """A rule that cannot be called as rule(tool, arguments) (`lambda args: ...`) is refused here,
        not at the first call that needs it (which stopped the run, maybe hours in)."""
        if callable(rule) and not isinstance(rule, bool):
            try:
                signature = inspect.signature(rule)
            except (TypeError, ValueError):  # a builtin without a signature: it answers at call time
                return rule
            try:
                signature.bind(None, None)
            except TypeError:
                raise ValueError(f"requires_approval={getattr(rule, '__name__', rule)!r} must take (tool, arguments), "
                                 f"e.g. lambda tool, args: ...; its signature is {signature}") from None
        return rule

    @property
    def endpoint(self) -> str:
        """Who a call goes to, as the trace names it (the receiver of its `tool_call` event): the tool's
        name for a Python tool, the server and the tool for a remote one (e.g. "mcp:calc/add")."""
        return self.name

    def parameters_schema(self) -> dict[str, Any]:
        """The JSON Schema of the arguments (what the model is shown)."""
        return self.args_model.model_json_schema()

    def openai_schema(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters_schema()}}

    def describe(self) -> str:
        params = json.dumps(inline_refs(self.parameters_schema()).get("properties", {}))
        return f"- {self.name}: {self.description} Arguments (JSON): {params}"

    def validated(self, arguments: Any) -> tuple[dict[str, Any], str | None]:
        """(the keyword arguments to call the function with, None), or ({}, what is wrong with the
        arguments, naming each field): the model's doing, answered to it as "invalid arguments"."""
        arguments, problem = parse_arguments(arguments)
        if problem is not None:
            return {}, problem
        try:
            args = self.args_model.model_validate(arguments)
        except ValidationError as exc:
            return {}, "; ".join(_field_problem(e) for e in exc.errors(include_url=False)[:5])
        return {name: getattr(args, name) for name in type(args).model_fields}, None  # models stay models

    async def call(self, arguments: Any) -> str:
        """Validate the arguments and run the tool; any failure is returned as an error string."""
        kwargs, problem = self.validated(arguments)
        if problem is not None:
            return f"error: invalid arguments for {self.name}: {problem}"
        try:
            if self.in_thread and not inspect.iscoroutinefunction(self.fn):
                result = await asyncio.to_thread(_run_in_thread, self.fn, kwargs)
            else:
                result = self.fn(**kwargs)
            if isinstance(result, _Stopped):
                raise result.stop
            if inspect.isawaitable(result):
                result = await result
        except SwarmError:  # the framework's own (a lost backend, no sandbox): never evidence for the agent
            raise
        except asyncio.CancelledError as exc:
            if _being_cancelled():  # the run stops this call: let it
                raise
            return f"error: CancelledError: {str(exc) or 'the tool cancelled its own work'}"  # it aborted the run
        except Exception as exc:  # a tool failure is information for the agent, not a crash
            return f"error: {type(exc).__name__}: {_message(exc)}"
        return result_text(self.name, result)


def _message(exc: BaseException) -> str:
    """An exception's message, also when its `__str__` raises (then its arguments' repr)."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not kill the particle the tool answers
        return repr(getattr(exc, "args", ()))


def _plain(value: Any) -> Any:
    """A value pydantic cannot serialise, as JSON can hold it: a numpy array or scalar (anything with
    `tolist`) as its list or number (`str` gave "[1 2 3]" and "3", strings where numbers were meant),
    anything else as its `str`."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return tolist()
        except Exception:  # noqa: BLE001 - not numpy's: fall back to the text
            pass
    return str(value)


def _being_cancelled() -> bool:
    """Whether the task running a tool call has been asked to stop (a CancelledError that is not
    the tool's own: an inner task or wait it cancelled)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class _Stopped:
    """A `StopIteration` a plain tool raised in its worker thread (`next()` on an empty iterator),
    returned rather than raised: asyncio cannot set a StopIteration on a future, so the call's
    future never completed and the run hung."""

    def __init__(self, stop: StopIteration) -> None:
        self.stop = stop


def _run_in_thread(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        return fn(**kwargs)
    except StopIteration as exc:
        return _Stopped(exc)


def result_text(name: str, result: Any) -> str:
    """What the agent reads as tool `name`'s result: a string as it is, anything else as JSON
    (unknown objects as their `str`); what JSON cannot hold (bytes that are not UTF-8) as its `repr`
    in a JSON string. Never raises: the tool has run, and its particle must not die of the reply."""
    if isinstance(result, str):
        return result
    try:
        return json.dumps(to_jsonable_python(result, fallback=_plain))
    except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError from bytes b"\xff"
        pass
    try:
        return json.dumps(repr(result))
    except Exception as exc:  # noqa: BLE001 - a __repr__ that raises
        return f"error: the result of {name} ({type(result).__name__}) cannot be shown: {type(exc).__name__}: {exc}"


def parse_arguments(arguments: Any) -> tuple[dict[str, Any], str | None]:
    """A call's arguments as a dict (the model writes JSON text, or an object; nothing is {}), or
    ({}, why they are not one)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            return {}, f"not JSON ({exc})"
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return {}, f"expected a JSON object, got {type(arguments).__name__}"
    return arguments, None


def _field_problem(error: Any) -> str:
    """One pydantic error as "'field.sub': message (got value)"."""
    where = ".".join(map(str, error["loc"])) or "arguments"
    got = "" if error["type"] == "missing" else f" (got {error['input']!r})"
    return f"{where!r}: {error['msg']}{got}"


def inline_refs(schema: Any, defs: dict[str, Any] | None = None, seen: tuple[str, ...] = ()) -> Any:
    """`schema` with every local `{"$ref": "#/$defs/X"}` replaced by X itself and `$defs` dropped, for
    the text prompt (a model reads the tool's arguments there and cannot follow references); a
    recursive reference is left as it is."""
    if defs is None and isinstance(schema, dict):
        defs = schema.get("$defs") or schema.get("definitions") or {}
    if isinstance(schema, list):
        return [inline_refs(item, defs, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in (defs or {}) and ref not in seen:
        target = defs[ref.rsplit("/", 1)[-1]]  # type: ignore[index]
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return inline_refs({**target, **rest}, defs, (*seen, ref))
    return {k: inline_refs(v, defs, seen) for k, v in schema.items() if k not in ("$defs", "definitions")}


def _signature(f: Callable[..., Any], caller_locals: dict[str, Any]) -> inspect.Signature:
    """`f`'s signature with its annotations as types, also when they are strings (a module with
    `from __future__ import annotations`): pydantic, building the argument model in this module,
    cannot resolve "Point" by itself. Names are looked up in the function's module, then where
    `tool` was called (a class defined in the same function); one found in neither is an error."""
    try:
        return inspect.signature(f, locals=caller_locals, eval_str=True)
    except NameError as exc:
        name = getattr(f, "__name__", repr(f))
        raise TypeError(f"tool {name!r}: cannot resolve the type annotation {exc.name!r} of its parameters "
                        "(define it before the tool, at module level or where the tool is made)") from None


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None,
         requires_approval: bool | Callable[[Any, Any], bool] = False, in_thread: bool = True):
    """Make a `Tool` from a typed function (usable bare, `@tool`, or with arguments).
    `requires_approval`: True, or `callable(tool, arguments) -> bool`, to ask a person first.
    `in_thread`: run a plain function in a worker thread (the default) or on the event loop."""

    caller_locals = dict(sys._getframe(1).f_locals)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise TypeError(f"tool(name=...) must be a non-empty string, got {name!r}")

    def build(f: Callable[..., Any]) -> Tool:
        if not callable(f):
            raise TypeError(f"tool() needs a function, got {type(f).__name__} {f!r}")
        called = name or _function_name(f)
        _callable_as_a_tool(called, f)
        sig = _signature(f, caller_locals)
        fields: dict[str, Any] = {}
        for pname, param in sig.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"tool {called!r}: *args/**kwargs are not supported (parameter {pname!r})")
            annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[pname] = (annotation, default)
        args_model = _arguments_model(called, fields)
        return Tool(name=called, description=description or _docstring(f), fn=f,
                    args_model=args_model, requires_approval=requires_approval, in_thread=in_thread)

    return build(fn) if fn is not None else build


def _function_name(f: Callable[..., Any]) -> str:
    """A tool's default name: the function's, or a `functools.partial`'s function's. A callable
    object or a lambda has no name the model could call it by: it must be given one."""
    inner = f.func if isinstance(f, functools.partial) else f
    found = getattr(inner, "__name__", None)
    if not isinstance(found, str) or not found.isidentifier():
        raise TypeError(f"tool(): {type(f).__name__} {f!r} has no function name to call the tool by; "
                        "give one: tool(fn, name=...)")
    return found


def _arguments_model(name: str, fields: dict[str, Any]) -> type[BaseModel]:
    """The pydantic model of a tool's arguments, with its JSON schema (what the model is shown), or
    a TypeError naming the tool and the parameter whose type has none."""
    try:
        model = create_model(f"{name}_args", __config__=ConfigDict(extra="forbid"), **fields)
        model.model_json_schema()
    except (PydanticSchemaGenerationError, PydanticInvalidForJsonSchema) as exc:
        culprit = next((p for p, (annotation, _) in fields.items() if not _has_json_schema(annotation)), None)
        where = f"parameter {culprit!r} ({getattr(fields[culprit][0], '__name__', fields[culprit][0])!r})" \
            if culprit else "a parameter"
        raise TypeError(f"tool {name!r}: {where} has a type without a JSON schema, so the model cannot be shown "
                        f"how to pass it; use str, int, float, bool, lists, dicts or a pydantic model "
                        f"({type(exc).__name__})") from None
    return model


def _has_json_schema(annotation: Any) -> bool:
    try:
        TypeAdapter(annotation).json_schema()
    except Exception:  # noqa: BLE001 - any failure: this is the parameter to name
        return False
    return True


def _callable_as_a_tool(name: str, f: Callable[..., Any]) -> None:
    """Refuse what would run but answer the model wrongly: a generator function (its result would be
    "<generator object ...>") and a method decorated in its class (the model would have to pass `self`)."""
    if inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f):
        raise TypeError(f"tool {name!r} is a generator function: a tool returns its result (collect what it "
                        "yields into a list and return that)")
    try:
        params = [] if inspect.ismethod(f) else list(inspect.signature(f).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: _signature says so
        params = []
    if params[:1] == ["self"] and "." in getattr(f, "__qualname__", ""):
        raise TypeError(f"tool {name!r}: its first parameter is 'self' (a method decorated in its class); make "
                        f"the tool from the bound method of an instance: tool(instance.{getattr(f, '__name__', name)})")


def _docstring(f: Callable[..., Any]) -> str:
    """What the model is told the tool does: the docstring of the function (of a partial's function,
    not `functools.partial`'s own)."""
    return inspect.getdoc(f.func if isinstance(f, functools.partial) else f) or ""


TOOL_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def tool_call_blocks(text: str) -> list[tuple[str, Any, str | None]]:
    """(tool name, arguments, None) for every well-formed <tool_call> block of `text`, in order, and
    ("", the block's text, why it is not a call) for every other one: the agent answers those with
    the reason, where they used to be skipped and the attempted call returned as the reply."""
    blocks: list[tuple[str, Any, str | None]] = []
    for match in TOOL_BLOCK.finditer(text):
        body = match.group(1).strip()
        try:
            payload = json.loads(body)
        except json.JSONDecodeError as exc:
            blocks.append(("", body, f"the tool call is not JSON ({exc}); write "
                                     '<tool_call>{"name": TOOL_NAME, "arguments": {...}}</tool_call>'))
            continue
        if isinstance(payload, dict) and isinstance(payload.get("name"), str):
            blocks.append((payload["name"], payload.get("arguments", {}), None))
        else:
            blocks.append(("", body, 'the tool call must be a JSON object {"name": TOOL_NAME, "arguments": {...}}'))
    return blocks


def parse_tool_calls(text: str) -> list[tuple[str, Any]]:
    """[(tool name, arguments)] for every well-formed <tool_call> block in `text`."""
    return [(name, arguments) for name, arguments, problem in tool_call_blocks(text) if problem is None]


def render_tool_calls(calls: list[dict[str, Any]]) -> str:
    """Native (OpenAI) tool calls in the text protocol."""
    out = []
    for call in calls:
        try:
            arguments = json.loads(call.get("arguments") or "{}")
        except json.JSONDecodeError:
            arguments = call.get("arguments")
        out.append(f'<tool_call>{json.dumps({"name": call["name"], "arguments": arguments})}</tool_call>')
    return "\n".join(out)


def with_native_calls(text: str, calls: list[dict[str, Any]]) -> str:
    """`text` with native tool calls (a backend's, as {"name", "arguments"} dicts) appended in the
    text protocol, so one parser reads both kinds."""
    return (text + "\n" + render_tool_calls(calls)).strip() if calls else text


def tools_prompt(tools: list[Tool]) -> str:
    listing = "\n".join(t.describe() for t in tools)
    return ("You can call tools. To call one, reply with exactly one line\n"
            '<tool_call>{"name": TOOL_NAME, "arguments": {...}}</tool_call>\n'
            "and wait for its result. Available tools:\n" + listing)


class ToolExecution(Distribution):
    """A tool call as a (point-mass) sample site, so replay feeds the recorded result back instead of
    running the tool again: a tool with side effects runs once per particle history."""

    is_async = True

    def __init__(self, tool_: Tool | None, name: str, arguments: Any, refusal: str | None = None,
                 available: tuple[str, ...] = (), problem: str | None = None) -> None:
        self.tool = tool_
        self.name = name
        self.arguments = arguments
        self.refusal = refusal
        """A person refused the call: this text is its result and the tool is not run."""
        self.available = available
        """The agent's tool names, told to the model when it calls one that does not exist."""
        self.problem = problem
        """Why the block the model wrote is not a tool call (not JSON, no name): its result."""

    def describe(self) -> str:
        return f"Tool({self.tool.endpoint if self.tool is not None else self.name or '(malformed tool call)'})"

    def log_prob(self, value: Any) -> float:
        return 0.0

    async def sample_async(self, rng: Any) -> Draw:
        started = time.time_ns()
        if self.problem is not None:
            result = f"error: {self.problem}"
        elif self.tool is None:
            result = f"error: no tool named {self.name!r}; the tools are {', '.join(self.available) or 'none'}"
        elif self.refusal is not None:
            result = self.refusal
        else:
            result = await self.tool.call(self.arguments)
        info = {"tool": self.name, "started_at_ns": started, "ended_at_ns": time.time_ns()}
        if self.refusal is not None:
            info["refused"] = True
        if self.tool is not None and self.tool.endpoint != self.name:
            info["endpoint"] = self.tool.endpoint
        return Draw(value=result, log_prob=0.0, info=info)
