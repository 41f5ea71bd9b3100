"""Presentation: rich tables for people, stable JSON for machines, progress bars.

Rich markup is off everywhere: messages carry user text (requirement names, paths, log lines), and
``[/]`` in one would crash the printer while ``[bold]`` would be eaten.  Styling is applied to our own
labels only, through ``styled`` (a ``rich.text.Text``, never parsed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table
    from rich.text import Text

    from envbuild.models import Resolution
    from envbuild.pack import PackResult
    from envbuild.unpack import UnpackReport

__all__ = ["console", "err_console", "knowledge_line", "plain", "present_inspect", "present_matrix",
           "present_pack", "present_resolution", "present_unpack", "print_json", "progress", "styled",
           "table"]


class _Console:
    """A ``rich.console.Console`` made on first use: rich costs ~0.1 s to import, and ``--json`` output
    (``print_json``) or a command that fails early never prints through it."""

    def __init__(self, **kw: Any) -> None:
        self._kw = kw
        self._made: Console | None = None

    def made(self) -> Console:
        if self._made is None:
            from rich.console import Console

            self._made = Console(**self._kw)
        return self._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.made(), name)


def _made(c: Console) -> Console:
    """The real Console behind ``console`` / ``err_console`` (for rich objects that keep one)."""
    return c.made() if isinstance(c, _Console) else c


console: Console = _Console(soft_wrap=False, markup=False)  # type: ignore[assignment]
err_console: Console = _Console(stderr=True, markup=False)  # type: ignore[assignment]


def styled(label: str, style: str, text: str = "") -> Text:
    """``label`` in ``style`` followed by ``text`` exactly as given (no markup parsing)."""
    from rich.text import Text

    out = Text(label, style=style)
    if text:
        out.append(" " + text)
    return out


def plain(text: object) -> Text:
    """``text`` as a renderable that rich never parses as markup (for status lines, titles)."""
    from rich.text import Text

    return Text(str(text))


def print_json(data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A plain rich table; cells are str()'d and None shows as '-'."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=None if title is None else Text(title), show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(Text(c), overflow="fold")
    for r in rows:
        t.add_row(*(Text("-" if v is None else str(v)) for v in r))
    return t


def progress(transfer: bool = False) -> Progress:
    """A progress display on stderr (so ``--json`` stdout stays clean)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    cols: list[Any] = [TextColumn("{task.description}", style="bold", markup=False), BarColumn()]
    if transfer:
        cols += [DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    else:
        cols += [TextColumn("{task.completed}/{task.total}")]
    return Progress(*cols, console=_made(err_console), transient=False)


# --- resolve / matrix -------------------------------------------------------------------------------


def present_resolution(res: Resolution, as_json: bool) -> None:
    """Print a resolution: table (package, version, why) + build info + warnings, or JSON."""
    if as_json:
        print_json(res.to_dict())
        return
    know = knowledge_line(res.knowledge)
    if not res.ok:
        err_console.print(styled("no consistent set for this target:", "bold red"))
        for c in res.conflict_texts:
            err_console.print(f"  - {c}", markup=False, highlight=False)
        if know:
            err_console.print(know, markup=False, highlight=False)
        for w in res.warnings:
            err_console.print(styled("warning:", "yellow", w), highlight=False)
        return
    head = f"Python {res.python}, " + (f"CUDA {res.cuda}" if res.cuda else "CPU build (cuda: none)")
    rows = [(c["package"], c["version"], c["reason"]) for c in res.choices]
    console.print(table(head, ["package", "version", "why"], rows))
    b = res.build
    cols = ["nvcc", "gcc max", "TORCH_CUDA_ARCH_LIST"]
    console.print(table("build (compiling CUDA ops on the target)", cols,
                        [(b.get("nvcc"), b.get("gcc_max"), b.get("torch_cuda_arch_list"))]))
    for sb in res.source_builds:
        env = " ".join(f"{k}={v}" for k, v in sb.env.items())
        console.print(f"build on the target after torch: {sb.name}=={sb.version}  ({env})",
                      markup=False, highlight=False)
    for u in res.index_urls:
        console.print(f"--extra-index-url {u}", markup=False, highlight=False)
    for u in res.find_links:
        console.print(f"--find-links {u}", markup=False, highlight=False)
    for b in res.implied:
        ev = f" ({', '.join(b['evidence'])})" if b.get("evidence") else ""
        pin = f", pinned {b['package']} {b['pinned']}" if b.get("pinned") else ""
        console.print(f"implied: {b['package']}{b['spec']} by {b['by']}{ev}{pin}", markup=False,
                      highlight=False)
    if know:
        console.print(know, markup=False, highlight=False)
    for w in res.warnings:
        err_console.print(styled("warning:", "yellow", w), highlight=False)


def knowledge_line(k: Mapping[str, Any]) -> str | None:
    """'knowledge: checked 2026-11-23 .. 2026-12-01 (8 days old)' for the table output."""
    if not k or not k.get("oldest"):
        return None
    span = k["oldest"] if k["oldest"] == k.get("newest") else f"{k['oldest']} .. {k['newest']}"
    age = f" ({k['age_days']} days old)" if k.get("age_days") is not None else ""
    return f"knowledge: facts checked {span}{age}; refresh with `envbuild data update`"


def present_matrix(t: Mapping[str, Any], as_json: bool) -> None:
    """Print an ``envbuild matrix`` table compactly (forum style), or JSON."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    if as_json:
        print_json(dict(t))
        return
    tab = Table(title=str(t["title"]), box=box.SIMPLE_HEAD, padding=(0, 1), header_style="bold")
    for c in t["columns"]:
        tab.add_column(str(c), no_wrap=True)
    for r in t["rows"]:
        tab.add_row(*("" if v is None else str(v) for v in r))
    # Forum tables are wide: print at their natural width rather than eliding cells on a narrow terminal.
    cols = t["columns"]
    natural = sum(max([len(str(c)), *(len(str(r[i] or "")) for r in t["rows"])]) + 3
                  for i, c in enumerate(cols))
    wide = Console(file=console.file, width=max(console.width, natural + 10), no_color=console.no_color,
                   force_terminal=console.is_terminal, soft_wrap=False)
    wide.print(tab)
    wide.print(str(t["legend"]), markup=False, highlight=False)


# --- pack / unpack / inspect -------------------------------------------------------------------


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"



def present_pack(result: PackResult, as_json: bool) -> None:
    """Print a pack summary (or JSON)."""
    if as_json:
        print_json(result.to_dict())
        return
    torch = result.torch or {}
    extra = f", torch {torch.get('version')} (CUDA {torch.get('cuda')})" if torch.get("version") else ""
    console.print(f"packed {result.kind} env {result.prefix} -> {result.archive} "
                  f"({result.format}, {_size(result.size)}, {result.members} members, "
                  f"{result.packages} packages{extra}) in {result.seconds} s with {result.jobs} "
                  "thread(s)", highlight=False)
    if (line := _inode_line(result.to_dict())) is not None:
        console.print(line, highlight=False)
    for w in result.warnings:
        err_console.print(styled("warning:", "yellow", w), highlight=False)
    if result.slurm_script:
        console.print(f"Slurm unpack script: {result.slurm_script}", highlight=False)



def _inode_line(info: dict[str, Any]) -> str | None:
    """'env: N files, D dirs, B; squashfs image: 1 file when mounted' - the inode saving at a glance."""
    files, dirs, nbytes = info.get("env_files"), info.get("env_dirs"), info.get("env_bytes")
    if files is None:
        return None
    what = f"env: {files:,} files in {dirs or 0:,} directories" + (f", {_size(nbytes)}" if nbytes else "")
    if info.get("image_files") == 1:
        return (f"{what}; as a squashfs image it is 1 file of {_size(info['size'])} (mounted with "
                f"squashfuse: 1 inode on the shared filesystem instead of {files + (dirs or 0):,})")
    return f"{what}; unpacking creates {info.get('inodes_when_used') or files:,} inodes on the target"



def present_unpack(report: UnpackReport, as_json: bool) -> None:
    """Print the findings table of an unpack (or JSON)."""
    if as_json:
        print_json(report.to_dict())
        return
    tgt = report.target
    what = "checked the archive's manifest (nothing extracted) for" if report.checked == "manifest" \
        else "unpacked"
    console.print(f"{what} {report.kind} env into {report.dest} (packed from "
                  f"{report.source or '?'} on {report.source_host or '?'}); checked against "
                  f"{tgt.hostname or 'the given profile'}: "
                  f"driver {tgt.driver_version or 'none'}, "
                  f"GPUs {', '.join(g.name for g in tgt.gpus) or 'none'}", highlight=False)
    rows = [(f.severity, f.family, f.cause, f.fix, f.evidence) for f in report.findings
            if f.severity != "info"]
    if rows:
        console.print(table("What will break here", ["severity", "check", "cause", "fix", "evidence"], rows))
    if report.ok and rows:
        console.print(styled("ok:", "green", "no errors; read the warnings above before running jobs."))
    elif report.ok:
        console.print(styled("ok:", "green", "nothing found that will break on this target."))
    else:
        console.print(styled("will not work here:", "bold red", "fix the errors above before running jobs."))
    if report.unchecked:
        console.print("not checked before extraction (the real unpack checks them):", highlight=False)
        for item in report.unchecked:
            console.print(f"  - {item}", highlight=False, markup=False)



def present_inspect(info: dict[str, Any], as_json: bool) -> None:
    """Print an archive's origin and package table (or JSON)."""
    if as_json:
        print_json(info)
        return
    src = info.get("source") or {}
    prof = src.get("profile") or {}
    console.print(f"{info['archive']} ({_size(info['size'])}): {info.get('kind') or '?'} env from "
                  f"{src.get('prefix') or '?'} on {prof.get('hostname') or '?'} "
                  f"(driver {prof.get('driver_version') or '-'}), created {info.get('created') or '?'}"
                  + ("" if info["has_manifest"] else "; no envbuild manifest (plain conda-pack archive)"),
                  highlight=False)
    if (line := _inode_line(info)) is not None:
        console.print(line, highlight=False)
    rows = [(p["name"], p["version"], p.get("build"), p.get("installer"), p.get("cuda"))
            for p in info["packages"]]
    console.print(table("Packages", ["name", "version", "build", "installer", "cuda"], rows))
