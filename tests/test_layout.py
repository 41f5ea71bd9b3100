"""The code's shape rules a newcomer relies on (ruff's mccabe limit of 12 is in pyproject.toml)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "envbuild"
MAX_LINES = 80


def _functions() -> list[tuple[str, str, int]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((str(path.relative_to(PKG)), node.name, node.end_lineno - node.lineno + 1))
    return out


def test_no_function_is_longer_than_80_lines() -> None:
    funcs = _functions()
    assert len(funcs) > 500  # the walk really read the package
    assert [f for f in funcs if f[2] > MAX_LINES] == []


def test_only_matrix_reads_the_data_files() -> None:
    readers = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
               if re.search(r"""__file__.*["']data["']""", p.read_text())]
    assert readers == ["matrix.py"], readers


def test_managers_are_named_once() -> None:
    # the registry (managers.py) and probe.py's standalone copy (tests/test_managers.py) only
    hits = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
            if re.search(r"""["']micromamba["']""", p.read_text())]
    assert sorted(hits) == ["managers.py", "probe.py"], hits
