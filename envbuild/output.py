"""Presentation: rich tables for people, stable JSON for machines, progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

__all__ = ["console", "err_console", "print_json", "progress", "table"]

console = Console(soft_wrap=False)
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A plain rich table; cells are str()'d and None shows as '-'."""
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*("-" if v is None else str(v) for v in r))
    return t


def progress(transfer: bool = False) -> Progress:
    """A progress display on stderr (so ``--json`` stdout stays clean)."""
    cols: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn()]
    if transfer:
        cols += [DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    else:
        cols += [TextColumn("{task.completed}/{task.total}")]
    return Progress(*cols, console=err_console, transient=False)
