"""A fake OpenAI-compatible endpoint with a fixed latency: a *test double* for benchmarks.

It is not a model. Every `POST /v1/completions` or `POST /v1/chat/completions` is answered after
`latency` seconds with the same short reply ("ok" tokens, log-probability −0.1 each, with
logprobs in the shape the openai client parses); `GET /v1/models` lists "fake-model";
`GET /stats` returns {"requests": n, "max_in_flight": m}. It is one asyncio event loop with
HTTP/1.1 keep-alive, so thousands of requests can wait at once without thousands of threads
(the stdlib `tests/fault_server.py` uses a thread per connection, which does not scale to 2,048
concurrent requests).

    python bench/fake_endpoint.py --port 0 --latency 0.05    # prints "READY <port>" when listening

`start_fake_endpoint(latency)` runs it in a subprocess (its CPU time is then not the client's
event loop's) and yields the base URL; the process is always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from typing import Iterator

REPLY_TOKENS = ["ok", " ok", " ok", " ok"]
TOKEN_LOGPROB = -0.1


def _completion_body(path: str, request: dict) -> dict:
    n = max(1, min(int(request.get("max_tokens") or len(REPLY_TOKENS)), len(REPLY_TOKENS)))
    tokens = REPLY_TOKENS[:n]
    text = "".join(tokens)
    usage = {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n}
    base = {"id": "fake", "created": int(time.time()), "model": "fake-model", "usage": usage}
    if path.endswith("/chat/completions"):
        content = [{"token": t, "logprob": TOKEN_LOGPROB, "bytes": list(t.encode()), "top_logprobs": []}
                   for t in tokens]
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "logprobs": {"content": content}, "finish_reason": "length"}
        return {**base, "object": "chat.completion", "choices": [choice]}
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t)
    logprobs = {"tokens": tokens, "token_logprobs": [TOKEN_LOGPROB] * n, "text_offset": offsets,
                "top_logprobs": [{t: TOKEN_LOGPROB} for t in tokens]}
    choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}
    return {**base, "object": "text_completion", "choices": [choice]}


class FakeEndpoint:
    """The server state: latency, request count and the peak number of requests in flight."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                status, payload = await self._respond(method, path, body)
                data = json.dumps(payload).encode()
                writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _respond(self, method: str, path: str, body: bytes) -> tuple[str, dict]:
        path = path.split("?", 1)[0].rstrip("/")
        if method == "GET" and path == "/v1/models":
            return "200 OK", {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
        if method == "GET" and path == "/stats":
            return "200 OK", {"requests": self.requests, "max_in_flight": self.max_in_flight}
        if method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.latency)
            finally:
                self.in_flight -= 1
            return "200 OK", _completion_body(path, json.loads(body or b"{}"))
        return "404 Not Found", {"error": {"message": f"no route {method} {path}", "code": 404}}


async def serve(port: int, latency: float) -> None:
    endpoint = FakeEndpoint(latency)
    server = await asyncio.start_server(endpoint.handle, "127.0.0.1", port, backlog=4096)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def _raise_fd_limit() -> None:
    with contextlib.suppress(Exception):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


@contextlib.contextmanager
def start_fake_endpoint(latency: float, timeout_s: float = 20.0) -> Iterator[str]:
    """Run the fake endpoint in a subprocess on a free port; yields base_url (ending in /v1)."""
    _raise_fd_limit()
    proc = subprocess.Popen([sys.executable, __file__, "--port", "0", "--latency", str(latency)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY"):
            raise RuntimeError(f"fake endpoint did not start (got {line!r})")
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        from bench.common import stop_process  # here: this file also runs as a script (the server)

        stop_process(proc, timeout_s)


def fetch_stats(base_url: str) -> dict:
    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/stats", timeout=5) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    _raise_fd_limit()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.latency))


if __name__ == "__main__":
    main()
