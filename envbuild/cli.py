"""Thin typer CLI: parse options, call one stage function, present the result.

Every command has ``--json``.  Errors derived from ``EnvbuildError`` print one
paragraph (or a JSON object with ``--json``) and exit with the class's code:
1 conflict / failed check, 2 bad input, 3 fetch or cache, 4 external tool or
data, 5 pack.  Anything else is a bug: one paragraph, exit 70, the traceback in a
log file (printed in full with ``--debug``).  Flag values are checked here, before
any stage runs, through the same schema layer as files (``envbuild.models.Fields``).
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from envbuild import __version__
from envbuild.errors import EXIT_INTERNAL, EnvbuildError, InputError
from envbuild.managers import CHOICES as MANAGER_CHOICES
from envbuild.managers import MANAGERS

if TYPE_CHECKING:
    from envbuild.models import Resolution
    from envbuild.target import TargetFlags

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


_STATE: dict[str, bool] = {"debug": False}


def crash_log_dir() -> Path:
    """Where internal-error tracebacks go: $ENVBUILD_LOG_DIR, else the user cache, else the temp dir."""
    env = os.environ.get("ENVBUILD_LOG_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "envbuild" / "logs"


def _write_crash_log(text: str) -> Path | None:
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for d in (crash_log_dir(), Path(tempfile.gettempdir())):
        try:
            d.mkdir(parents=True, exist_ok=True)
            p = d / name
            p.write_text(text, encoding="utf-8", errors="backslashreplace")
            return p
        except OSError:
            continue
    return None


def internal_error(exc: BaseException, as_json: bool) -> int:
    """Report a bug as one paragraph (the traceback goes to a log file); return EXIT_INTERNAL."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log = _write_crash_log(f"envbuild {__version__}\nargv: {sys.argv!r}\n\n{tb}")
    from envbuild.output import err_console, print_json, styled

    where = f"the traceback is in {log}" if log else "the traceback could not be written to a log file"
    msg = (f"internal error ({type(exc).__name__}): this is a bug in envbuild, not in your input; {where}. "
           "Re-run with --debug to see it, and report it with that file.")
    if as_json:
        print_json({"ok": False, "error": "InternalError", "message": msg, "path": str(log) if log else None,
                    "field": None, "hint": None, "exit_code": EXIT_INTERNAL})
    else:
        err_console.print(styled("error:", "bold red", msg), highlight=False, soft_wrap=True)
    if _STATE["debug"]:
        sys.stderr.write(tb)
    return EXIT_INTERNAL


def handle_errors(fn: F) -> F:
    """Map EnvbuildError to its exit code with a one-paragraph message (JSON with --json).

    Any other exception is a bug: ``internal_error`` (exit 70, traceback in a log file).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except EnvbuildError as exc:
            from envbuild.output import err_console, print_json, styled

            if as_json:
                print_json({"ok": False, **exc.to_dict()})
            else:
                # markup off: the message quotes user text ('numpy[/]', '[bold]')
                err_console.print(styled("error:", "bold red", exc.render()), highlight=False,
                                  soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # the net: a bug still ends in one paragraph and a known exit code
            raise typer.Exit(internal_error(exc, as_json)) from None

    return wrapper  # type: ignore[return-value]


# --- flag values: checked once, here, with the schema layer files use ---------------------------

_PATH_OK = re.compile(r"[^\x00-\x1f\x7f]{1,4096}")


def check_flags(**values: Any) -> None:
    """Refuse malformed flag values before any stage runs (nothing is written on a bad flag).

    Keys are flag names with '_' for '-' (``cuda_toolkit`` -> ``--cuda-toolkit``); ``reqs`` are
    positional requirements.  Raises InputError naming the flag, what was found and what to write.
    """
    from envbuild import models as m

    flags = {("REQ" if k == "reqs" else k if k.isupper() else "--" + k.replace("_", "-")): v
             for k, v in values.items() if v is not None}
    f = m.Fields(flags, path=None, error=InputError, what="flags")
    patterns: dict[str, tuple[re.Pattern[str], str]] = {
        "--python": (re.compile(r"3\.[0-9]{1,2}(\.[0-9]{1,4})?"), 'a Python version X.Y such as "3.10"'),
        "--driver": (m.DRIVER, 'a driver version in ASCII digits such as "470.223.02"'),
        "--cuda-toolkit": (re.compile(r"[0-9]{1,2}\.[0-9](\.[0-9]{1,4})?"), 'a CUDA version such as "11.3"'),
        "--gcc": (m.GCC, 'a gcc version such as "9.4"'),
        "--gpu": (re.compile(r"[^\x00-\x1f\x7f]{1,200}"), "a GPU model name or sm_XY"),
        "--name": (m.NAME, "a name of letters, digits, '.', '_' and '-' (no '/')"),
        "--manager": (re.compile("|".join(map(re.escape, MANAGERS))), MANAGER_CHOICES),
        "--engine": (re.compile(r"uv|pip-tools"), "uv or pip-tools"),
        "--format": (re.compile(r"tar\.gz|tar\.zst|zip|squashfs"), "tar.gz, tar.zst, zip or squashfs"),
        "--index-url": (m.URL, "an http(s):// or file:// URL"),
        "--pytorch-index": (m.URL, "an http(s):// or file:// URL"),
        "--openmmlab-index": (m.URL, "an http(s):// or file:// URL"),
        "--dest": (_PATH_OK, "a directory path on one line"),
    }
    for flag, value in flags.items():
        if isinstance(value, Path):
            f.data[flag] = str(value)
            f.text(flag, pattern=_PATH_OK, wanted="a path on one line (no control characters)")
        elif isinstance(value, list):
            f.strs(flag, pattern=re.compile(r"[^\x00-\x1f\x7f]{1,4096}"), wanted="a PEP 508 requirement")
        elif isinstance(value, str):
            pat, wanted = patterns.get(flag, (_PATH_OK, "a value on one line"))
            f.text(flag, pattern=pat, wanted=wanted)


R = TypeVar("R")


def _report(show: Callable[[R, bool], None], result: R, as_json: bool, *, failed: bool,
            code: int = 1) -> None:
    """Print a check's result; a failed check then exits with ``code`` (after its report, never instead)."""
    show(result, as_json)
    if failed:
        raise typer.Exit(code)


def _mirrors(pypi: str | None, pytorch: str | None, openmmlab: str | None) -> dict[str, str]:
    """--index-url / --pytorch-index / --openmmlab-index as the stages' ``indexes`` (given ones only)."""
    return {k: v for k, v in (("pypi", pypi), ("pytorch", pytorch), ("openmmlab", openmmlab)) if v}


# Compression levels each format's compressor accepts (gzip/zip: zlib 0-9; zstd 1-22; squashfs:
# conda-pack's 0-9 scale, 0 = none, 9 = xz, else zstd).
_LEVELS = {"tar.gz": (0, 9), "zip": (0, 9), "tar.zst": (1, 22), "squashfs": (0, 9)}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"envbuild {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="On an internal error, print the full traceback too.")
    ] = False,
) -> None:
    """envbuild: environments for CUDA projects on machines you do not control."""
    _STATE["debug"] = debug or os.environ.get("ENVBUILD_DEBUG") == "1"


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
TARGET: Any = None  # placeholder default of ``tf``: target_options replaces the parameter
NativeDriverOpt = Annotated[bool, typer.Option(
    "--native-driver-only",
    help="Only builds the driver supports natively (no CUDA minor-version compatibility): the strict "
         "choice.")]
SpecOpt = Annotated[
    Path | None, typer.Option("--spec", help="envbuild.toml (or requirements.txt / environment.yml).")
]


_TARGET_OPTS: tuple[tuple[str, Any, Any], ...] = (
    ("target", TargetOpt, None), ("python", PythonOpt, None), ("driver", DriverOpt, None),
    ("gpu", GpuOpt, None), ("cuda_toolkit", ToolkitOpt, None), ("gcc", GccOpt, None), ("cpu", CpuOpt, False))


def target_options(*, cpu: bool = True) -> Callable[[F], F]:
    """Declare the target options once: a command takes ``tf: TargetFlags``; typer sees the seven options.

    typer has no option groups, so this rewrites the command's signature: the ``tf`` parameter becomes
    --target/--python/--driver/--gpu/--cuda-toolkit/--gcc (and --cpu unless ``cpu=False``), and their
    values arrive as one ``envbuild.target.TargetFlags``.
    """
    opts = [o for o in _TARGET_OPTS if cpu or o[0] != "cpu"]

    def deco(fn: F) -> F:
        from envbuild.target import TargetFlags

        sig = inspect.signature(fn, eval_str=True, locals={"TargetFlags": TargetFlags})
        params: list[inspect.Parameter] = []
        for p in sig.parameters.values():
            if p.name != "tf":
                params.append(p)
                continue
            params += [inspect.Parameter(name, p.kind, default=default, annotation=ann)
                       for name, ann, default in opts]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs["tf"] = TargetFlags(**{name: kwargs.pop(name, default) for name, _, default in opts})
            return fn(*args, **kwargs)

        new_sig = sig.replace(parameters=params)
        wrapper.__signature__ = new_sig  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": sig.return_annotation}
        return wrapper  # type: ignore[return-value]

    return deco


# @@ COMMANDS: each stage adds its commands below this line, one block per stage. @@


# --- fetch ---


@app.command("fetch")
@handle_errors
def fetch_cmd(
    lock_dir: Annotated[Path, typer.Argument(help="Lock directory (lockfiles/NAME).")],
    cache: Annotated[Path, typer.Option("--cache", help="Offline cache directory.")] = Path("offline_cache"),
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Parallel downloads.", min=1, max=256)] = 8,
    as_json: JsonOpt = False,
) -> None:
    """Download every artifact of a lock (hash-checked, resumable) into an offline cache."""
    from envbuild.fetch import fetch, present_fetch

    check_flags(LOCK_DIR=lock_dir, cache=cache)
    result = fetch(lock_dir, cache, jobs=jobs, show_progress=True)
    present_fetch(result, as_json)


@app.command("verify-cache")
@handle_errors
def verify_cache_cmd(
    cache: Annotated[Path, typer.Argument(help="Offline cache directory or bundle .tar.")] = Path(
        "offline_cache"),
    lock_dir: Annotated[Path | None, typer.Option(
        "--lock", help="Also check against this lock (a bundle's own lock files must equal it).")] = None,
    trust_bundle_lock: Annotated[bool, typer.Option(
        "--trust-bundle-lock", help="Check a bundle against its own lock (self-consistency only).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every file of an offline cache or bundle; exit 3 when any is missing or altered."""
    from envbuild.bundle import present_verify, verify_cache

    check_flags(CACHE=cache, lock=lock_dir)
    report = verify_cache(cache, lock_dir, trust_bundle_lock=trust_bundle_lock)
    _report(present_verify, report, as_json, failed=not report.ok, code=3)


@app.command("bundle")
@handle_errors
def bundle_cmd(
    lock_dir: Annotated[Path, typer.Argument(help="Lock directory (lockfiles/NAME).")],
    cache: Annotated[Path, typer.Option("--cache", help="Offline cache directory.")] = Path("offline_cache"),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Bundle file (NAME-offline.tar) or directory.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="tar (one file) or dir (cache files hardlinked, "
                                                      "for rsync).")] = "tar",
    as_json: JsonOpt = False,
) -> None:
    """Write one .tar (or directory) with the lock, the rendered scripts, the verified cache and a README."""
    from envbuild.bundle import bundle, present_bundle

    check_flags(LOCK_DIR=lock_dir, cache=cache, output=output)
    present_bundle(bundle(lock_dir, cache, output, fmt=fmt), as_json)


# --- end fetch ---


# --- probe ---


def _show_profile(data: dict[str, Any]) -> None:
    from envbuild.output import console, err_console, table

    keys = ("os", "arch", "glibc_version", "python_version", "driver_version", "driver_cuda_version",
            "gcc_version", "conda", "hostname")
    console.print(table("machine", ["key", "value"], [(k, data.get(k)) for k in keys]))
    gpus = data.get("gpus") or []
    console.print(table("GPUs", ["#", "name", "compute capability", "memory (MiB)"],
                        [(i, g["name"], g.get("compute_capability"), g.get("memory_mib"))
                         for i, g in enumerate(gpus)]) if gpus else "GPUs: none visible")
    tks = data.get("cuda_toolkits") or []
    console.print(table("CUDA toolkits (nvcc) — not the driver's CUDA",
                        ["version", "full", "path", "found via"],
                        [(t["version"], t.get("full_version"), t.get("path"), t.get("source")) for t in tks])
                  if tks else "CUDA toolkits: none found")
    for note in data.get("notes") or []:
        err_console.print(f"note: {note}", markup=False, highlight=False)


@app.command("probe")
@handle_errors
def probe_cmd(
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Also write the profile JSON to FILE (atomically).")
    ] = None,
    python_exe: Annotated[
        str | None, typer.Option("--python-exe", help="Probe this Python interpreter (default: envbuild's).")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for nvidia-smi.",
                                                 min=0.1, max=3600)] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Describe this machine: OS, glibc, Python, GPUs, driver (and its CUDA), CUDA toolkits, gcc, conda."""
    import json

    from envbuild._fs import atomic_write
    from envbuild.errors import InputError
    from envbuild.models import Profile
    from envbuild.output import err_console, print_json
    from envbuild.probe import probe

    check_flags(output=output, python_exe=python_exe)
    data = probe(python_exe=python_exe, timeout=timeout)
    Profile.from_dict(data, path="<probe>")  # the contract every consumer relies on
    if output is not None:
        try:
            atomic_write(output, json.dumps(data, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise InputError(f"cannot write the profile ({exc.strerror}).", path=str(output),
                             hint="Choose a writable path for -o.") from None
    if as_json:
        print_json(data)
    else:
        _show_profile(data)
        if output is not None:
            err_console.print(f"wrote {output}", highlight=False)


# --- end probe ---

# --- init ---


@app.command("init")
@handle_errors
def init_cmd(
    path: Annotated[
        Path | None, typer.Argument(help="File or directory to write envbuild.toml to (default: ./).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="Project name (default: directory name).")
    ] = None,
    python: Annotated[str | None, typer.Option("--python", help="Python X.Y of the environment.")] = None,
    manager: Annotated[
        str, typer.Option("--manager", help=" | ".join(MANAGERS) + ".")
    ] = "venv",
    as_json: JsonOpt = False,
) -> None:
    """Write a commented envbuild.toml (refuses to overwrite one without --force)."""
    from envbuild.init import init_spec
    from envbuild.output import err_console, print_json

    check_flags(PATH=path, name=name, python=python, manager=manager)
    written, spec = init_spec(path, force=force, name=name, python=python, manager=manager)
    if as_json:
        print_json({"ok": True, "path": str(written), "spec": spec.to_dict()})
    else:
        err_console.print(f"wrote {written}: edit [project].requirements, then run "
                          f"'envbuild resolve --spec {written}'.", markup=False, highlight=False)


# --- end init ---


# --- doctor ---


@app.command("doctor")
@handle_errors
def doctor_cmd(
    prefix: Annotated[
        Path | None, typer.Option("--prefix", help="Env to check (venv or conda prefix holding bin/python).")
    ] = None,
    target: TargetOpt = None,
    log: Annotated[
        str | None, typer.Option("--log", help="Error log or traceback to read ('-' for stdin).")
    ] = None,
    no_load: Annotated[
        bool,
        typer.Option("--no-load", help="Do not dlopen the env's extensions (skips undefined-symbol checks)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Name what breaks an env or an error log (family, cause, fix); exit 1: an error, 6: no known cause."""
    from envbuild.doctor import diagnose, present_report, read_log_file
    from envbuild.errors import InputError
    from envbuild.target import load_target_file

    check_flags(prefix=prefix, target=target, log=log)
    if prefix is None and log is None:
        raise InputError(
            "nothing to check.",
            field="--prefix/--log",
            hint="Pass --prefix ENV to check an env, --log FILE (or -) to read an error log, or both.",
        )
    profile = load_target_file(target)
    text, name = read_log_file(log) if log is not None else (None, None)
    report = diagnose(prefix, profile, text, log_name=name, load=not no_load)
    _report(present_report, report, as_json, failed=not report.ok)
    if report.verdict == "no-known-cause":
        from envbuild.errors import EXIT_NO_CAUSE

        raise typer.Exit(EXIT_NO_CAUSE)


# --- end doctor ---


# --- pack ---


@app.command("pack")
@handle_errors
def pack_cmd(
    prefix: Annotated[Path, typer.Argument(help="The env to pack (conda prefix or venv).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Archive to write.")],
    fmt: Annotated[str | None, typer.Option("--format",
                                            help="tar.gz | tar.zst | zip | squashfs (default: from -o; "
                                                 "squashfs: one file to mount with squashfuse).")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, max=1024,
                                             help="Compression threads (default: all CPUs).")] = None,
    level: Annotated[int | None, typer.Option("--level", min=0, max=22,
                                              help="Compression level (gzip/zip 0-9, zstd 1-22).")] = None,
    ignore_editable: Annotated[bool, typer.Option("--ignore-editable-packages",
                                                  help="Pack without editable installs.")] = False,
    ignore_missing: Annotated[bool, typer.Option(
        "--ignore-missing-files", help="Pack despite missing/overwritten conda files.")] = False,
    slurm_script: Annotated[Path | None, typer.Option("--slurm-script",
                                                      help="Also write a Slurm unpack script here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Pack an env into one archive with an envbuild-manifest.json (packages, source machine, sha256s)."""
    from dataclasses import replace

    from envbuild.archive import _format_of
    from envbuild.output import present_pack
    from envbuild.pack import pack
    from envbuild.unpack import write_slurm

    check_flags(PREFIX=prefix, output=output, format=fmt, slurm_script=slurm_script)
    if slurm_script is not None and str(slurm_script) == "-":
        # stdout carries pack's own result (the summary or --json); the two would be one stream
        raise InputError("--slurm-script needs a file name here: pack prints its result on stdout.",
                         field="--slurm-script",
                         hint="Pass a file (e.g. --slurm-script unpack.sh), or run 'envbuild slurm-script "
                              "ARCHIVE' after packing to print the script.")
    if level is not None and fmt in (None, *_LEVELS):
        lo, hi = _LEVELS[_format_of(output, fmt)]
        if not lo <= level <= hi:
            raise InputError(f"level {level} is out of range for {_format_of(output, fmt)}.", field="--level",
                             hint=f"Write a level from {lo} to {hi}.")
    result = pack(prefix, output, fmt=fmt, jobs=jobs, level=level, ignore_editable=ignore_editable,
                  ignore_missing=ignore_missing, show_progress=not as_json)
    if slurm_script is not None:
        # The script looks for the archive by its name next to itself on the cluster, never by
        # this machine's absolute path.
        result = replace(result, slurm_script=str(write_slurm(output, slurm_script)))
    present_pack(result, as_json)


@app.command("unpack")
@handle_errors
def unpack_cmd(
    archive: Annotated[Path, typer.Argument(help="Archive from 'envbuild pack' or conda-pack.")],
    dest: Annotated[Path, typer.Argument(help="New, empty directory to unpack into.")],
    target: TargetOpt = None,
    check_only: Annotated[bool, typer.Option("--check-only",
                                             help="Only check the manifest against the target.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Unpack safely, fix prefixes, and report what will break on this machine (or --target); exit 1 if so."""
    from envbuild.output import present_unpack
    from envbuild.target import load_target_file
    from envbuild.unpack import unpack

    check_flags(ARCHIVE=archive, DEST=dest, target=target)
    report = unpack(archive, dest, target=load_target_file(target), check_only=check_only,
                    show_progress=not as_json)
    _report(present_unpack, report, as_json, failed=not report.ok)


@app.command("inspect")
@handle_errors
def inspect_cmd(
    archive: Annotated[Path, typer.Argument(help="Archive from 'envbuild pack' or conda-pack.")],
    as_json: JsonOpt = False,
) -> None:
    """List an archive's packages and where it came from, without unpacking it."""
    from envbuild.archive import inspect_archive
    from envbuild.output import present_inspect

    check_flags(ARCHIVE=archive)
    present_inspect(inspect_archive(archive), as_json)


@app.command("slurm-script")
@handle_errors
def slurm_script_cmd(
    archive: Annotated[Path, typer.Argument(help="Archive from 'envbuild pack' (read here for its sha256).")],
    dest: Annotated[str | None, typer.Option("--dest", help="Node-local directory (default "
                                             "$SLURM_TMPDIR, else $TMPDIR, /envbuild-$USER/NAME).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Script to write (default or '-': stdout).")] = None,
    archive_path: Annotated[str | None, typer.Option(
        "--archive", help="The archive's path ON THE CLUSTER: absolute, or relative to the script "
        "(default: its file name, next to the script).")] = None,
    squashfs: Annotated[bool, typer.Option("--squashfs", help="Mount a squashfs image with squashfuse "
                                           "on each node instead of extracting it.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a bash script that sbcasts the archive to every node of an allocation and unpacks it."""
    from envbuild.output import print_json
    from envbuild.unpack import render_slurm, write_slurm

    check_flags(ARCHIVE=archive, dest=dest, output=None if output is None or str(output) == "-" else output,
                archive_path=archive_path)
    to_stdout = output is None or str(output) == "-"
    if as_json:
        extra = {"text": render_slurm(archive, dest, archive_path=archive_path, mount=squashfs)} \
            if to_stdout else {}
        path = None if to_stdout else write_slurm(archive, output, dest, archive_path=archive_path,
                                                  mount=squashfs)
        print_json({"ok": True, "script": str(path) if path else "-", "archive": str(archive),
                    "archive_on_cluster": archive_path or archive.name, "squashfs": squashfs, **extra})
        return
    path = write_slurm(archive, output, dest, archive_path=archive_path, mount=squashfs)
    if path is not None:
        typer.echo(f"wrote {path}: run it inside an allocation, e.g. 'salloc -N 4 bash {path}'")


# --- end pack ---


# --- lock ---

ManagerOpt = Annotated[
    str | None, typer.Option("--manager", help=" | ".join(MANAGERS) + " (overrides the spec).")
]


def _lock_command_line(spec: Path | None, reqs: list[str], out: Path | None, engine: str,
                       flags: dict[str, Any]) -> str:
    """The regenerate command written into lock headers (stable: no --json, no host paths)."""
    import shlex

    parts = ["envbuild", "lock", *(["--spec", str(spec)] if spec else reqs)]
    for k, v in flags.items():
        if v not in (None, False):
            parts += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    if out is not None:
        parts += ["-o", str(out)]
    if engine != "uv":
        parts += ["--engine", engine]
    return shlex.join(parts)


PytorchAlwaysOpt = Annotated[bool, typer.Option(
    "--pytorch-index-always", help="Take torch from the PyTorch index even when PyPI has the same build.")]
AllowSdistOpt = Annotated[
    list[str] | None,
    typer.Option("--allow-sdist", help="Accept this package as a source build when it has no wheel for "
                 "the target (repeatable).")]


@app.command("lock")
@handle_errors
@target_options()
def lock_cmd(
    reqs: Annotated[list[str] | None, typer.Argument(help="Requirements, when no --spec.")] = None,
    spec: SpecOpt = None,
    tf: TargetFlags = TARGET,
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Lock dir (lockfiles/NAME).")] = None,
    engine: Annotated[str, typer.Option("--engine", help="uv (default, cross-target) or pip-tools.")] = "uv",
    manager: ManagerOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Lock name (default: the spec's).")] = None,
    index_url: Annotated[str | None, typer.Option("--index-url", help="PyPI mirror (simple API).")] = None,
    pytorch_index: Annotated[
        str | None, typer.Option("--pytorch-index", help="PyTorch wheel index mirror (…/whl).")] = None,
    openmmlab_index: Annotated[
        str | None, typer.Option("--openmmlab-index", help="OpenMMLab find-links mirror (…/dist).")] = None,
    upgrade: Annotated[bool, typer.Option("--upgrade", help="Ignore the existing lock's pins.")] = False,
    pytorch_index_always: PytorchAlwaysOpt = False,
    native_driver_only: NativeDriverOpt = False,
    allow_sdist: AllowSdistOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pin the whole tree for the target (hashes, git commits, conda part) into lockfiles/NAME/."""
    from envbuild.lock import input_spec, lock, present_lock, with_allow_sdist
    from envbuild.target import build_target

    check_flags(reqs=reqs, spec=spec, **tf.check_values(), output=out, engine=engine, manager=manager,
                name=name, index_url=index_url, pytorch_index=pytorch_index, openmmlab_index=openmmlab_index)
    the_spec = with_allow_sdist(input_spec(spec, reqs or [], manager=manager, name=name, python=tf.python),
                                allow_sdist or [])
    flags: dict[str, Any] = tf.overrides()
    profile = build_target(tf, the_spec)
    mirrors = _mirrors(index_url, pytorch_index, openmmlab_index)
    out_dir = out or Path("lockfiles") / the_spec.name
    cmd_flags = {"target": tf.target, **flags, "manager": manager, "index_url": index_url,
                 "pytorch_index": pytorch_index, "openmmlab_index": openmmlab_index,
                 "native_driver_only": native_driver_only}
    command = _lock_command_line(spec, reqs or [], out_dir, engine, cmd_flags)
    command += "".join(f" --allow-sdist {n}" for n in allow_sdist or [])  # names checked above
    kw: dict[str, Any] = {"out_dir": out_dir, "engine": engine, "indexes": mirrors, "command": command,
                          "upgrade": upgrade, "prefer_pypi": not pytorch_index_always,
                          "native_driver_only": native_driver_only, "today": dt.date.today()}
    if as_json:
        result = lock(the_spec, profile, **kw)
    else:
        from envbuild.output import err_console, plain

        with err_console.status(plain(f"locking {the_spec.name} with {engine}…")):
            result = lock(the_spec, profile, **kw)
    present_lock(result, as_json)


@app.command("render")
@handle_errors
def render_cmd(
    lock_dir: Annotated[Path, typer.Argument(help="Lock directory (lockfiles/NAME).")],
    out: Annotated[Path | None, typer.Option("--output", "-o", help="Output dir (default: lock).")] = None,
    manager: ManagerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write install.sh, install-offline.sh, verify.sh and INSTALL.md for a lock."""
    from envbuild.render import present_render, render

    check_flags(LOCK_DIR=lock_dir, output=out, manager=manager)
    present_render(render(lock_dir, out, manager=manager), as_json)


# --- end lock ---


# --- rebuild ---


@app.command("rebuild")
@handle_errors
@target_options(cpu=False)
def rebuild_cmd(
    source: Annotated[
        Path | None, typer.Argument(help="Lock directory (lockfiles/NAME) to re-target (or use --prefix).")
    ] = None,
    prefix: Annotated[Path | None, typer.Option("--prefix", help="Installed env to re-target.")] = None,
    tf: TargetFlags = TARGET,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Directory for rebuild.sh, plan.json and lock/.")
    ] = None,
    no_lock: Annotated[
        bool, typer.Option("--no-lock", help="Write the plan and rebuild.sh only (no index access).")
    ] = False,
    index_url: Annotated[str | None, typer.Option("--index-url", help="PyPI mirror (simple API).")] = None,
    pytorch_index: Annotated[
        str | None, typer.Option("--pytorch-index", help="PyTorch wheel index mirror (…/whl).")
    ] = None,
    openmmlab_index: Annotated[
        str | None, typer.Option("--openmmlab-index", help="OpenMMLab find-links mirror (…/dist).")
    ] = None,
    native_driver_only: NativeDriverOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-resolve an env or lock for another machine; write the new lock and a minimal rebuild.sh."""
    from envbuild.errors import InputError
    from envbuild.rebuild import present_plan, rebuild
    from envbuild.target import build_target

    check_flags(SOURCE=source, prefix=prefix, **tf.check_values(), output=output, index_url=index_url,
                pytorch_index=pytorch_index, openmmlab_index=openmmlab_index)
    if (source is None) == (prefix is None):
        raise InputError("give exactly one of --prefix ENV or a lock directory.", field="--prefix/LOCK_DIR",
                         hint="e.g. 'envbuild rebuild --prefix ~/envs/radar --target server.json'.")
    if not tf.described():
        raise InputError("a target is required.", field="--target",
                         hint="Write one with 'envbuild probe -o server.json' on the target machine, or "
                              "describe it with --driver/--gpu/--cuda-toolkit/--gcc/--python.")
    profile = build_target(tf)
    mirrors = _mirrors(index_url, pytorch_index, openmmlab_index)
    plan = rebuild(prefix or source or Path("."), profile, out_dir=output, lock=not no_lock,
                   indexes=mirrors or None, native_driver_only=native_driver_only, today=dt.date.today())
    present_plan(plan, as_json)


# --- end rebuild ---


# --- plan ---


@app.command("plan")
@handle_errors
@target_options()
def plan_cmd(
    spec: SpecOpt = None,
    tf: TargetFlags = TARGET,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Output directory (default out/NAME).")
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Also fetch every artifact and bundle.")] = False,
    bundle_format: Annotated[str, typer.Option(
        "--bundle-format", help="With --offline: tar (one file) or dir (cache files hardlinked).")] = "tar",
    engine: Annotated[str, typer.Option("--engine", help="Lock engine: uv or pip-tools.")] = "uv",
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=256,
                                      help="Parallel downloads with --offline.")] = 8,
    pytorch_index_always: PytorchAlwaysOpt = False,
    native_driver_only: NativeDriverOpt = False,
    allow_sdist: AllowSdistOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve -> lock -> render (-> fetch -> bundle with --offline) in one command."""
    from envbuild.lock import input_spec, with_allow_sdist
    from envbuild.output import err_console as _err
    from envbuild.output import styled
    from envbuild.plan import plan, present_plan
    from envbuild.target import build_target

    check_flags(spec=spec, out=out, **tf.check_values(), engine=engine)
    the_spec = with_allow_sdist(input_spec(spec, [], python=tf.python), allow_sdist or [])
    the_target = build_target(tf, the_spec)
    result = plan(
        the_spec, the_target, out or Path("out") / the_spec.name, offline=offline, engine=engine,
        jobs=jobs, show_progress=not as_json, prefer_pypi=not pytorch_index_always,
        native_driver_only=native_driver_only, bundle_format=bundle_format,
        today=dt.date.today(),
        step=None if as_json else (lambda s: _err.print(styled(f"» {s}", "bold cyan"), highlight=False)),
    )
    present_plan(result, as_json)


# --- resolve ---


@app.command("resolve")
@handle_errors
@target_options()
def resolve_cmd(
    reqs: Annotated[list[str] | None,
                    typer.Argument(help="PEP 508 requirements, e.g. mmcv-full==1.4.0 cupy numpy.")] = None,
    spec: SpecOpt = None,
    tf: TargetFlags = TARGET,
    pytorch_index_always: Annotated[bool, typer.Option(
        "--pytorch-index-always",
        help="Pin torch==X+cuYYY from download.pytorch.org even when the plain PyPI wheel is that CUDA build."
    )] = False,
    native_driver_only: NativeDriverOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Pick the newest consistent torch/CUDA/mmcv/CuPy/NumPy set for a target (exit 1: conflicts)."""
    from envbuild.output import present_resolution

    check_flags(reqs=reqs, spec=spec, **tf.check_values())
    res = resolve_cli(reqs or [], tf, spec_path=spec, prefer_pypi=not pytorch_index_always,
                      native_driver_only=native_driver_only)
    _report(present_resolution, res, as_json, failed=not res.ok)


@app.command("matrix")
@handle_errors
def matrix_cmd(
    kind: Annotated[str, typer.Argument(help="torch | mmcv | cupy | driver")],
    as_json: JsonOpt = False,
) -> None:
    """Print a compatibility table from the bundled data (rows versions, columns CUDA variants)."""
    from envbuild.matrix import matrix_table
    from envbuild.output import present_matrix

    present_matrix(matrix_table(kind), as_json)


def resolve_cli(reqs: list[str], flags: TargetFlags, *, spec_path: Path | None = None,
                prefer_pypi: bool = True, native_driver_only: bool = False) -> Resolution:
    """What ``envbuild resolve`` does minus printing: read the spec, build the target, resolve for today.

    The host's Python is the preferred one when the target names none (as ``lock`` prefers it).

    Raises:
        InputError: no requirements, bad flag, bad spec or profile.
    """
    import datetime as dt

    from envbuild.resolve import resolve
    from envbuild.spec import load_spec
    from envbuild.target import build_target, host_python

    requirements = list(reqs)
    the_spec = load_spec(spec_path) if spec_path is not None else None
    if the_spec is not None:
        # conda pytorch/cupy specs become requirements, cudatoolkit a CUDA constraint
        requirements = the_spec.resolver_requirements() + requirements
    if not requirements:
        raise InputError("nothing to resolve.", path=str(spec_path) if spec_path is not None else None,
                         field="project.requirements" if spec_path is not None else "requirements",
                         hint="Pass requirements (e.g. 'envbuild resolve torch numpy') "
                              "or --spec envbuild.toml.")
    target = build_target(flags, the_spec)
    return resolve(requirements, target, indexes=dict(the_spec.indexes) if the_spec else {},
                   prefer_pypi=prefer_pypi, native_driver_only=native_driver_only, today=dt.date.today(),
                   prefer_python=host_python(), cuda=the_spec.cuda if the_spec else None)


# --- end resolve ---


# --- data ---


def _data_app() -> typer.Typer:
    """`envbuild data status|update`: the knowledge cache (harvested facts) and where each fact is from."""
    data = typer.Typer(help="Knowledge data: its age and sources; refresh it from PyPI and the indexes.",
                       no_args_is_help=True)

    @data.command("status")
    @handle_errors
    def status_cmd(as_json: JsonOpt = False) -> None:
        """Each data file and source: checked date, age in days, bundled or user cache."""
        from envbuild.harvest import data_status, present_status

        present_status(data_status(), as_json)

    @data.command("update")
    @handle_errors
    def update_cmd(
        only: Annotated[list[str] | None, typer.Option(
            "--only", help="Refresh only this source (repeatable): pypi-torch, pypi-numpy, pypi-cupy, "
                           "pypi-openmmlab, pytorch-index, openmmlab-index.")] = None,
        offline_ok: Annotated[bool, typer.Option(
            "--offline-ok", help="Exit 0 even when no source is reachable (old facts kept).")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Refresh the user knowledge cache from PyPI, the PyTorch index and OpenMMLab's pages."""
        from envbuild.harvest import update_cli

        update_cli(only, offline_ok, as_json)

    return data


app.add_typer(_data_app(), name="data")


# --- end data ---


def _app_for(argv: list[str]) -> typer.Typer:
    """``app`` with only the command being run: typer builds the click parameters of every command it
    holds before it parses (~0.08 s for all of them) and a run needs one.  The root's help, a mistyped
    command (click suggests close names) or no command get the whole app."""
    import copy

    name = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if name is None or {"-h", "--help"} & set(argv[:name]):
        return app
    cmds = [c for c in app.registered_commands if c.name == argv[name]]
    groups = [g for g in app.registered_groups if g.name == argv[name]]
    if not cmds and not groups:
        return app
    one = copy.copy(app)
    one.registered_commands, one.registered_groups = cmds, groups
    return one


def main() -> None:
    """Console-script entry point.

    Output streams escape what they cannot encode (a non-UTF-8 file name arrives as surrogates), and
    an exception outside any command (option parsing) still gets the internal-error net.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        _app_for(sys.argv[1:])(prog_name="envbuild")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        sys.exit(internal_error(exc, "--json" in sys.argv))


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
