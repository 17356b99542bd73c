"""`swarm resume DIR --answer NAME=VALUE`: continue a run that waits for a person (or was killed).

    swarm run task.py --checkpoint runs/task                 # pauses: prints the pending questions, exit 3
    swarm resume runs/task                                   # lists them again
    swarm resume runs/task --answer review=yes --answer 'approve:mcp:fs/delete={"approved": false, "reason": "no"}'

The program is found again from the checkpoint (its file and name, as `swarm run` recorded them; or
`--program FILE.py:NAME`), with the arguments it ran with; the policy is rebuilt from the file's
POLICY when it is of the checkpoint's kind, else from the checkpoint's settings. A VALUE is read as
JSON when it parses (true, 3, {"approved": false}), else as the plain string. Exit status: 0 when
the run finished, 3 when it waits for a person (again), 1 on an error (a bad answer names its
question), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_WAITING = 3


def parse_answers(items: list[str]) -> dict[str, Any]:
    """`NAME=VALUE` pairs → {name: value}; VALUE as JSON when it parses, else the string itself."""
    from observability.programs import UsageError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--answer {item!r}: expected NAME=VALUE (NAME: a question's name or id)")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def print_pending(result_or_questions: Any, directory: str | Path | None) -> None:
    """The questions a run waits on, and how to answer them."""
    pending = getattr(result_or_questions, "pending", result_or_questions)
    print(f"\nwaiting for a person: {len(pending)} question(s); the run is written to {directory}")
    for q in pending:
        schema = f"; answer schema {json.dumps(q.answer_schema)}" if q.answer_schema is not None else ""
        print(f"  [{q.id}] {q.name}: {q.question}  ({len(q.particles)} particle(s){schema})")
    example = pending[0].name if pending else "NAME"
    print(f"resume with: swarm resume {directory} --answer {example}=VALUE   (NAME: a question's name, or its [id] "
          "for that question alone; repeatable)")


def _program(args: argparse.Namespace, header: Any) -> tuple[Any, Any]:
    from observability.programs import CLIError, load_program

    target = args.program
    if target is None:
        if header.program_file is None or not header.program.isidentifier():
            raise CLIError(f"the checkpoint does not say where {header.program!r} is defined; "
                           "give --program FILE.py:NAME")
        target = f"{header.program_file}:{header.program}"
    return load_program(target)


def _policy(header: Any, module: Any, runtime: str | None) -> Any:
    """The checkpoint's policy: the module's POLICY when of that kind, else a default one, with the
    checkpoint's result settings applied (resume re-checks them)."""
    import policies
    from observability.programs import CLIError

    cls = getattr(policies, header.policy, None)
    if cls is None:
        raise CLIError(f"the checkpoint was written by {header.policy!r}, which is not a policy of plp-swarm")
    base = getattr(module, "POLICY", None)
    policy = base.model_copy() if type(base) is cls else cls()
    current = policy.describe()
    for key, value in header.config.items():
        if key in cls.model_fields and current.get(key) != value:
            try:
                setattr(policy, key, value)
            except ValueError as exc:
                raise CLIError(f"cannot rebuild {header.policy}'s setting {key}={value!r} from the checkpoint ({exc}); "
                               f"define POLICY in {module.__file__}") from None
    if runtime is not None:
        policy.runtime = runtime
    return policy


def cmd_resume(args: argparse.Namespace) -> int:
    from observability.programs import CLIError
    from observability.progress import print_result
    from policies.pausing import pending_questions
    from swarm.checkpoint import Checkpointer

    directory = Path(args.directory)
    answers = parse_answers(args.answer)
    header = Checkpointer(directory).load().header
    if not answers:
        pending = pending_questions(directory)
        if pending:
            print_pending(pending, directory)
            return EXIT_WAITING
        if not args.resume_crashed:
            print(f"swarm resume: {directory}: the run does not wait for a person; give --resume-crashed to continue "
                  "it from its last checkpoint", file=sys.stderr)
            return 2
    module, program = _program(args, header)
    if header.arguments is None:
        raise CLIError("the checkpoint did not record the program's arguments (they do not pickle)")
    call_args, call_kwargs = header.arguments
    policy = _policy(header, module, args.runtime)
    if policy.runtime == "ray":
        from observability.programs import ship_by_value

        ship_by_value(module)  # workers cannot import the file: its functions travel by value
    result = policy.resume(directory, program, *call_args, answers=answers, **call_kwargs)
    if result.status == "waiting":
        print_pending(result, result.checkpoint)
        return EXIT_WAITING
    print_result(result)
    return 0


def add_resume_parser(sub: Any, fmt: Any) -> None:
    resume = sub.add_parser("resume", formatter_class=fmt, help="continue a run that waits for a person (or was killed)",
                            description=__doc__)
    resume.add_argument("directory", metavar="DIR", help="the run's checkpoint directory")
    resume.add_argument("--answer", action="append", default=[], metavar="NAME=VALUE",
                        help="an answer to a pending question, by its name or id (repeatable); VALUE is JSON or a string")
    resume.add_argument("--program", metavar="FILE.py:NAME", help="where the program is (default: as recorded)")
    resume.add_argument("--runtime", choices=["local", "ray"], help="where particles run (default: POLICY's, or local)")
    resume.add_argument("--resume-crashed", action="store_true",
                        help="continue a run that does not wait for a person (e.g. a killed one) from its last checkpoint")
    resume.set_defaults(func=cmd_resume)


def add_run_options(run: Any) -> None:
    """`swarm run`'s options for runs that may pause for a person."""
    run.add_argument("--checkpoint", metavar="DIR", help="checkpoint the run here (a run that waits for a person is "
                     "always written: here, or to a new temporary directory)")
    run.add_argument("--answer", action="append", default=[], metavar="NAME=VALUE",
                     help="an answer given up front to a question the program asks a person (repeatable)")


def apply_run_options(args: argparse.Namespace, policy: Any) -> None:
    """--checkpoint and --answer onto the policy (those that have the fields)."""
    from observability.programs import CLIError

    fields = type(policy).model_fields
    for option, field, value in (("--checkpoint", "checkpoint", args.checkpoint),
                                 ("--answer", "answers", parse_answers(args.answer) or None)):
        if value is None:
            continue
        if field not in fields:
            raise CLIError(f"{option}: {type(policy).__name__} has no {field!r} setting")
        setattr(policy, field, value)
