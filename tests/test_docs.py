"""Every Python block of the docs/ pages runs, so the guides cannot drift from the code.

A page's blocks run in order in one namespace (a guide builds on its earlier blocks), in a fresh
working directory where `tests/` and `examples/` are the repository's (the paths the guides use),
with `swarm` on PATH. A block that needs the embedded model, a server or Ray says so with a
`<!-- test: llm -->` comment (as in README.md) and the page's test carries those markers. A block
that cannot run as written (it names the reader's own server, or shows call shapes) carries
`<!-- not run: why -->` and is compiled only: its syntax is still checked.
"""

from __future__ import annotations

import ast
import os
import sys
import types
from pathlib import Path

import pytest

from tests.test_readme import python_blocks, run_block

ROOT = Path(__file__).resolve().parents[1]
PAGES = {path: python_blocks(path.read_text(encoding="utf-8"), f"docs/{path.name}")
         for path in sorted((ROOT / "docs").glob("*.md"))}
PAGES = {path: blocks for path, blocks in PAGES.items() if blocks}


def _page_param(path: Path, blocks: list) -> object:
    marks = sorted({m for b in blocks if b.not_run is None for m in b.marks})
    return pytest.param(path, blocks, id=f"docs/{path.name}", marks=[getattr(pytest.mark, m) for m in marks])


@pytest.mark.parametrize("path, blocks", [_page_param(p, b) for p, b in PAGES.items()])
def test_docs_page_python_blocks_run(path, blocks, tmp_path, monkeypatch):
    for folder in ("tests", "examples"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    page = types.ModuleType(f"__docs_{path.stem}__")  # the page as a script: a module with its file, so a
    page.__file__ = str(path)                          # paused run finds its program again on resume
    monkeypatch.setitem(sys.modules, page.__name__, page)
    namespace = page.__dict__
    try:
        for block in blocks:
            if block.not_run is not None:
                compile("\n" * (block.line - 1) + block.code, str(path), "exec",
                        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)  # `async for` as in a notebook
                continue
            run_block(block, path, namespace)
    finally:
        if "agents.mcp" in sys.modules:  # stop the MCP servers a page started (they live for the process)
            sys.modules["agents.mcp"].close_all()



def test_most_docs_blocks_run():
    """`not run` is for blocks that cannot run as written; the guides' own code runs."""
    blocks = [b for page in PAGES.values() for b in page]
    not_run = [b for b in blocks if b.not_run is not None]
    assert len(blocks) >= 15 and len(not_run) <= len(blocks) // 3, [(b.line, b.not_run) for b in not_run]
