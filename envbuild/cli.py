"""Thin typer CLI: parse options, call one stage function, present the result.

Every command has ``--json``.  Errors derived from ``EnvbuildError`` print one
paragraph (or a JSON object with ``--json``) and exit with the class's code:
1 conflict / failed check, 2 bad input, 3 fetch or cache, 4 external tool or
data, 5 pack.  Anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from envbuild import __version__
from envbuild.errors import EnvbuildError
from envbuild.output import err_console, print_json

__all__ = ["app", "main"]

app = typer.Typer(
    name="envbuild",
    help="Plan, lock, fetch, pack and diagnose CUDA deep-learning environments.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def handle_errors(fn: F) -> F:
    """Map EnvbuildError to its exit code with a one-paragraph message (JSON with --json)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EnvbuildError as exc:
            if kwargs.get("as_json"):
                print_json({"ok": False, **exc.to_dict()})
            else:
                err_console.print(f"[bold red]error:[/] {exc.render()}", highlight=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"envbuild {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """envbuild: environments for CUDA projects on machines you do not control."""


# --- shared target options (resolve, lock, plan, rebuild) ------------------------------------

TargetOpt = Annotated[
    Path | None, typer.Option("--target", help="Target machine profile (from 'envbuild probe').")
]
PythonOpt = Annotated[str | None, typer.Option("--python", help="Target Python X.Y.")]
DriverOpt = Annotated[str | None, typer.Option("--driver", help="Target NVIDIA driver version.")]
GpuOpt = Annotated[
    str | None, typer.Option("--gpu", help="Target GPU model name or sm_XY / X.Y capability.")
]
ToolkitOpt = Annotated[
    str | None, typer.Option("--cuda-toolkit", help="CUDA toolkit (nvcc) on the target, X.Y.")
]
GccOpt = Annotated[str | None, typer.Option("--gcc", help="Host gcc version on the target.")]
CpuOpt = Annotated[bool, typer.Option("--cpu", help="Plan a CPU-only environment.")]
SpecOpt = Annotated[
    Path | None, typer.Option("--spec", help="envbuild.toml (or requirements.txt / environment.yml).")
]


# @@ COMMANDS: each stage adds its commands below this line, one block per stage. @@


# --- fetch ---


@app.command("fetch")
@handle_errors
def fetch_cmd(
    lock_dir: Annotated[Path, typer.Argument(help="Lock directory (lockfiles/NAME).")],
    cache: Annotated[Path, typer.Option("--cache", help="Offline cache directory.")] = Path("offline_cache"),
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Parallel downloads.")] = 8,
    as_json: JsonOpt = False,
) -> None:
    """Download every artifact of a lock (hash-checked, resumable) into an offline cache."""
    from envbuild.fetch import fetch, present_fetch

    result = fetch(lock_dir, cache, jobs=jobs, show_progress=True)
    present_fetch(result, as_json)


@app.command("verify-cache")
@handle_errors
def verify_cache_cmd(
    cache: Annotated[Path, typer.Argument(help="Offline cache directory or bundle .tar.")] = Path(
        "offline_cache"),
    lock_dir: Annotated[Path | None, typer.Option("--lock", help="Also check against this lock.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every file of an offline cache or bundle; exit 3 when any is missing or altered."""
    from envbuild.bundle import present_verify, verify_cache

    report = verify_cache(cache, lock_dir)
    present_verify(report, as_json)
    if not report.ok:
        raise typer.Exit(3)


@app.command("bundle")
@handle_errors
def bundle_cmd(
    lock_dir: Annotated[Path, typer.Argument(help="Lock directory (lockfiles/NAME).")],
    cache: Annotated[Path, typer.Option("--cache", help="Offline cache directory.")] = Path("offline_cache"),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Bundle file (NAME-offline.tar).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one .tar with the lock, the rendered scripts, the verified cache and a README."""
    from envbuild.bundle import bundle, present_bundle

    present_bundle(bundle(lock_dir, cache, output), as_json)


# --- end fetch ---


def main() -> None:
    """Console-script entry point."""
    app(prog_name="envbuild")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
