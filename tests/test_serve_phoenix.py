"""A `swarm serve` request is one trace in a real Phoenix: request span → run span → step spans,
under the trace id the response reports (the OTLP export of `swarm serve --otlp`)."""

from __future__ import annotations

import time

import openai
import pytest

from tests.phoenix_server import phoenix_available, phoenix_server
from tests.serve_fixtures import REPO, run_server

pytestmark = [
    pytest.mark.phoenix,
    pytest.mark.server,
    pytest.mark.skipif(not phoenix_available(), reason="Phoenix is not installed: run scripts/install_phoenix.sh"),
]
MODEL = "served-in-phoenix"


def test_a_request_is_one_trace_in_phoenix():
    with phoenix_server(timeout_s=120) as px:
        with run_server(str(REPO / "tests" / "serve_fixtures.py"), "--particles", "4", "--model-name", MODEL,
                        "--otlp", px.otlp_endpoint) as (url, _, _):
            client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
            response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], seed=1)
            trace_id = response.swarm["trace_id"]
            deadline, spans = time.monotonic() + 60, []
            while time.monotonic() < deadline:  # Phoenix inserts asynchronously
                spans = [s for s in px.spans(MODEL) if s["context"]["trace_id"] == trace_id]
                if any(s["name"] == f"swarm.chat {MODEL}" for s in spans) and any(s["name"] == "plp.run SMC" for s in spans):
                    break
                time.sleep(0.25)
    (request,) = [s for s in spans if s["name"] == f"swarm.chat {MODEL}"]
    (run,) = [s for s in spans if s["name"] == "plp.run SMC"]
    assert request["parent_id"] is None and run["parent_id"] == request["context"]["span_id"]
    assert request["attributes"]["plp.run_id"] == run["attributes"]["plp.run_id"] == response.swarm["run_id"]
    assert request["attributes"]["gen_ai.request.model"] == MODEL and request["status_code"] == "OK"
    steps = [s for s in spans if s["name"].startswith("plp.step ")]
    assert len(steps) == response.swarm["steps"] and all(s["parent_id"] == run["context"]["span_id"] for s in steps)
