"""Presentation: rich tables for people, stable JSON for machines, progress bars.

Rich markup is off everywhere: messages carry user text (requirement names, paths, log lines), and
``[/]`` in one would crash the printer while ``[bold]`` would be eaten.  Styling is applied to our own
labels only, through ``styled`` (a ``rich.text.Text``, never parsed).
"""

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
from rich.text import Text

__all__ = ["console", "err_console", "plain", "print_json", "progress", "styled", "table"]

console = Console(soft_wrap=False, markup=False)
err_console = Console(stderr=True, markup=False)


def styled(label: str, style: str, text: str = "") -> Text:
    """``label`` in ``style`` followed by ``text`` exactly as given (no markup parsing)."""
    out = Text(label, style=style)
    if text:
        out.append(" " + text)
    return out


def plain(text: object) -> Text:
    """``text`` as a renderable that rich never parses as markup (for status lines, titles)."""
    return Text(str(text))


def print_json(data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A plain rich table; cells are str()'d and None shows as '-'."""
    t = Table(title=None if title is None else Text(title), show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(Text(c), overflow="fold")
    for r in rows:
        t.add_row(*(Text("-" if v is None else str(v)) for v in r))
    return t


def progress(transfer: bool = False) -> Progress:
    """A progress display on stderr (so ``--json`` stdout stays clean)."""
    cols: list[Any] = [TextColumn("{task.description}", style="bold", markup=False), BarColumn()]
    if transfer:
        cols += [DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    else:
        cols += [TextColumn("{task.completed}/{task.total}")]
    return Progress(*cols, console=err_console, transient=False)
