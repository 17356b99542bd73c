"""The `swarm` command: run a program under a policy, inspect its trace, write a report.

    swarm run examples/tempering.py --policy smc --particles 500 --seed 0 --trace runs/out.jsonl --html runs/report.html
    swarm inspect runs/out.jsonl --max-particles 10
    swarm report runs/out.jsonl --html runs/report.html --png-dir runs/img
    swarm mcp tests/mcp_servers/dice_program.py:program --policy smc --particles 200   # an MCP tool (stdio)
    swarm serve --model embedded --particles 8 --port 8000            # or FILE.py[:program]

    swarm resume runs/task --answer review=yes                        # a run that waits for a person

Exit status: 0 on success, 1 when the run, the trace file or the report fails (the message on
stderr names the file or field at fault), 2 for a usage error, 3 when the run waits for a person
(its pending questions are printed; `swarm resume` continues it), 130 when interrupted (Ctrl-C:
`swarm run` still closes the trace file and writes the report of the run so far). An error is one
line on stderr; `--debug` (before or after the command) prints its traceback too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from observability.cli_resume import (EXIT_WAITING, add_resume_parser, add_run_options, apply_run_options,
                                      print_pending)
from observability.progress import ProgressDisplay, print_result  # noqa: F401 - re-exported: the CLI's API
from swarm.errors import ProgramArgumentsError, SwarmError
from swarm.execution import check_arguments

from observability.programs import (  # noqa: E402,F401 - re-exported: the commands' shared program loading
    BUILTIN_DEFAULTS, POLICIES, POPULATION_FIELDS, CLIError, load_program, make_policy, module_defaults, parse_kwargs,
    ship_by_value,
)


EXIT_INTERRUPTED = 130
RUNTIME_HELP = "where particles run (default: POLICY's, DEFAULTS' or local)"
"""The exit status after Ctrl-C (128 + SIGINT, as a shell reports it)."""


def print_paths(trace_path: Path | None, report: dict | None) -> None:
    if trace_path is not None:
        print(f"trace:  {trace_path}")
    for key, path in (report or {}).items():
        print(f"report: {path}" if key == "html" else f"  png:  {path}")


def check_otlp_url(url: str) -> None:
    """A usage error now for an --otlp value that is no http(s) URL (every export would fail, after
    the run, with the spans lost)."""
    from observability.exporters import check_endpoint
    from observability.programs import UsageError

    try:
        check_endpoint(url)
    except ValueError:
        raise UsageError(f"--otlp {url!r}: expected an http(s) URL such as http://127.0.0.1:6006/v1/traces") from None


def check_not_the_trace(html: str | os.PathLike[str], trace: str | os.PathLike[str] | None) -> None:
    """A usage error when the report would be written over the trace file it is made from."""
    from observability.programs import UsageError

    if trace is not None and Path(html).resolve() == Path(trace).resolve():
        raise UsageError(f"--html {html}: that is the trace file; the report would overwrite it")


def check_outputs(writer: Any, args: argparse.Namespace) -> None:
    """Fail before the run, not after it, when the trace file or the report cannot be written
    (a directory that is a file, no permission): raises `TraceFileError` or `ReportError`."""
    if args.html:
        check_not_the_trace(args.html, args.trace)
    if writer is not None:
        writer.open()
    if args.html:
        from observability.html_report import check_writable

        check_writable(args.html, args.png_dir)


def quiet_abandoned_tasks() -> None:
    """After Ctrl-C: no "Task exception was never retrieved" traceback at exit. A second Ctrl-C
    raises KeyboardInterrupt inside the run's task, which the policy's stream then drops without
    retrieving it (policies/streaming.py), so asyncio logs it when the task is collected."""
    import logging

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def cmd_run(args: argparse.Namespace) -> int:
    from observability.trace_file import TraceFileError, TraceFileWriter

    module, program = load_program(args.target)
    defaults = module_defaults(module)
    kwargs = {**dict(defaults.get("args") or {}), **parse_kwargs(args.arg)}
    try:
        check_arguments(program, (), kwargs)
    except ProgramArgumentsError as exc:
        print(f"swarm run: error: {exc} (--arg NAME=VALUE sets an argument; the file's DEFAULTS give the rest)",
              file=sys.stderr)
        return 2
    if args.png_dir and not args.html:
        print("swarm run: error: --png-dir writes the plots of the --html report: give --html too", file=sys.stderr)
        return 2
    tmp = None
    trace_path = Path(args.trace) if args.trace else None
    if trace_path is None and args.html:
        tmp = tempfile.TemporaryDirectory(prefix="swarm-run-")
        trace_path = Path(tmp.name) / "trace.jsonl"
    writer = TraceFileWriter(trace_path) if trace_path else None
    progress = ProgressDisplay(sys.stdout, tty=sys.stdout.isatty())
    listeners: list[Any] = [writer] if writer else []
    inst = None
    if args.otlp:
        from observability.exporters import instrument

        check_otlp_url(args.otlp)
        inst = instrument("otlp", endpoint=args.otlp, project=Path(args.target.split(":")[0]).stem, register=False)
        listeners.append(inst.listener)
    policy = make_policy(args, module, listeners)
    apply_run_options(args, policy)
    if policy.runtime == "ray":
        ship_by_value(module)  # workers cannot import the file: its functions travel by value
    check_outputs(writer, args)  # last before the run: a usage error above leaves an old trace file alone
    status, result = 0, None
    try:
        progress.total_steps = getattr(policy, "max_steps", None)
        result = progress.follow(policy.stream(program, **kwargs))  # the live display reads the run's events
    except SwarmError as exc:
        if args.debug:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        print(f"swarm run: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:  # Ctrl-C: the run so far is in the trace file; report it, say where it is
        kept = " and ".join(name for name, given in (("the trace file", args.trace), ("the report", args.html))
                            if given)
        kept = f" (the run so far is in {kept} below)" if kept else ""
        print(f"swarm run: interrupted{kept}", file=sys.stderr)
        status = EXIT_INTERRUPTED
        quiet_abandoned_tasks()
    finally:
        progress.close()
        if inst is not None:
            inst.shutdown()
    report = None
    try:
        if writer is not None:
            writer.close()
        if args.html:
            from observability.html_report import write_report
            from observability.trace_file import read_trace_file

            report = write_report(read_trace_file(trace_path), args.html, args.png_dir)
    except (TraceFileError, SwarmError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 1
    if result is not None and result.status == "waiting":
        print_pending(result, result.checkpoint)
        status = EXIT_WAITING
    elif result is not None:
        print_result(result)
    print_paths(Path(args.trace) if args.trace else None, report)
    if tmp is not None:
        tmp.cleanup()
    return status


# -- swarm inspect / report ------------------------------------------------------------------------
def pick_run(path: str, run_id: str | None) -> Any:
    """The run `run_id` of the trace file, else its last run; a note on stderr when the file holds
    several and none was named (the others were passed over without a word)."""
    from observability.trace_file import read_trace_file, read_trace_runs

    if run_id is not None:
        return read_trace_file(path, run_id=run_id)
    runs = read_trace_runs(path)
    if len(runs) > 1:
        ids = [t.run.run_id if t.run else "?" for t in runs]
        print(f"note: {path} holds {len(runs)} runs ({', '.join(ids)}); showing the last, --run RUN_ID picks another",
              file=sys.stderr)
    return runs[-1]


def cmd_inspect(args: argparse.Namespace) -> int:
    from observability.genealogy_view import render

    trace = pick_run(args.trace_file, args.run)
    try:
        render(trace, sys.stdout, tty=sys.stdout.isatty(), max_particles=args.max_particles, particle=args.particle)
    except KeyError as exc:
        raise CLIError(exc.args[0]) from None
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from observability.html_report import write_report

    html = args.html or str(Path(args.trace_file).with_suffix(".html"))
    check_not_the_trace(html, args.trace_file)
    written = write_report(pick_run(args.trace_file, args.run), html, args.png_dir)
    for key, path in written.items():
        print(f"{'report' if key == 'html' else 'png'}: {path}")
    return 0


# -- swarm mcp -------------------------------------------------------------------------------------
def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve the program as an MCP tool over stdio (stdout carries the protocol: anything the
    program's module prints while it is imported goes to stderr)."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        module, program = load_program(args.target)
        policy = make_policy(args, module, [])
        if policy.runtime == "ray":
            ship_by_value(module)  # workers cannot import the file: its functions travel by value
        from agents.mcp.serve import program_server

        server = program_server(program, policy, name=args.name)
    server.run("stdio")
    return 0


def add_mcp_parser(sub: Any, fmt: Any) -> None:
    mcp = sub.add_parser("mcp", formatter_class=fmt, help="serve a program as an MCP tool (stdio)",
                         description="Import FILE.py, find the program (as `swarm run` does) and serve it over "
                         "stdio as an MCP server with one tool: its arguments are the program's parameters; a "
                         "call runs the program under the policy and answers with the most probable value, "
                         "the answer marginal, log Z and ESS. Policy options as for `swarm run`.")
    mcp.add_argument("target", metavar="FILE.py[:program]", help="the Python file and, optionally, the function")
    mcp.add_argument("--policy", choices=list(POLICIES), help="inference policy (default: POLICY, DEFAULTS or smc)")
    mcp.add_argument("--particles", "-n", type=int, metavar="N",
                     help="particles / samples (default: POLICY's, DEFAULTS' or 100)")
    mcp.add_argument("--seed", type=int, metavar="S", help="random seed (same seed and arguments, same answer)")
    mcp.add_argument("--runtime", choices=["local", "ray"], help=RUNTIME_HELP)
    mcp.add_argument("--name", metavar="TOOL", help="the tool's name (default: the program's)")
    mcp.set_defaults(func=cmd_mcp)


# -- swarm serve -----------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from agents.serving.server import serve_command

    return serve_command(args)


def add_serve_parser(sub: Any, fmt: Any) -> None:
    serve = sub.add_parser("serve", formatter_class=fmt, help="serve a program under a policy as an OpenAI-compatible "
                           "endpoint", description="Serve /v1/chat/completions, /v1/responses and /v1/models: "
                           "each request runs the program under the policy with the request's messages (its "
                           "`messages` or `prompt` parameter) and answers with the posterior's answer; `stream=true` streams the run as "
                           "server-sent events. The program is found as `swarm run` finds it (POLICY and DEFAULTS "
                           "apply); --model embedded serves the built-in chat program over the embedded SmolLM2 "
                           "model. See docs/serving.md.")
    serve.add_argument("target", nargs="?", metavar="FILE.py[:program]", help="the Python file and, optionally, "
                       "the function (or --model embedded)")
    serve.add_argument("--model", choices=["embedded"], help="serve the built-in chat program over the embedded model")
    serve.add_argument("--model-name", metavar="NAME", help="the model id clients send (default FILE:program, or "
                       "smollm2-135m-smc)")
    serve.add_argument("--policy", choices=list(POLICIES), help="inference policy (default: POLICY, DEFAULTS or smc)")
    serve.add_argument("--particles", "-n", type=int, metavar="N", help="particles / samples per request")
    serve.add_argument("--runtime", choices=["local", "ray"], help=RUNTIME_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--workers", type=int, default=1, metavar="K", help="server processes sharing the port "
                       "(default 1; each builds its own service: see docs/serving.md)")
    serve.add_argument("--answer", choices=["mode", "draw"], default="mode", help="the posterior's most probable "
                       "answer, or a draw from it (default mode; a request may choose)")
    serve.add_argument("--max-tokens", type=int, metavar="N", help="most tokens one request's run may spend")
    serve.add_argument("--max-llm-calls", type=int, metavar="N", help="most LLM calls one request's run may make")
    serve.add_argument("--timeout", type=float, metavar="S", help="seconds one request may run (default 300)")
    serve.add_argument("--stream-text", choices=["committed", "final"], help="stream content as the particles "
                       "commit to it, or only at the end (default: committed for --model embedded, else final)")
    serve.add_argument("--api-key-env", metavar="VAR", help="require the API key held in environment variable VAR")
    serve.add_argument("--otlp", metavar="URL", help="export each request's trace over OTLP/HTTP to URL")
    serve.add_argument("--arg", action="append", default=[], metavar="K=V",
                       help="default keyword argument for the program (repeatable)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--no-access-log", dest="access_log", action="store_false", help="do not log each request")
    serve.set_defaults(func=cmd_serve, seed=None)


# -- the parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="swarm", formatter_class=fmt, description=__doc__,
                                     epilog="Run `swarm COMMAND --help` for a command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", formatter_class=fmt, help="run a program under an inference policy",
                         description="Import FILE.py, find the program (the function named after the colon, "
                         "else `program`, else `main`) and run it under a policy, showing progress (a bar on "
                         "a terminal, one line per step otherwise). Then print the answer marginal (top 10), "
                         "log Z and ESS.\n\nThe module may define POLICY (a policies.Policy instance) and/or "
                         "DEFAULTS (a dict with keys policy, particles, seed, runtime, args) as defaults; "
                         "command-line options override them.")
    run.add_argument("target", metavar="FILE.py[:program]", help="the Python file and, optionally, the function")
    run.add_argument("--policy", choices=list(POLICIES), help="inference policy (default: POLICY, DEFAULTS or smc)")
    run.add_argument("--particles", "-n", type=int, metavar="N",
                     help="population size: the policy's num_particles (Beam's width); an error for a "
                     "policy without one (default: POLICY's, DEFAULTS' or 100)")
    run.add_argument("--seed", type=int, metavar="S", help="random seed (same seed, same result)")
    run.add_argument("--runtime", choices=["local", "ray"], help=RUNTIME_HELP)
    run.add_argument("--trace", metavar="OUT.jsonl", help="write the run's global trace (JSON Lines) here")
    run.add_argument("--otlp", metavar="URL", help="also export OpenTelemetry spans over OTLP/HTTP to URL "
                     "(e.g. http://127.0.0.1:6006/v1/traces for Phoenix)")
    run.add_argument("--html", metavar="REPORT.html", help="write a self-contained HTML report here")
    run.add_argument("--png-dir", metavar="DIR", help="with --html: also write the report's plots as PNGs here")
    run.add_argument("--arg", action="append", default=[], metavar="K=V",
                     help="keyword argument for the program (repeatable); V is a Python literal or a string")
    add_run_options(run)
    run.set_defaults(func=cmd_run)

    inspect = sub.add_parser("inspect", formatter_class=fmt, help="print a run's genealogy tree from its trace file",
                             description="Print a summary (policy, N, steps, log Z, ESS, deaths by cause) and the "
                             "population as a tree: each particle under the particle it was resampled from, "
                             "with its steps, log weight, normalised weight, and the factor, guarantee or "
                             "error that killed it. Large populations are pruned to the lineages of the "
                             "heaviest final particles and some dead ones.")
    inspect.add_argument("trace_file", metavar="TRACE.jsonl")
    inspect.add_argument("--particle", type=int, metavar="ID", help="show this particle's lineage, history "
                         "(events per step) and descendants")
    inspect.add_argument("--max-particles", type=int, default=20, metavar="K",
                         help="show the lineages of at most K final and K dead particles (default 20)")
    inspect.add_argument("--run", metavar="RUN_ID", help="which run, when the file holds several (default: last)")
    inspect.set_defaults(func=cmd_inspect)

    report = sub.add_parser("report", formatter_class=fmt, help="write a self-contained HTML report of a run",
                            description="Write an HTML page (plots embedded as base64 PNG, no external resources, "
                            "no JavaScript): run metadata, ESS and log Z per step, final weight histogram, "
                            "genealogy plot, answer marginal, deaths by cause, per-step table.")
    report.add_argument("trace_file", metavar="TRACE.jsonl")
    report.add_argument("--html", metavar="REPORT.html", help="output file (default: TRACE.html)")
    report.add_argument("--png-dir", metavar="DIR", help="also write each plot as a PNG file here")
    report.add_argument("--run", metavar="RUN_ID", help="which run, when the file holds several (default: last)")
    report.set_defaults(func=cmd_report)
    add_mcp_parser(sub, fmt)
    add_serve_parser(sub, fmt)
    add_resume_parser(sub, fmt)
    add_debug_option(parser, sub)
    return parser


def add_debug_option(parser: argparse.ArgumentParser, sub: Any) -> None:
    """`--debug`, before or after the command: an error prints its traceback, not only its line."""
    text = "on an error, print the traceback too (by default: one line naming the culprit)"
    parser.add_argument("--debug", action="store_true", help=text)
    for command in sub.choices.values():  # SUPPRESS: the command's default must not undo `swarm --debug CMD`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=text)


def report_error(command: str, exc: BaseException, debug: bool, *, expected: bool = True) -> None:
    """One line on stderr naming what failed; the traceback (with its causes) too under --debug."""
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    from observability.programs import one_line

    text = str(exc) if expected else f"{type(exc).__name__}: {exc}"
    hint = ""
    if not debug and not expected:
        hint = " (an unexpected error; --debug shows the traceback)"
    elif not debug and exc.__cause__ is not None:  # e.g. the program file raised while it was imported
        hint = " (--debug shows the traceback)"
    print(f"swarm {command}: error: {one_line(text)}{hint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `swarm` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if getattr(args, "max_particles", 1) < 1:
        print("swarm inspect: --max-particles must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except SwarmError as exc:
        report_error(args.command, exc, args.debug)
        return getattr(exc, "exit_status", 1)  # 2 for a malformed command line (UsageError)
    except KeyboardInterrupt:
        print(f"swarm {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `swarm inspect out.jsonl | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as exc:  # noqa: BLE001 - a bug, or an error no command anticipated: still one line
        report_error(args.command, exc, args.debug, expected=False)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
