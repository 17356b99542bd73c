"""The HTML report in a real browser (issue 6): headless Chromium opens the `swarm report` page from
a file:// URL, a screenshot is kept in test-artifacts/, and the page shows no console error, no
uncaught exception, no failed load and no request outside file:/data: (the page is self-contained).

Chromium is driven through the DevTools protocol on 127.0.0.1 (`--remote-debugging-port=0`) with a
small stdlib WebSocket client, so console messages come with their level and failed resource loads
are seen too (stderr logging shows neither). A deliberately broken page is the control: the same
checks must find its errors. Skipped, saying why, when /usr/bin/chromium is missing
(`scripts/setup.sh --test` installs the Debian package as root).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.devtools import ARTIFACTS, CHROMIUM, chromium, open_page, problems, requested_urls, screenshot

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`; "
                                                          "scripts/setup.sh --test installs it as root)")


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium with its DevTools endpoint (tests.devtools.chromium)."""
    with chromium() as base:
        yield base


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A real report: an SMC run with deaths and resampling, its trace file, `swarm report`."""
    import math

    import policies
    from observability.cli import main as swarm_cli
    from observability.trace_file import TraceFileWriter
    from swarm import Bernoulli, Categorical, factor, guarantee, sample

    def model():
        x = sample("x", Categorical(["a", "b", "c", "d"], probs=[0.4, 0.3, 0.2, 0.1]))
        for t in range(4):
            y = sample(f"y{t}", Bernoulli(0.6))
            factor(f"f{t}", 0.5 if y else -0.5)
        guarantee("not_d", x != "d")
        factor("prefers_b", math.log(2.0) if x == "b" else 0.0)
        return x

    out = tmp_path_factory.mktemp("report")
    with TraceFileWriter(out / "run.jsonl") as writer:
        policies.SMC(num_particles=200, seed=0, listeners=[writer]).run(model)
    assert swarm_cli(["report", str(out / "run.jsonl"), "--html", str(out / "report.html")]) == 0
    return out / "report.html"


def test_report_renders_in_chromium_without_console_errors(browser, report):
    page, _ = open_page(browser, report.as_uri())
    try:
        images = page.call("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"))["result"]["value"]
        title = page.call("Runtime.evaluate", expression="document.title", returnByValue=True)["result"]["value"]
        data = screenshot(page, ARTIFACTS / "report.png")
    finally:
        page.ws.close()
    assert problems(page.events) == []
    assert all(url.startswith(("file:", "data:")) for url in requested_urls(page.events)), requested_urls(page.events)
    assert title and len(images) >= 5, images           # ESS, log Z, weights, genealogy, marginal
    assert all(complete and w > 100 and h > 100 for _alt, complete, w, h in images), images
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height > 1000, (width, height)   # the whole page, not just the viewport


def test_the_checks_catch_a_broken_page(browser, tmp_path):
    """The control: a page with a console error, an uncaught exception and a missing image."""
    broken = tmp_path / "broken.html"
    broken.write_text("<html><head><title>broken</title></head><body><img src='missing.png' alt='x'>"
                      "<script>console.error('deliberate'); undefinedFunction();</script></body></html>")
    page, _ = open_page(browser, broken.as_uri())
    page.ws.close()
    found = problems(page.events)
    assert any("console.error: deliberate" in f for f in found), found
    assert any("undefinedFunction" in f for f in found), found
    assert any("load failed" in f or "missing.png" in f for f in found), found
