"""Headless Chromium driven through the DevTools protocol (CDP) on 127.0.0.1, for browser tests.

`chromium()` starts it (`--remote-debugging-port=0`, a throwaway profile) and yields its HTTP
endpoint; `open_page` opens a tab with console, log and network events on; `problems` lists the
console errors and warnings, uncaught exceptions and failed loads a page produced; `screenshot`
saves the whole page. The WebSocket client is just enough RFC 6455 for CDP, on the stdlib, so
console messages come with their level and failed resource loads are seen too (stderr logging shows
neither). `CHROMIUM` is None when /usr/bin/chromium is missing (`scripts/setup.sh --test` installs
the Debian package as root).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from bench.common import stop_process

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--window-size=1280,1024"]


class WebSocket:
    """Just enough RFC 6455 for the DevTools protocol: masked text frames out, frames in
    (fragmented messages joined, pings answered; a read that times out loses nothing)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        rest = url.split("://", 1)[1]
        hostport, path = rest.split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"WebSocket handshake refused: {status!r}")
        self.buffer = head.split(b"\r\n\r\n", 1)[1]
        self.parts: list[bytes] = []

    def _frame(self) -> tuple[int, bytes] | None:
        """(first header byte, payload) of the next whole frame in the buffer, consumed; None (and
        nothing consumed) while the frame is incomplete."""
        buf = self.buffer
        if len(buf) < 2:
            return None
        n, start = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, start = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, start = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < start + n:
            return None
        self.buffer = buf[start + n:]
        return buf[0], buf[start:start + n]

    def _next_frame(self) -> tuple[int, bytes]:
        """Read until a whole frame is buffered. A socket timeout leaves the buffer intact, so a
        reader with a short timeout can call again later without losing its place."""
        while (frame := self._frame()) is None:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buffer += chunk
        return frame

    def send(self, text: str, opcode: int = 0x1) -> None:
        payload, mask = text.encode(), os.urandom(4)
        n = len(payload)
        header = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else
                                           bytes([0x80 | 126]) + struct.pack(">H", n) if n < 1 << 16 else
                                           bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> str:
        while True:
            b0, payload = self._next_frame()
            opcode = b0 & 0x0F
            if opcode == 0x9:       # ping
                self.send(payload.decode(errors="replace"), opcode=0xA)
                continue
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            self.parts.append(payload)
            if b0 & 0x80:
                message, self.parts = b"".join(self.parts).decode(), []
                return message

    def close(self) -> None:
        self.sock.close()


class Page:
    """One Chromium tab over CDP: commands by id, events kept for inspection."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws, self.next_id, self.events = ws, 0, []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("method") == method for e in self.events):
                return next(e for e in self.events if e.get("method") == method)
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(f"no {method} within {timeout} s")

    def settle(self, seconds: float = 0.5) -> None:
        """Collect the events that arrive within the next `seconds` (late console messages, loads),
        however busy the page is (a single-page app that polls never goes quiet)."""
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.ws.sock.settimeout(left)
                self.events.append(json.loads(self.ws.recv()))
        except (socket.timeout, TimeoutError):
            pass
        finally:
            self.ws.sock.settimeout(30)


def problems(events: list[dict]) -> list[str]:
    """Console errors and warnings, uncaught exceptions, failed loads, log entries of level error."""
    found = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            found.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            details = p["exceptionDetails"]
            found.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            found.append(f"log {p['entry']['level']}: {p['entry']['text']} {p['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            found.append(f"load failed: {p.get('errorText')}")
    return found


def requested_urls(events: list[dict]) -> list[str]:
    return [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]


@contextlib.contextmanager
def chromium() -> Iterator[str]:
    """A headless Chromium with its DevTools endpoint; yields the HTTP base URL; killed afterwards."""
    profile = tempfile.mkdtemp(prefix="plp-chromium-")
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file, deadline = Path(profile) / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start its DevTools endpoint (exit code {proc.poll()})")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port_file.read_text().split()[0]}"
    finally:
        stop_process(proc)
        shutil.rmtree(profile, ignore_errors=True)


def open_page(base: str, url: str) -> tuple[Page, dict]:
    """Open `url` in a new tab with console, log and network events on; wait for its load event."""
    request = urllib.request.Request(f"{base}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        target = json.load(response)
    page = Page(WebSocket(target["webSocketDebuggerUrl"]))
    for domain in ("Page", "Runtime", "Log", "Network"):
        page.call(f"{domain}.enable")
    page.call("Page.navigate", url=url)
    page.wait_for("Page.loadEventFired")
    page.settle()
    return page, target


def screenshot(page: Page, path: Path) -> bytes:
    size = page.call("Page.getLayoutMetrics")["cssContentSize"]
    shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                     clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
    data = base64.b64decode(shot["data"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data
