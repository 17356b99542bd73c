"""Structured output: parse a completion into a pydantic object, or say precisely why not."""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

from pydantic import BaseModel, RootModel, ValidationError


def schema_instructions(schema: type[BaseModel]) -> str:
    what = "JSON value" if _is_root(schema) else "JSON object"
    return (f"Reply with a single {what} and nothing else. It must match this JSON schema:\n"
            + json.dumps(schema.model_json_schema()))


def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI `response_format` for servers that constrain decoding to a schema. Its name is
    the schema's, in the characters OpenAI allows (a-z, A-Z, 0-9, _ and -, at most 64): a generic
    model's `Page[int]` was refused by the server, and its particle lost."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", schema.__name__).strip("_")[:64] or "output"
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema.model_json_schema()}}


def json_blocks(text: str, openings: str = "{") -> Iterator[str]:
    """The balanced top-level blocks of `text` that open with one of `openings` ("{", "[") and close
    where their brackets balance (brackets inside JSON strings skipped), in order. A block's inner
    blocks are not candidates of their own (a schema echoed back, {"properties": {"answer": ...}},
    is not an answer); an opening that never balances is skipped for the next one."""
    start = 0
    while start < len(text):
        if text[start] not in openings:
            start += 1
            continue
        end = _balanced_end(text, start)
        if end is None:
            start += 1
            continue
        yield text[start:end]
        start = end


def _balanced_end(text: str, start: int) -> int | None:
    """The index just past the bracket that balances the one at `start`, or None."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            escaped = (ch == "\\") and not escaped
            if ch == '"' and not escaped:
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def extract_json(text: str) -> str | None:
    """The first balanced {...} block of `text` that is JSON, else the first balanced block (models
    often wrap JSON in prose or fences, and prose may hold braces: "use the {verdict} field")."""
    first = None
    for block in json_blocks(text):
        if _is_json(block):
            return block
        first = block if first is None else first
    return first


def parse_output(text: str, schema: type[BaseModel]) -> tuple[BaseModel | None, str | None]:
    """(object, None) when `text` holds a valid object, else (None, the reason). The candidates are
    the balanced {...} blocks of the text in order (also [...] blocks and the whole text for a
    `RootModel` schema, whose JSON need not be an object); the first that validates is the object."""
    root = _is_root(schema)
    problem = None
    for block in _candidates(text, root):  # lazily: most replies are read at their first block
        try:
            return schema.model_validate_json(block), None
        except ValidationError as exc:
            if problem is None or (not _is_json(problem[0]) and _is_json(block)):  # a JSON block's complaint first
                problem = (block, exc)
    if problem is None:
        return None, f"the reply contains no JSON {'value' if root else 'object'}"
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in problem[1].errors())
    return None, f"the JSON does not match {schema.__name__}: {problems}"


def _candidates(text: str, root: bool) -> Iterator[str]:
    """The blocks `parse_output` tries, in order: {...} ([...] too for a root schema), then a root
    schema's bare value (the whole text, when it is JSON: a string or a number)."""
    yield from json_blocks(text, "{[" if root else "{")
    if root and _is_json(text.strip()):
        yield text.strip()


def _is_root(schema: type[BaseModel]) -> bool:
    """A `RootModel[...]` schema: its JSON is the root value (a list, a string, ...), not an object."""
    return isinstance(schema, type) and issubclass(schema, RootModel)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
