"""`agents.secrets`: Secret never shows itself; redact scrubs nested structures; logs are filtered."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import traceback

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


def test_the_filter_keeps_the_arguments_a_formatter_reads():
    """A formatter that reads `record.args` itself (uvicorn's access log unpacks five of them) still
    can: before, the filter merged them into the message and set them to None, so every such line
    was a 'Logging error' traceback. Each argument is masked in place; a str/repr showing a secret
    becomes a stand-in with masked str and repr."""
    register_secret(KEY)

    class AccessFormatter(logging.Formatter):  # reads the arguments, as uvicorn's does
        def formatMessage(self, record):
            client, method, path, version, status = record.args
            return f"{client} {method} {path} HTTP/{version} {status + 0}"

    class Holder:
        def __repr__(self):
            return f"Holder(key={KEY!r})"

    flt = RedactingFilter()
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", f"/v1?key={KEY}", "1.1", 200), None)
    assert flt.filter(record) and AccessFormatter().format(record) == f"127.0.0.1:5 GET /v1?key={MASK} HTTP/1.1 200"
    record = logging.LogRecord("n", logging.INFO, __file__, 1, "%(who)s has %(holder)r and %(n)d", ({
        "who": KEY, "holder": Holder(), "n": 3},), None)
    assert flt.filter(record) and record.getMessage() == f"{MASK} has Holder(key='{MASK}') and 3"
    plain = object()
    record = logging.LogRecord("n", logging.INFO, __file__, 1, "%s", (plain,), None)
    assert flt.filter(record) and record.args == (plain,)  # nothing to mask: the object itself


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


# ---- the secret-grep test: a whole run, every artifact ----------------------------------------------
def _artifacts_of_a_run(tmp_path, key: str, log_records: list[str]) -> tuple[dict[str, bytes], dict]:
    """Run SMC with an OpenAICompatible backend holding `key` against the local fault server (its
    first 7 requests fail with error bodies quoting the Authorization header: six are retried, one
    fails for good), a program
    that raises an exception quoting the key, every exporter and writer attached; return every
    artifact as bytes, plus what the test needs to show the key was really there."""
    import io
    import pickle

    import policies
    from agents import Agent, GenerationSettings
    from agents.backends.openai_compat import OpenAICompatible
    from bench.otel_overhead import OTLPSink
    from observability.exporters import instrument
    from observability.html_report import write_report
    from observability.otel import OTelListener
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
    from observability.progress import ProgressListener
    from observability.trace_file import TraceFileWriter, read_trace_file
    from swarm import factor
    from tests.fault_server import FaultServer

    raised: list[BaseException] = []
    with FaultServer(script=["500"] * 7, echo_authorization=True) as srv, OTLPSink(keep_bodies=True) as sink:
        backend = OpenAICompatible(srv.base_url, "fake-model", api_key=key, max_retries=1, backoff_base=0.001,
                                   backoff_max=0.01, max_concurrency=1)  # arrival order = script order
        agent = Agent(name="solver", backend=backend, settings=GenerationSettings(max_tokens=4))

        async def program(n: int):
            answer = await agent.ask(f"Question {n}?")
            factor("answered", 0.0)
            if len(raised) < 2:
                exc = PermissionError(f"tool refused the credential {key} (attempt {len(raised)})")
                raised.append(exc)
                raise exc
            return answer

        writer = TraceFileWriter(tmp_path / "run.jsonl")
        memory = instrument("memory", register=False, capture_content=True)
        otlp = instrument("otlp", endpoint=sink.endpoint, register=False, capture_content=True)
        console_out, progress = io.StringIO(), io.StringIO()
        console = TracerProvider()
        console.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=console_out)))
        listeners = [writer, memory.listener, otlp.listener, OTelListener(console, capture_content=True),
                     ProgressListener(progress, tty=False)]
        extra = {"checkpoint": str(tmp_path / "ckpt")} if "checkpoint" in policies.SMC.model_fields else {}
        result = policies.SMC(num_particles=6, ess_threshold=1.0, seed=0, listeners=listeners, max_lost_fraction=0.5,
                              **extra).run(program, 1)
        with pytest.raises(Exception) as bad_factor:   # a framework error quoting a value that holds the key
            policies.SMC(num_particles=2, seed=0, listeners=listeners).run(lambda: factor("score", f"{key}"))
        writer.close()
        for inst in (memory, otlp, console):
            inst.shutdown()
        console_out = console_out.getvalue()
    write_report(read_trace_file(tmp_path / "run.jsonl"), tmp_path / "report.html")
    files = {str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    artifacts = {
        **{f"file:{name}": data for name, data in files.items()},
        "otlp-bodies": b"".join(sink.bodies),
        "memory-spans": "\n".join(s.to_json() for s in memory.memory_exporter.get_finished_spans()).encode(),
        "progress": progress.getvalue().encode(),
        "console-spans": console_out.encode(),
        "logs": "\n".join(log_records).encode(),
        "result-repr": repr(result).encode(),
        "result-pickle": pickle.dumps(result),
        "error-events": repr([p.trace.error for p in result.particles]).encode(),
        "bad-factor-error": "".join(traceback.format_exception(bad_factor.value)).encode(),
        "backend-repr": repr(backend).encode(),
    }
    seen = {"authorization": [r["authorization"] for r in srv.requests], "actions": [r["action"] for r in srv.requests],
            "raised": [str(e) for e in raised],
            "result": result, "files": sorted(files), "otlp": sink.requests, "checkpoint": bool(extra)}
    return artifacts, seen


def test_no_artifact_of_a_run_contains_the_api_key(tmp_path, capfd):
    import secrets as std_secrets

    key = "sk-plp-" + std_secrets.token_hex(16)
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(logging.Formatter("%(levelname)s %(name)s %(message)s").format(record))

    root, handler = logging.getLogger(), Capture(logging.DEBUG)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)      # every library's debug logging too (openai, httpx, httpcore)
    try:
        artifacts, seen = _artifacts_of_a_run(tmp_path, key, records)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    out, err = capfd.readouterr()
    artifacts["stdout"], artifacts["stderr"] = out.encode(), err.encode()

    # the key was really in play: sent to the server, quoted by it and by the program's exceptions
    assert all(a == f"Bearer {key}" for a in seen["authorization"])
    assert seen["raised"] and all(key in r for r in seen["raised"])
    # and the run did what the artifacts should show
    result = seen["result"]
    errors = [p.trace.error for p in result.particles if p.trace.error is not None]
    assert any(p.status == "finished" for p in result.particles)
    assert {"run.jsonl", "report.html"} <= set(seen["files"]) and seen["otlp"] >= 1
    assert b"PermissionError" in artifacts["file:run.jsonl"] and b"BackendError" in artifacts["file:run.jsonl"]
    assert b"fault script says 500 (you sent Authorization: Bearer ***)" in artifacts["file:run.jsonl"]
    assert b"tool refused the credential ********** (attempt" in artifacts["file:run.jsonl"]
    assert b"PermissionError" in artifacts["otlp-bodies"] and b'"name": "plp.particle' in artifacts["console-spans"]
    assert len(artifacts["logs"]) > 0 and all(e.message.count(key) == 0 for e in errors)
    assert "InvalidPotentialError" in artifacts["bad-factor-error"].decode()
    if seen["checkpoint"]:
        assert any(name.startswith("ckpt/") for name in seen["files"])

    leaks = [name for name, data in artifacts.items() if key.encode() in data
             or key.encode("utf-16-le") in data or key[7:].encode() in data]
    assert leaks == [], f"the api key leaked into {leaks}"
