"""Pydantic models built from values the engine has already typed, without validation.

`trusted(cls, values)` is the instance `cls.model_construct(**values)` makes when `values` gives
every field of `cls` in order, minus model_construct's per-field default and alias handling: a
dictionary assignment instead of ~5 µs of validation. For the per-particle records of large
populations (a final `Particle` each, a listener's `ParticleStep` each step), built from the
engine's own arrays; anything that comes from a user is validated as usual.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


_ALL_FIELDS: dict[type, set[str]] = {}
"""cls → the set of all its field names, shared by its trusted instances: pydantic only ever adds a
field's name to an instance's fields-set (on assignment), and every name is in it already."""


def trusted(cls: type[M], values: dict[str, Any]) -> M:
    """An instance of `cls` holding `values` (every field, in order), not validated."""
    fields = _ALL_FIELDS.get(cls)
    if fields is None:
        fields = _ALL_FIELDS[cls] = set(cls.model_fields)
    record = cls.__new__(cls)
    object.__setattr__(record, "__dict__", values)
    object.__setattr__(record, "__pydantic_fields_set__", fields)
    object.__setattr__(record, "__pydantic_extra__", None)
    object.__setattr__(record, "__pydantic_private__", None)
    return record
