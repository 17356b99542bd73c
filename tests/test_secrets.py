"""`agents.secrets`: Secret never shows itself; redact scrubs nested structures; logs are filtered."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle

import pytest
from pydantic import BaseModel

from agents.secrets import (MASK, RedactingFilter, Secret, install_logging_redaction, redact,
                            register_secret, registered_secrets, unregister_secret)

KEY = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_registry():
    before = registered_secrets()
    yield
    for value in registered_secrets() - before:
        unregister_secret(value)


class Inner(BaseModel):
    text: str
    tags: list[str] = []


class Outer(BaseModel):
    name: str
    inner: Inner
    extra: dict[str, object] = {}


@dataclasses.dataclass(frozen=True)
class Event:
    site: str
    payload: dict


def test_secret_repr_and_str_are_masked_and_value_is_recoverable():
    s = Secret(KEY)
    assert str(s) == MASK == "**********"
    assert repr(s) == "Secret('**********')" and KEY not in repr(s) and KEY not in f"{s} {[s]} {s!r}"
    assert s.get_secret_value() == KEY and s == Secret(KEY)
    assert KEY in registered_secrets()
    unregistered = Secret("another-secret-value", register=False)
    assert "another-secret-value" not in registered_secrets() and str(unregistered) == MASK


def test_unpickled_secret_is_registered_again():
    s = Secret(KEY)
    unregister_secret(KEY)                      # as in a fresh process (e.g. a Ray actor)
    clone = pickle.loads(pickle.dumps(s))
    assert clone.get_secret_value() == KEY and repr(clone) == repr(s) and KEY in registered_secrets()


def test_secret_as_a_pydantic_field_is_masked_in_repr_and_json():
    class Config(BaseModel):
        api_key: Secret
    c = Config(api_key=KEY)
    assert KEY not in repr(c) and KEY not in c.model_dump_json()
    assert isinstance(c.api_key, Secret) and KEY in registered_secrets()


def test_redact_nested_dicts_lists_tuples_models_and_dataclasses():
    register_secret(KEY)
    obj = {
        "headers": {"Authorization": f"Bearer {KEY}"},
        KEY: "a key used as a dict key",
        "messages": [("user", f"my key is {KEY}!"), {KEY, "other"}],
        "model": Outer(name="x", inner=Inner(text=f"..{KEY}..", tags=[KEY]), extra={"k": [KEY]}),
        "event": Event(site="s", payload={"url": f"https://h/?key={KEY}"}),
        "numbers": [1, 2.5, None, True],
        "raw": KEY.encode(),
    }
    out = redact(obj)
    assert KEY not in repr(out) and KEY not in json.dumps(out, default=repr)
    assert out["headers"]["Authorization"] == f"Bearer {MASK}"
    assert out[MASK] == "a key used as a dict key"
    assert out["messages"][0] == ("user", f"my key is {MASK}!") and out["messages"][1] == {MASK, "other"}
    assert isinstance(out["model"], Outer) and out["model"].inner.text == f"..{MASK}.."
    assert out["model"].inner.tags == [MASK] and out["model"].extra == {"k": [MASK]}
    assert isinstance(out["event"], Event) and out["event"].payload["url"].endswith(f"key={MASK}")
    assert out["numbers"] == [1, 2.5, None, True] and out["raw"] == MASK.encode()
    # the input is left untouched
    assert obj["headers"]["Authorization"] == f"Bearer {KEY}" and obj["model"].inner.text == f"..{KEY}.."


def test_redact_explicit_secrets_and_encoded_forms():
    tricky = 'p@ss/"word"\\x'
    assert redact(f"a {tricky} b", secrets=[tricky]) == f"a {MASK} b"
    assert redact(json.dumps({"pw": tricky}), secrets=[tricky]) == json.dumps({"pw": MASK})
    assert redact("https://h/?pw=p%40ss%2F%22word%22%5Cx", secrets=[Secret(tricky, register=False)]) \
        == f"https://h/?pw={MASK}"
    assert redact("nothing to hide", secrets=[]) == "nothing to hide"


def test_short_placeholders_are_not_registered():
    assert register_secret("EMPTY") is False and register_secret("") is False and register_secret(None) is False
    assert "EMPTY" not in registered_secrets()
    assert redact("EMPTY stays") == "EMPTY stays"
    assert register_secret(KEY) is True


def test_logging_filter_redacts_message_args_and_exception():
    register_secret(KEY)
    records: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = ListHandler()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    install_logging_redaction(handler)
    logger = logging.getLogger("plp.test.secrets.child")   # a child: its records propagate
    parent = logging.getLogger("plp.test.secrets")
    parent.addHandler(handler)
    parent.setLevel(logging.INFO)
    try:
        logger.info("calling with key %s and %r", KEY, {"api_key": KEY})
        logger.info(f"inline {KEY}")
        try:
            raise RuntimeError(f"auth failed for {KEY}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        parent.removeHandler(handler)
    text = "\n".join(records)
    assert KEY not in text and text.count(MASK) >= 4
    assert "calling with key **********" in text and "RuntimeError: auth failed for **********" in text


def test_filter_with_explicit_secrets_and_install_on_root_handlers():
    flt = RedactingFilter(secrets=["explicit-secret-1"])
    record = logging.LogRecord("n", logging.INFO, __file__, 1, "x=%s", ("explicit-secret-1",), None)
    assert flt.filter(record) is True and record.getMessage() == f"x={MASK}"
    root, handler = logging.getLogger(), logging.NullHandler()
    root.addHandler(handler)
    try:
        install_logging_redaction()
        install_logging_redaction()
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)
