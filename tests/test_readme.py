"""Every Python code block in README.md is executed, so the README cannot drift from the code.

A block runs in a fresh namespace, compiled with README.md's own line numbers (a traceback points
at the README line). A block that needs the embedded model, a server or Ray is preceded by an HTML
comment naming the pytest markers, e.g. `<!-- test: llm -->`, and runs under those markers; no
block is ever skipped by the README itself, so CI (which runs every marker) runs them all.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
KNOWN_MARKS = ("llm", "server", "ray", "phoenix", "slow")
_MARK_COMMENT = re.compile(r"^<!--\s*test:\s*(.*?)\s*-->$")
_NOT_RUN_COMMENT = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    line: int
    """README line number of the block's first code line."""
    code: str
    marks: tuple[str, ...]
    not_run: str | None = None
    """Why the block is not run (a `<!-- not run: why -->` comment above it; docs pages only)."""


def python_blocks(text: str, source: str = "README.md") -> list[Block]:
    """The ```python blocks of a Markdown text, with the markers of a `<!-- test: ... -->` comment
    on the nearest non-blank line above the fence (or the reason of a `<!-- not run: ... -->` one).
    Raises ValueError naming `source` and the line of an unknown marker, an empty reason or an
    unclosed fence."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```"):
            i += 1
            continue
        language, start = fence[3:].strip().lower(), i + 1
        end = next((j for j in range(start, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{source}:{i + 1}: code fence is never closed")
        if language == "python":
            blocks.append(Block(start + 1, "\n".join(lines[start:end]) + "\n", *_marks_above(lines, i, source)))
        i = end + 1
    return blocks


def _marks_above(lines: list[str], fence: int, source: str) -> tuple[tuple[str, ...], str | None]:
    above = next((j for j in range(fence - 1, -1, -1) if lines[j].strip()), None)
    line = lines[above].strip() if above is not None else ""
    if (skip := _NOT_RUN_COMMENT.match(line)) is not None:
        if not skip.group(1):
            raise ValueError(f"{source}:{above + 1}: a `not run` comment must say why")
        return (), skip.group(1)
    match = _MARK_COMMENT.match(line)
    if match is None:
        return (), None
    marks = tuple(m for m in re.split(r"[\s,]+", match.group(1)) if m)
    unknown = [m for m in marks if m not in KNOWN_MARKS]
    if unknown:
        raise ValueError(f"{source}:{above + 1}: unknown test marker(s) {unknown}; known: {KNOWN_MARKS}")
    return marks, None


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def run_block(block: Block, path: Path = README, namespace: dict | None = None) -> None:
    """Execute a block (in `namespace`: a page's blocks may build on each other); fail naming its
    file and line and the error (with the file's line numbers)."""
    code = compile("\n" * (block.line - 1) + block.code, str(path), "exec")
    try:
        exec(code, namespace if namespace is not None else {"__name__": "__readme__"})
    except Exception as exc:  # noqa: BLE001 - any error in a block is the page's bug
        trace = "".join(traceback.format_exception(exc)[-6:])
        pytest.fail(f"the {path.name} code block starting at line {block.line} failed: "
                    f"{type(exc).__name__}: {exc}\n{trace}", pytrace=False)


@pytest.mark.parametrize("block", [pytest.param(b, id=f"README.md:{b.line}", marks=[getattr(pytest.mark, m)
                                                                                      for m in b.marks])
                                   for b in BLOCKS])
def test_readme_python_block_runs(block):
    assert block.not_run is None, f"README.md:{block.line}: every README block runs (not run: {block.not_run})"
    run_block(block)


def test_the_readme_has_python_blocks_and_the_parser_finds_them():
    assert len(BLOCKS) >= 3, [b.line for b in BLOCKS]
    text = "intro\n<!-- test: llm -->\n\n```python\nx = 1\n```\n```bash\nls\n```\n```python\nraise ValueError('boom')\n```\n"
    first, second = python_blocks(text)
    assert (first.line, first.code, first.marks) == (5, "x = 1\n", ("llm",))
    assert (second.line, second.marks) == (11, ())
    with pytest.raises(ValueError, match="README.md:2: unknown test marker"):
        python_blocks("text\n<!-- test: gpu -->\n```python\npass\n```\n")
    with pytest.raises(ValueError, match="README.md:1: code fence is never closed"):
        python_blocks("```python\npass\n")
    (fragment,) = python_blocks("<!-- not run: needs your server -->\n```python\nclient.call()\n```\n", "docs/x.md")
    assert fragment.not_run == "needs your server" and fragment.marks == ()
    with pytest.raises(ValueError, match="docs/x.md:1: a `not run` comment must say why"):
        python_blocks("<!-- not run: -->\n```python\npass\n```\n", "docs/x.md")


def test_a_failing_block_is_reported_with_its_readme_line():
    with pytest.raises(pytest.fail.Exception) as info:
        run_block(Block(line=7, code="x = 1\nraise ValueError('boom')\n", marks=()))
    message = str(info.value)
    assert "line 7 failed: ValueError: boom" in message and f'"{README}", line 8' in message


def test_observability_instrument_is_the_documented_export_call():
    """README and swarm/listeners.py document `observability.instrument(...)`: it exports every run
    of the process until `shutdown()`, which detaches its listener."""
    import observability
    import policies
    from observability import exporters
    from swarm import Categorical, sample
    from swarm.listeners import global_listeners

    assert observability.instrument is exporters.instrument
    inst = observability.instrument("memory")
    try:
        assert inst.listener in global_listeners()
        policies.SMC(num_particles=8, seed=0).run(lambda: sample("x", Categorical(["a", "b"])))
    finally:
        inst.shutdown()
    names = [s.name for s in inst.memory_exporter.get_finished_spans()]
    assert names.count("plp.run SMC") == 1 and "plp.step 1" in names
    assert inst.listener not in global_listeners()
    with pytest.raises(AttributeError, match="no attribute 'instrumnet'"):
        observability.instrumnet  # noqa: B018 - a typo is an AttributeError, not None


def test_the_readme_s_shell_blocks_name_files_that_exist():
    """The README's shell blocks are commands to copy (CI runs the first two; the examples' tests
    run the rest): every script or program they name is in the repository, no placeholder."""
    text = README.read_text(encoding="utf-8")
    shell = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    named = [word.split(":")[0] for block in shell for line in block.splitlines()
             for word in line.split("#")[0].split() if re.fullmatch(r"[\w./-]+\.(py|sh)(:\w+)?", word)]
    assert len(named) >= 10, named
    root = README.parent
    assert [w for w in named if not (root / w).is_file()] == []
