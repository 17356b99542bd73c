"""Keeping secrets (API keys, tokens) out of traces, spans, logs and checkpoints.

Three pieces:

- `Secret`: a `pydantic.SecretStr` whose `str()` is `'**********'` and whose `repr()` is
  `Secret('**********')`; `.get_secret_value()` returns the real value. Creating one registers the
  value (opt out with `Secret(value, register=False)`), so holding keys as `Secret` is enough for
  every writer below to scrub them.
- `register_secret(value)`: the process-wide registry. Backends call it with whatever credential
  they receive (e.g. the OpenAI API key). Values shorter than `MIN_SECRET_LENGTH` are ignored
  (placeholders such as "EMPTY" would otherwise erase ordinary words everywhere).
- `redact(obj, secrets=None)`: returns a copy of `obj` (str, bytes, dict, list, tuple, set,
  pydantic model, dataclass; anything else is returned unchanged) with every occurrence of every
  registered value (or of `secrets`, when given) replaced by `'**********'`. Keys of dicts are
  scrubbed too. Each value is also matched in its URL-quoted and JSON-escaped forms, so redacting
  an already serialised line works.

Where it is wired (tests/test_secrets.py greps every artifact of a run for a key):

- the core: importing this module registers the registry with `swarm.errors.add_redactor`, so every
  exception message a particle's `ErrorEvent` records is masked (before it is cut to 2000 chars);
- `OpenAICompatible` registers its api key and masks it (and its encoded forms) in every error;
- trace files (`observability.trace_file`): each serialised line is masked before it is written;
- spans (`observability.otel`): every string attribute, event attribute and status description;
- checkpoints: traces are pickled with their (already masked) error messages; never pickle a
  `Secret` or a backend holding one there (a pickle contains the raw value): store the *name* of
  the env var and re-read it on resume;
- logging: `OpenAICompatible` masks its own log lines; for everything else call
  `install_logging_redaction()`, which adds `RedactingFilter` to the root logger's handlers (a
  filter on a *logger* does not see records propagated from child loggers; on a *handler* it does).

Limits: only exact registered values (and the two encodings above) are found. A secret that is
split, base64-encoded (e.g. inside HTTP basic auth), hashed or otherwise transformed is not.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
import threading
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from pydantic import BaseModel, SecretStr

from swarm.errors import add_redactor

__all__ = ["MASK", "MIN_SECRET_LENGTH", "Secret", "register_secret", "unregister_secret",
           "registered_secrets", "redact", "RedactingFilter", "install_logging_redaction"]

MASK = "**********"
MIN_SECRET_LENGTH = 8

_lock = threading.Lock()
_registry: set[str] = set()
_version = 0
"""Bumped on every change of the registry, so `redact` checks for changes without taking the lock."""
_pattern_cache: tuple[int, re.Pattern[str] | None] = (0, None)


class Secret(SecretStr):
    """A string that never shows itself: `str()` → `'**********'`, repr → `Secret('**********')`."""

    def __init__(self, secret_value: str, *, register: bool = True) -> None:
        super().__init__(secret_value)
        if register:
            register_secret(secret_value)

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __reduce__(self):
        """Unpickling (e.g. in a Ray actor) re-registers the value in the receiving process."""
        return (Secret, (self.get_secret_value(),))


def _plain(value: str | SecretStr) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def register_secret(value: str | SecretStr | None) -> bool:
    """Add a value to the process-wide registry; returns False (and ignores it) when it is empty or
    shorter than `MIN_SECRET_LENGTH`."""
    plain = _plain(value) if value is not None else ""
    if len(plain) < MIN_SECRET_LENGTH:
        return False
    global _version
    with _lock:
        if plain not in _registry:
            _registry.add(plain)
            _version += 1
    return True


def unregister_secret(value: str | SecretStr) -> None:
    global _version
    with _lock:
        if _plain(value) in _registry:
            _registry.discard(_plain(value))
            _version += 1


def registered_secrets() -> frozenset[str]:
    """The registered values (for tests and for writers that need them; never log this)."""
    with _lock:
        return frozenset(_registry)


def _variants(plain: str) -> set[str]:
    return {plain, quote(plain, safe=""), json.dumps(plain)[1:-1]}


def _compile(values: Iterable[str]) -> re.Pattern[str] | None:
    forms = {v for plain in values if plain for v in _variants(plain)}
    if not forms:
        return None
    return re.compile("|".join(re.escape(v) for v in sorted(forms, key=len, reverse=True)))


def _pattern(secrets: Iterable[str | SecretStr] | None) -> re.Pattern[str] | None:
    global _pattern_cache
    if secrets is not None:
        return _compile(_plain(s) for s in secrets)
    cached_for, pattern = _pattern_cache
    if cached_for != _version:
        with _lock:
            version, current = _version, frozenset(_registry)
        pattern = _compile(current)
        _pattern_cache = (version, pattern)
    return pattern


def redact(obj: Any, secrets: Iterable[str | SecretStr] | None = None) -> Any:
    """A copy of `obj` with every secret replaced by `'**********'` (see the module docstring).
    `secrets=None` uses the process-wide registry; the input is never modified."""
    pattern = _pattern(secrets)
    return obj if pattern is None else _scrub(obj, pattern)


def _scrub(obj: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(obj, str):
        return pattern.sub(MASK, obj)
    if isinstance(obj, (bytes, bytearray)):
        text = pattern.sub(MASK, obj.decode("utf-8", "surrogateescape"))
        return type(obj)(text.encode("utf-8", "surrogateescape"))
    if isinstance(obj, SecretStr) or obj is None or isinstance(obj, (bool, int, float)):
        return obj
    if isinstance(obj, dict):
        return type(obj)((_scrub(k, pattern), _scrub(v, pattern)) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_scrub(v, pattern) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if isinstance(obj, BaseModel):
        update = {name: _scrub(getattr(obj, name), pattern) for name in type(obj).model_fields}
        return obj.model_copy(update=update)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        clone = copy.copy(obj)
        for f in dataclasses.fields(obj):
            object.__setattr__(clone, f.name, _scrub(getattr(obj, f.name), pattern))
        return clone
    return obj


class RedactingFilter(logging.Filter):
    """Scrubs each record in place: the message, each of its arguments, the exception text and the
    stack text. Always lets the record through. Attach it to *handlers*.

    The arguments keep their shape (a tuple stays a tuple of as many items, a mapping a mapping), so
    a formatter that reads `record.args` itself still can (uvicorn's access log unpacks client,
    method, path, version and status from them: merging them into the message broke every line).
    A string argument is masked; a number, bool or None kept; any other object is kept unless its
    str or repr shows a secret, then it is replaced by a stand-in whose str and repr are masked."""

    def __init__(self, name: str = "", secrets: Iterable[str | SecretStr] | None = None) -> None:
        super().__init__(name)
        self._secrets = None if secrets is None else [_plain(s) for s in secrets]

    def filter(self, record: logging.LogRecord) -> bool:
        pattern = _pattern(self._secrets)
        if pattern is None:
            return True
        record.msg = pattern.sub(MASK, record.msg if isinstance(record.msg, str) else str(record.msg))
        if record.args:
            record.args = _masked_args(record.args, pattern)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = pattern.sub(MASK, record.exc_text)
        if record.stack_info:
            record.stack_info = pattern.sub(MASK, record.stack_info)
        return True


def _masked_args(args: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(args, Mapping):
        return {key: _masked_arg(value, pattern) for key, value in args.items()}
    return tuple(_masked_arg(value, pattern) for value in args)


def _masked_arg(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(MASK, value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text, shown = str(value), repr(value)
    if pattern.search(text) or pattern.search(shown):
        return _MaskedArgument(pattern.sub(MASK, text), pattern.sub(MASK, shown))
    return value


class _MaskedArgument:
    """A log argument that showed a secret: formats (`%s`, `%r`) as its masked str and repr."""

    __slots__ = ("text", "shown")

    def __init__(self, text: str, shown: str) -> None:
        self.text, self.shown = text, shown

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.shown


def _redact_text(text: str) -> str:
    pattern = _pattern(None)
    return text if pattern is None else pattern.sub(MASK, text)


add_redactor(_redact_text)   # the core masks registered secrets in the error messages it records


def install_logging_redaction(target: logging.Logger | logging.Handler | None = None) -> RedactingFilter:
    """Add one `RedactingFilter` to a handler, or to every handler of a logger (default: root).
    Handlers added later need their own call."""
    flt = RedactingFilter()
    if isinstance(target, logging.Handler):
        target.addFilter(flt)
        return flt
    for handler in (target or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
