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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="envbuild")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
