"""A throwaway Arize Phoenix server for tests: `with phoenix_server() as px: ...`.

Phoenix lives in its own virtualenv, `<repo>/.venv-phoenix` (see scripts/install_phoenix.sh).
The server is started on free ports of 127.0.0.1 with a temporary working directory and the
settings ARCHITECTURE.md requires (no telemetry, no external resources, assistant without bash),
polled until ready, and always terminated (then its working directory removed) on exit.

    with phoenix_server() as px:
        inst = observability.exporters.instrument("otlp", endpoint=px.otlp_endpoint, project="p")
        ...                                   # runs
        inst.shutdown()                       # flush
        spans = px.wait_for_spans("p", count=18)
        heavy = px.filter_spans("p", "plp.final == True and plp.normalized_weight >= 0.1")

Spans come back from Phoenix's REST API, `GET /v1/projects/<project>/spans` (paginated by
`next_cursor`); each span is a dict with `name`, `context` {trace_id, span_id}, `parent_id`,
`span_kind` (the OpenInference kind), `start_time`, `end_time` (ISO 8601), `status_code`,
`attributes` (flat dotted keys, `openinference.span.kind` removed) and `events`
[{name, timestamp, attributes}]. Span links are not stored. `filter_spans` runs a span filter
expression (the UI's filter box) through Phoenix's GraphQL API, as the UI does.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from bench.common import stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOENIX_BIN = REPO_ROOT / ".venv-phoenix" / "bin" / "phoenix"


def phoenix_available() -> bool:
    """True when scripts/install_phoenix.sh has installed the `phoenix` executable."""
    return PHOENIX_BIN.exists()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now on `host` ("" checks every interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@dataclass
class PhoenixServer:
    """A running Phoenix: its URLs, process and log, and a reader for its spans."""

    port: int
    grpc_port: int
    working_dir: Path
    process: subprocess.Popen
    startup_s: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        """Where to export OTLP/HTTP spans."""
        return f"{self.base_url}/v1/traces"

    @property
    def log_path(self) -> Path:
        return self.working_dir / "phoenix.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def version(self) -> str:
        return _get(f"{self.base_url}/arize_phoenix_version")[1].decode()

    def spans(self, project: str = "default") -> list[dict[str, Any]]:
        """Every span of `project` (all pages); [] when the project does not exist yet."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            url = (f"{self.base_url}/v1/projects/{urllib.parse.quote(project, safe='')}/spans?"
                   + urllib.parse.urlencode(query))
            status, body = _get(url)
            if status == 404:
                return []
            if status != 200:
                raise RuntimeError(f"GET {url} -> {status}: {body[:500]!r}")
            page = json.loads(body)
            out.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        """POST a GraphQL query to Phoenix (what its UI does); returns `data`, raises on `errors`."""
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(f"{self.base_url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - 127.0.0.1
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise RuntimeError(f"Phoenix GraphQL errors: {answer['errors']}")
        return answer["data"]

    def project_id(self, project: str) -> str:
        """The GraphQL node id of `project` (KeyError when it does not exist)."""
        data = self.graphql("query { projects { edges { node { id name } } } }")
        ids = {e["node"]["name"]: e["node"]["id"] for e in data["projects"]["edges"]}
        return ids[project]

    def filter_spans(self, project: str, condition: str, first: int = 1000) -> list[dict[str, Any]]:
        """The spans of `project` that the span filter `condition` selects, as Phoenix's UI asks for
        them (`Project.spans(filterCondition:)`): name, spanId, parentId, spanKind, attributes (a
        dict), input and output values."""
        query = """query ($id: ID!, $first: Int!, $condition: String) {
          node(id: $id) { ... on Project { spans(first: $first, filterCondition: $condition) {
            edges { node { name spanId parentId spanKind attributes input { value } output { value } } } } } } }"""
        data = self.graphql(query, id=self.project_id(project), first=first, condition=condition)
        spans = [e["node"] for e in data["node"]["spans"]["edges"]]
        for span in spans:
            span["attributes"] = json.loads(span["attributes"]) if span["attributes"] else {}
        return spans

    def wait_for_spans(self, project: str, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Poll until `project` has at least `count` spans (Phoenix inserts asynchronously)."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans(project)
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.25)


def _environment(port: int, grpc_port: int, working_dir: Path) -> dict[str, str]:
    """The process environment: ours, minus inherited PHOENIX_* settings, plus the test settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOENIX_")}
    env.update(PHOENIX_HOST="127.0.0.1", PHOENIX_PORT=str(port), PHOENIX_GRPC_PORT=str(grpc_port),
               PHOENIX_WORKING_DIR=str(working_dir), PHOENIX_TELEMETRY_ENABLED="false",
               PHOENIX_ALLOW_EXTERNAL_RESOURCES="false", PHOENIX_AGENTS_DISABLE_BASH="true")
    return env


def _wait_ready(server: PhoenixServer, timeout_s: float) -> None:
    """Poll `/readyz` (answers once the database is up) until 200; raise with the log otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"phoenix exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if _get(f"{server.base_url}/readyz", timeout=2.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"phoenix not ready after {timeout_s:.0f} s:\n{server.log_tail()}")


def _stop(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the server (it spawns no children), SIGKILL it after `grace_s`."""
    stop_process(process, grace_s)


@contextmanager
def phoenix_server(timeout_s: float = 120.0, keep_dir: bool = False) -> Iterator[PhoenixServer]:
    """Start Phoenix, wait until it is ready (up to `timeout_s`), yield it, always stop it."""
    if not phoenix_available():
        raise FileNotFoundError(f"{PHOENIX_BIN} is missing: run scripts/install_phoenix.sh")
    working_dir = Path(tempfile.mkdtemp(prefix="phoenix-test-"))
    port, grpc_port = free_port(), free_port("")
    started = time.monotonic()
    with open(working_dir / "phoenix.log", "wb") as log:
        process = subprocess.Popen([str(PHOENIX_BIN), "serve"], env=_environment(port, grpc_port, working_dir),
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=working_dir, start_new_session=True)
    server = PhoenixServer(port, grpc_port, working_dir, process)
    try:
        _wait_ready(server, timeout_s)
        server.startup_s = time.monotonic() - started
        yield server
    finally:
        _stop(process)
        if not keep_dir:
            shutil.rmtree(working_dir, ignore_errors=True)
