"""`swarm serve`: build the service from the command line and run it with uvicorn.

    swarm serve FILE.py[:program] --policy smc --particles 16 --port 8000
    swarm serve --model embedded --particles 8 --port 0        # port 0: a free port, printed
    swarm serve FILE.py --workers 2                            # two server processes, one port

The served program is found like `swarm run` finds it (FILE.py's `program`, or the function after
the colon; its POLICY and DEFAULTS apply, command-line options override them); `--model embedded`
serves `agents.serving.chat_program.chat` over the embedded SmolLM2-135M. The server listens on
127.0.0.1 unless `--host` says otherwise, and prints one line when it accepts connections:

    swarm serve: smollm2-135m-smc (SMC, 8 particles) on http://127.0.0.1:40123/v1

Workers: one server process runs every request on one event loop, so on a busy server its CPU
(HTTP, JSON, the engine's own work) is the limit before the backend is. `--workers K` runs K
processes that accept on the same listening socket (uvicorn's supervisor: the parent binds the
socket, spawns the workers, restarts one that dies, and stops them all on SIGINT/SIGTERM). Each
worker builds its own service from the same arguments (passed in the environment variable
`PLP_SWARM_SERVE_ARGS`): requests in one worker share its agents and backends; an HTTP backend is
shared by all workers through its server, but `--model embedded` loads the model once per worker
(K copies of its memory, and K batched decoders competing for the cores). Workers need the local
runtime: with `--runtime ray` the cluster is where the work scales.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
from types import SimpleNamespace
from typing import Any

from agents.secrets import Secret, install_logging_redaction
from agents.serving.service import ChatService, ServeConfig

EMBEDDED_DEFAULTS = {"policy": "smc", "particles": 8}
EMBEDDED_MAX_TOKENS = 50_000
LOOPBACK = ("127.0.0.1", "::1", "localhost")
WORKER_ARGS_ENV = "PLP_SWARM_SERVE_ARGS"


def build_service(args: argparse.Namespace) -> tuple[ChatService, Any]:
    """(the service, the OTel instrumentation handle or None) from `swarm serve`'s arguments."""
    from agents.serving.tracing import RequestTracing
    from observability.programs import CLIError, load_program, make_policy, parse_kwargs, ship_by_value

    if (args.model is None) == (args.target is None):
        both = args.model is not None
        raise CLIError(f"swarm serve needs a program (FILE.py[:program]) or --model embedded{', not both' if both else ''}")
    if args.model == "embedded":
        from agents.serving import chat_program

        module: Any = SimpleNamespace(DEFAULTS=EMBEDDED_DEFAULTS, POLICY=None, __file__="<embedded>")
        program, name, stream_text = chat_program.chat, chat_program.MODEL_NAME, "committed"
    else:
        module, program = load_program(args.target)
        name = f"{os.path.splitext(os.path.basename(module.__file__))[0]}:{program.__name__}"
        stream_text = "final"
    inst, listeners = None, []
    if args.otlp:
        from observability.exporters import instrument

        inst = instrument("otlp", endpoint=args.otlp, project=args.model_name or name, register=False)
        listeners.append(inst.listener)
    policy = make_policy(args, module, listeners)
    if policy.runtime == "ray" and args.model is None:
        ship_by_value(module)  # workers cannot import the file: its functions travel by value
    budget = policy.budget
    try:
        config = ServeConfig(model_name=args.model_name or name, answer=args.answer,
                             max_tokens=args.max_tokens or (budget and budget.max_tokens)
                             or (EMBEDDED_MAX_TOKENS if args.model else None),
                             max_llm_calls=args.max_llm_calls or (budget and budget.max_llm_calls),
                             timeout_s=args.timeout or (budget and budget.max_seconds) or 300.0,
                             stream_text=args.stream_text or stream_text)
    except ValueError as exc:
        raise CLIError(f"invalid server setting: {exc}") from None
    defaults = {**dict((getattr(module, "DEFAULTS", None) or {}).get("args") or {}), **parse_kwargs(args.arg)}
    tracing = RequestTracing(inst.provider, export=True) if inst else RequestTracing()
    return ChatService(program, policy, config, defaults=defaults, tracing=tracing), inst


def api_key(args: argparse.Namespace) -> Secret | None:
    """The key from the environment variable `--api-key-env` names (never from argv: `ps` shows it)."""
    from observability.programs import CLIError

    if not args.api_key_env:
        return None
    value = os.environ.get(args.api_key_env, "")
    if not value.strip():
        raise CLIError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    if not value.strip().isascii() or not value.strip().isprintable():
        # an HTTP header carries ASCII (clients refuse, or encode it otherwise): no request could match it
        raise CLIError(f"--api-key-env {args.api_key_env}: the key must be printable ASCII (an Authorization "
                       "header cannot carry it otherwise, so no request could ever match)")
    return Secret(value.strip())


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket. IPPROTO_TCP matters: asyncio turns Nagle off (TCP_NODELAY) only on
    sockets created with it, and with Nagle on every response waits ~40 ms for a delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_command(args: argparse.Namespace) -> int:
    """Run the server until interrupted; returns the exit status. HTTP is parsed by httptools (a C
    parser; uvicorn's "auto" falls back to the pure-Python h11 without it), which serves ~1.5x the
    requests of h11 per CPU second (bench/serve_overhead.py); the event loop is plain asyncio, the
    loop the framework is tested on."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from agents.serving.app import build_app
    from observability.programs import CLIError

    workers = getattr(args, "workers", 1)
    if workers < 1:
        raise CLIError(f"--workers must be at least 1, got {workers}")
    key = api_key(args)
    service, inst = build_service(args)  # in the parent too: a bad argument fails here, once
    if workers > 1:
        _close(service, inst)  # the parent only supervises; each worker builds its own
        if service.policy.runtime != "local":
            raise CLIError("--workers needs the local runtime (with --runtime ray, scale on the Ray cluster)")
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    options = dict(loop="asyncio", http="auto", log_level=args.log_level, access_log=args.access_log,
                   timeout_graceful_shutdown=5, server_header=False)
    if workers > 1:
        os.environ[WORKER_ARGS_ENV] = json.dumps(vars(args), default=str)
        config = uvicorn.Config(f"{__name__}:worker_app", factory=True, workers=workers, **options)
    else:
        config = uvicorn.Config(build_app(service, api_key=key), **options)
    _redact_logs()
    if host not in LOOPBACK and key is None:
        print(f"warning: serving on {host} without an API key (--api-key-env)", file=sys.stderr)
    policy = service.policy
    size = getattr(policy, "num_particles", None)
    print(f"swarm serve: {service.config.model_name} ({type(policy).__name__}"
          f"{f', {size} particles' if size else ''}{f', {workers} workers' if workers > 1 else ''}) "
          f"on http://{host}:{port}/v1", flush=True)
    try:
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        if workers == 1:
            _close(service, inst)
    return 0


def worker_app() -> Any:
    """The app of one `--workers` process (uvicorn calls this factory in each spawned worker): the
    service built from the parent's arguments, closed when the worker stops."""
    from agents.serving.app import build_app

    args = argparse.Namespace(**json.loads(os.environ[WORKER_ARGS_ENV]))
    _redact_logs()
    service, inst = build_service(args)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        try:
            yield
        finally:
            _close(service, inst)

    return build_app(service, api_key=api_key(args), lifespan=lifespan)


def _close(service: ChatService, inst: Any) -> None:
    """Flush and close what `build_service` opened (the request tracing, the OTel exporter)."""
    service.tracing.close()
    if inst is not None:
        inst.shutdown()


def _redact_logs() -> None:
    """Mask secrets (the API key, a backend's key) in every log line the server writes."""
    _root_handler()
    for logger in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        install_logging_redaction(logging.getLogger(logger))


def _root_handler() -> None:
    """Give the root logger a stderr handler (warnings and errors) when it has none. Without one,
    the records of every logger that has no handler of its own (`agents.serving`'s tracebacks, the
    engine's, the backends') reach `logging.lastResort`, which no filter can be added to: secrets
    in them would be printed unmasked."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(levelname)s:    %(name)s: %(message)s"))
        root.addHandler(handler)
