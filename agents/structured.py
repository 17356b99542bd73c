"""Structured output: parse a completion into a pydantic object, or say precisely why not."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError


def schema_instructions(schema: type[BaseModel]) -> str:
    return ("Reply with a single JSON object and nothing else. It must match this JSON schema:\n"
            + json.dumps(schema.model_json_schema()))


def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI `response_format` for servers that constrain decoding to a schema."""
    return {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()}}


def extract_json(text: str) -> str | None:
    """The first balanced {...} block of `text` (models often wrap JSON in prose or fences)."""
    start = text.find("{")
    while start != -1:
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
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i + 1]
        start = text.find("{", start + 1)
    return None


def parse_output(text: str, schema: type[BaseModel]) -> tuple[BaseModel | None, str | None]:
    """(object, None) when `text` holds a valid object, else (None, the reason)."""
    block = extract_json(text)
    if block is None:
        return None, "the reply contains no JSON object"
    try:
        return schema.model_validate_json(block), None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
        return None, f"the JSON does not match {schema.__name__}: {problems}"
