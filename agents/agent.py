"""`Agent`: a role (name, system prompt, backend, settings, tools, output schema) whose every call
inside a program is recorded in the particle's trace.

    writer = Agent(name="writer", system="You write short poems.")
    critic = Agent(name="critic", system="Rate poems 1-10. Reply with the number only.")

    async def program(topic):
        poem = await writer.ask(f"A two-line poem about {topic}.")
        score = await critic.ask(poem, sender="writer")
        factor("critic", parse_score(score))
        return poem

Each `ask` records: an `interact` event (sender → agent, the prompt), one `sample` event per
generation (the completion, log q under the proposal, token log-probs, usage, latency), the tool
calls and results as `interact` events and point-mass sample sites (a tool that requires approval
first asks a person, `agents.approvals`), and the reply as an `interact` event (agent → sender).
Agent state between calls lives in the program (e.g. a history list), hence in the trace: replaying
a trace rebuilds it, so resampled particles never share it.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.errors import PydanticInvalidForJsonSchema, PydanticSchemaGenerationError

from agents.approvals import refusal_of
from agents.backends.base import Backend, ChatMessage, GenerationRequest, GenerationSettings
from agents.generation import Generation, InvalidGenerationRequest
from agents.ray_hosting import RayHosting
from agents.structured import parse_output, response_format, schema_instructions
from agents.tools import Tool, ToolExecution, tool_call_blocks, tools_prompt
from swarm.errors import shown
from swarm.primitives import auto_name, guarantee, interact, sample

_POOL_KEYWORDS = {"replicas", "max_concurrency", "resources"}
"""Agent keywords that repeated `RayHosting`'s fields (deprecated)."""


class Agent(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    name: str
    system: str = ""
    """The role: the system prompt of every conversation."""
    backend: Backend | None = None
    """None: the embedded SmolLM2-135M model through llama.cpp."""
    settings: GenerationSettings = Field(default_factory=GenerationSettings)
    tools: list[Tool] = Field(default_factory=list)
    output_schema: type[BaseModel] | None = None
    max_output_retries: int = Field(2, ge=0)
    max_tool_rounds: int = Field(4, ge=0)
    target: Literal["proposal", "base"] = "proposal"
    """"proposal": the program's π is what the settings sample. "base": π uses the base model at
    temperature 1, and completions drawn at another temperature are importance-weighted to it."""
    hosting: Literal["auto", "local", "ray"] | RayHosting = "auto"
    """Where generations run. "local": in this process. "ray": on a Ray actor pool of default shape.
    A `RayHosting(...)`: on the pool it describes (replicas, concurrency, resources; see
    `agents.ray_hosting`). "auto" (default): on a default pool when Ray is initialised in this
    process (runtime="ray"), else local; `RayHosting(..., local_fallback=True)` is "auto" with a
    pool of your shape."""

    def __init__(self, *args: Any, **data: Any) -> None:
        """Keyword arguments only; a positional one (`Agent("writer")`) is named in the error (pydantic
        said "BaseModel.__init__() takes 1 positional argument but 2 were given")."""
        if args:
            raise TypeError(f"Agent takes keyword arguments only, e.g. Agent(name={shown(args[0])}, system=...); "
                            f"got {len(args)} positional")
        super().__init__(**data)

    @model_validator(mode="before")
    @classmethod
    def _settings_given_as_keywords(cls, data: Any) -> Any:
        """`Agent(temperature=0.7)`: a generation setting where an Agent field belongs, named with
        where it goes (pydantic alone says only "Extra inputs are not permitted")."""
        if isinstance(data, dict):
            misplaced = sorted(k for k in data if k in GenerationSettings.model_fields and k not in cls.model_fields)
            if misplaced:
                given = ", ".join(f"{k}=..." for k in misplaced)
                what = ("generation settings, not Agent fields; give them" if len(misplaced) > 1 else
                        "a generation setting, not an Agent field; give it")
                raise ValueError(f"{', '.join(misplaced)}: {what} as Agent(settings=GenerationSettings({given})), "
                                 f"or per call: agent.generate(..., {given})")
        return data

    @model_validator(mode="before")
    @classmethod
    def _pool_keywords(cls, data: Any) -> Any:
        """The deprecated `replicas`, `max_concurrency`, `resources` keywords, folded into `hosting`."""
        if not isinstance(data, dict) or not _POOL_KEYWORDS & data.keys():
            return data
        data = dict(data)
        given = {k: data.pop(k) for k in _POOL_KEYWORDS & data.keys()}
        hosting = data.get("hosting", "auto")
        warnings.warn(f"Agent({', '.join(f'{k}=...' for k in sorted(given))}) is deprecated: describe the pool "
                      "with hosting=RayHosting(replicas=..., max_concurrency=..., num_cpus=..., num_gpus=..., "
                      "resources=..., local_fallback=True for hosting='auto')", DeprecationWarning, stacklevel=4)
        if isinstance(hosting, RayHosting):
            raise ValueError(f"{', '.join(sorted(given))}: give the pool's shape in hosting=RayHosting(...) only, "
                             "not also as Agent keywords")
        if hosting != "local":  # they never applied to a local agent
            custom = dict(given.get("resources") or {})
            data["hosting"] = RayHosting(
                replicas=given.get("replicas", 1), max_concurrency=given.get("max_concurrency", 8),
                num_cpus=custom.pop("num_cpus", 0.0), num_gpus=custom.pop("num_gpus", 0.0), resources=custom,
                local_fallback=hosting == "auto")
        return data

    @field_validator("tools", mode="before")
    @classmethod
    def _tools_not_plain_functions(cls, value: Any) -> Any:
        """A plain function among the tools gets a message saying how to make it one; a single tool
        given for the list, one saying to put it in a list."""
        if isinstance(value, Tool) or (callable(value) and not isinstance(value, (list, tuple))):
            name = value.name if isinstance(value, Tool) else getattr(value, "__name__", type(value).__name__)
            how = "" if isinstance(value, Tool) else ", decorated with `@agents.tool`"
            raise ValueError(f"tools must be a list of tools, got the single {type(value).__name__} {name!r}: "
                             f"write tools=[{name}]{how}")
        for i, item in enumerate(value if isinstance(value, (list, tuple)) else []):
            if callable(item) and not isinstance(item, (Tool, dict, BaseModel)):
                name = getattr(item, "__name__", type(item).__name__)
                raise ValueError(f"tools[{i}] is the plain callable {name!r}: decorate it with `@agents.tool` (its "
                                 "docstring and type hints become the tool's description and argument schema)")
        return value

    @field_validator("tools")
    @classmethod
    def _distinct_tool_names(cls, value: list[Tool]) -> list[Tool]:
        """Two tools of one name: the model could only ever call the first."""
        seen: dict[str, Tool] = {}
        for item in value:
            if item.name in seen:
                raise ValueError(f"two tools are named {item.name!r} ({_origin(seen[item.name])} and {_origin(item)}): "
                                 "the model could only call the first; rename one (@tool(name=...), or "
                                 "mcp_tools(..., prefix=...) for a server's tools)")
            seen[item.name] = item
        return value

    @field_validator("output_schema")
    @classmethod
    def _schema_with_json_schema(cls, value: type[BaseModel] | None) -> type[BaseModel] | None:
        """The schema is shown to the model as JSON Schema: one without (a field of an arbitrary
        type) failed every `ask`, killing each particle, instead of here."""
        if value is not None:
            try:
                value.model_json_schema()
            except (PydanticSchemaGenerationError, PydanticInvalidForJsonSchema) as exc:
                raise ValueError(f"{value.__name__} has no JSON schema to show the model ({str(exc).splitlines()[0]}); "
                                 "give its fields JSON types (str, int, float, bool, lists, dicts, models)") from None
        return value

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or "#" in value:
            raise ValueError(f"agent name must be non-empty without '/' or '#', got {value!r}")
        return value

    # -- where generations run -------------------------------------------------------------------
    def hosted_on_ray(self) -> bool:
        hosting = self.hosting
        if hosting == "local":
            return False
        if hosting == "ray" or (isinstance(hosting, RayHosting) and not hosting.local_fallback):
            return True
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is a dependency
            return False
        return ray.is_initialized()

    def ray_hosting(self) -> RayHosting:
        """The shape of this agent's Ray pool: `hosting` itself, or the default `RayHosting()`."""
        if isinstance(self.hosting, RayHosting):
            return self.hosting.model_copy(update={"local_fallback": False}) if self.hosting.local_fallback \
                else self.hosting
        return RayHosting()

    @property
    def replicas(self) -> int:
        """Deprecated: `agent.ray_hosting().replicas`."""
        return self._deprecated_pool_field("replicas")

    @property
    def max_concurrency(self) -> int:
        """Deprecated: `agent.ray_hosting().max_concurrency`."""
        return self._deprecated_pool_field("max_concurrency")

    @property
    def resources(self) -> dict[str, float]:
        """Deprecated: `agent.ray_hosting()`'s `num_cpus`, `num_gpus` and `resources`, in one dict."""
        pool = self._deprecated_pool_field("resources")
        return {**({"num_cpus": pool.num_cpus} if pool.num_cpus else {}),
                **({"num_gpus": pool.num_gpus} if pool.num_gpus else {}), **pool.resources}

    def _deprecated_pool_field(self, field: str) -> Any:
        warnings.warn(f"Agent.{field} is deprecated: read agent.ray_hosting().{field}", DeprecationWarning,
                      stacklevel=3)
        pool = self.ray_hosting()
        return pool if field == "resources" else getattr(pool, field)

    def backend_name(self) -> str:
        return self.backend.name if self.backend is not None else "llama_cpp"

    # -- building requests -----------------------------------------------------------------------
    def system_prompt(self) -> str:
        parts = [self.system] if self.system else []
        if self.tools:
            parts.append(tools_prompt(self.tools))
        if self.output_schema is not None:
            parts.append(schema_instructions(self.output_schema))
        return "\n\n".join(parts)

    def conversation(self, prompt: str | None = None, history: list[ChatMessage] | None = None) -> list[ChatMessage]:
        if history is not None and not isinstance(history, (list, tuple)):
            raise InvalidGenerationRequest(f"history must be a list of ChatMessage (or of dicts with role and "
                                           f"content), got {type(history).__name__} {shown(history)}")
        messages = []
        if system := self.system_prompt():
            messages.append(ChatMessage(role="system", content=system))
        messages += [_history_message(i, len(messages) + i, m) for i, m in enumerate(history or [])]
        if prompt is not None:
            messages.append(ChatMessage(role="user", content=prompt))
        return messages

    def generate(self, prompt: str | None = None, *, history: list[ChatMessage] | None = None,
                 messages: list[ChatMessage] | None = None, raw_prompt: str | None = None,
                 prefix: str = "", constraint: Any = None, **settings: Any) -> Generation:
        """A generation to `sample`: chat (`prompt`/`history`, or full `messages`) or raw completion
        (`raw_prompt`), continuing `prefix`; keyword arguments override generation settings
        (e.g. unit="word", max_tokens=8, temperature=0.7). `constraint` (from `agents.constraints`)
        applies to the whole reply (`prefix` included) inside the proposal; the site's weight gains
        the log-mass of the allowed tokens (docs/constraints.md)."""
        try:
            merged = _merged_settings(self.settings, settings) if settings else self.settings
            if raw_prompt is not None:
                _only_one_prompt(prompt, history, messages)
                request = GenerationRequest(prompt=raw_prompt, assistant_prefix=prefix, settings=merged,
                                            constraint=constraint)
            else:
                if messages is not None:
                    _messages_alone(prompt, history)
                chat = messages if messages is not None else self.conversation(prompt, history)
                if not chat:
                    raise InvalidGenerationRequest("generate() needs something to answer: a prompt, a history, "
                                                   "messages, or a raw_prompt")
                request = GenerationRequest(messages=chat, assistant_prefix=prefix, settings=merged,
                                            constraint=constraint, tools=[t.openai_schema() for t in self.tools] or None,
                                            response_format=response_format(self.output_schema) if self.output_schema else None)
        except (ValidationError, InvalidGenerationRequest) as exc:
            raise InvalidGenerationRequest(f"agent {self.name!r}: {_described(exc)}") from None
        return Generation(self, request, target=self.target)

    # -- the call ----------------------------------------------------------------------------------
    async def ask(self, prompt: str, *, name: str | None = None, history: list[ChatMessage] | None = None,
                  sender: str = "user") -> Any:
        """Send `prompt` from `sender`; return the reply (a validated object with an output schema).

        With tools the agent may call them up to `max_tool_rounds` times. With an output schema an
        invalid reply is retried up to `max_output_retries` times, then the particle fails a
        `guarantee` named `<site>/valid_output` (recorded in its trace, not raised)."""
        if not isinstance(prompt, str):
            raise InvalidGenerationRequest(f"agent {self.name!r}: ask() needs a str prompt, got {type(prompt).__name__} "
                                           f"{shown(prompt)}")
        site = name or auto_name(self.name)
        interact(sender, self.name, prompt, name=f"{site}/request")
        try:
            messages = self.conversation(prompt, history)
        except (ValidationError, InvalidGenerationRequest) as exc:
            raise InvalidGenerationRequest(f"agent {self.name!r}: {_described(exc)}") from None
        text = await self._respond(site, messages)
        reply: Any = text
        if self.output_schema is not None:
            reply, text = await self._structured(site, messages, text)
        interact(self.name, sender, text, name=f"{site}/reply")  # the reply accepted, after any retries
        return reply

    async def _generate_turn(self, site: str, messages: list[ChatMessage]) -> str:
        text = await sample(site, self.generate(messages=messages))
        return text

    async def _respond(self, site: str, messages: list[ChatMessage]) -> str:
        """Generate, running requested tools and feeding their results back, until a plain reply."""
        turn_site = site
        for round_ in range(self.max_tool_rounds + 1):
            text = await self._generate_turn(turn_site, messages)
            calls = tool_call_blocks(text) if self.tools else []
            if not calls or round_ == self.max_tool_rounds:
                return text
            ids = [f"call_{round_}_{i}" for i in range(len(calls))]
            messages.append(ChatMessage(role="assistant", content=text, tool_calls=[
                _openai_call(ids[i], name, arguments) for i, (name, arguments, problem) in enumerate(calls)
                if problem is None] or None))
            answers, complaints = [], []
            for i, (tool_name, arguments, problem) in enumerate(calls):
                call_site = f"{turn_site}/call{i}"
                tool_ = next((t for t in self.tools if t.name == tool_name), None) if problem is None else None
                endpoint = tool_.endpoint if tool_ is not None else tool_name or "(malformed tool call)"
                interact(self.name, endpoint, arguments, kind="tool_call", name=call_site)
                refusal = refusal_of(call_site, self.name, tool_, arguments) if tool_ is not None else None
                result = await sample(f"{call_site}/result", ToolExecution(tool_, tool_name, arguments, refusal,
                                                                           tuple(t.name for t in self.tools), problem))
                interact(endpoint, self.name, result, kind="tool_result", name=f"{call_site}/result")
                if problem is None:
                    answers.append(ChatMessage(role="tool", content=result, name=tool_name, tool_call_id=ids[i]))
                else:  # not a call: no id to answer, so the complaint is the user's
                    complaints.append(ChatMessage(role="user", content=result))
            messages += answers + complaints  # every call answered before anything else (OpenAI's rule)
            turn_site = f"{site}/turn{round_ + 1}"
        return text  # pragma: no cover - the loop always returns

    async def _structured(self, site: str, messages: list[ChatMessage], text: str) -> tuple[Any, str]:
        """(the validated object, the reply text it was read from), retrying an invalid reply."""
        assert self.output_schema is not None
        for attempt in range(self.max_output_retries + 1):
            obj, problem = parse_output(text, self.output_schema)
            if obj is not None:
                return obj, text
            if attempt == self.max_output_retries:
                break
            messages = [*messages, ChatMessage(role="assistant", content=text),
                        ChatMessage(role="user", content=f"That reply is invalid: {problem}. "
                                                         "Reply again with only the corrected JSON object.")]
            text = await self._generate_turn(f"{site}/retry{attempt + 1}", messages)
        guarantee(f"{site}/valid_output", False)  # kills the particle; the run goes on
        return None, text  # pragma: no cover - guarantee(False) ends the particle


_SETTINGS: dict[tuple, tuple[GenerationSettings, GenerationSettings]] = {}


def _openai_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    """A tool call as the assistant message's OpenAI `tool_calls` entry, which the tool message
    answers by `tool_call_id`: servers that validate chats (llama-cpp-python's, OpenAI's) refused a
    tool message without one, and the particle was lost at its agent's first tool round."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def _merged_settings(base: GenerationSettings, overrides: dict[str, Any]) -> GenerationSettings:
    """`base` with `overrides`, validated (a bad value names the field); the same combination,
    asked for at every step of every particle, is validated once (GenerationSettings is frozen).

    The cache is keyed by the identity of `base` (kept alive in the entry, and checked) and the
    overrides as given, so a hit costs one tuple and one dictionary lookup."""
    try:
        key = (id(base), *overrides.items())
        entry = _SETTINGS.get(key)
    except TypeError:  # an unhashable override value: no caching
        return _validated_settings(base, overrides)
    if entry is not None and entry[0] is base:
        return entry[1]
    merged = _validated_settings(base, overrides)
    if len(_SETTINGS) > 4096:
        _SETTINGS.clear()
    _SETTINGS[key] = (base, merged)
    return merged


def _validated_settings(base: GenerationSettings, overrides: dict[str, Any]) -> GenerationSettings:
    unknown = sorted(set(overrides) - set(GenerationSettings.model_fields))
    if unknown:
        raise InvalidGenerationRequest(f"unknown generation setting {unknown[0]!r}; the settings are "
                                       f"{', '.join(GenerationSettings.model_fields)}")
    return GenerationSettings.model_validate({**base.model_dump(), **overrides})


def _origin(tool_: Tool) -> str:
    """Where a tool comes from: its server endpoint, or its function."""
    if tool_.endpoint != tool_.name:
        return tool_.endpoint
    fn = getattr(tool_, "fn", None)
    return f"function {getattr(fn, '__qualname__', tool_.name)}" if fn is not None else tool_.name


def _only_one_prompt(prompt: Any, history: Any, messages: Any) -> None:
    """A raw completion takes its whole text from `raw_prompt`: a chat prompt beside it would be dropped."""
    given = [name for name, value in (("prompt", prompt), ("history", history), ("messages", messages))
             if value is not None]
    if given:
        raise InvalidGenerationRequest(f"generate() got raw_prompt and {', '.join(given)}: a raw completion takes "
                                       "its whole text from raw_prompt; give one or the other")


def _history_message(index: int, position: int, message: Any) -> ChatMessage:
    """`history[index]` (at `position` in the chat) as a ChatMessage, or an error naming both: by its
    place in the chat alone ("messages.2") it read as shifted by the agent's system prompt."""
    if isinstance(message, ChatMessage):
        return message
    try:
        return ChatMessage.model_validate(message)
    except ValidationError as exc:
        problems = "; ".join(f"messages.{'.'.join(map(str, (position, *e['loc'])))}={shown(e.get('input'))}: {e['msg']}"
                             for e in exc.errors()[:3])
        raise InvalidGenerationRequest(f"history[{index}]: {problems}") from None


def _messages_alone(prompt: Any, history: Any) -> None:
    """`messages` is the whole chat: a `prompt` or `history` beside it would be dropped unread."""
    given = [name for name, value in (("prompt", prompt), ("history", history)) if value is not None]
    if given:
        raise InvalidGenerationRequest(f"generate() got messages and {' and '.join(given)}: messages is the whole "
                                       "chat (sent as given, without the agent's system prompt); put the prompt "
                                       "in it as the last user message, or give prompt/history without messages")


def _described(exc: Exception) -> str:
    """A pydantic validation error in one line a person can act on: each field at fault, the value
    given and what is wrong (`settings.max_tokens=-1: Input should be greater than 0`)."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    where = {"GenerationSettings": "settings.", "ChatMessage": "message ", "GenerationRequest": ""}.get(exc.title, "")
    problems = [f"{where}{'.'.join(map(str, error['loc']))}={shown(error.get('input'))}: {error['msg']}"
                for error in exc.errors()[:3]]
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(problems) + more

