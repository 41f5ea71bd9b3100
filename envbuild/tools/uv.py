"""uv adapter: ``uv pip compile`` for a target Python/platform, and the pip-tools output parser."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from envbuild import cache_home
from envbuild.errors import ConflictError, EnvbuildError, FetchError, InputError, ToolError
from envbuild.tools._run import redact, split_credentials

__all__ = [
    "CompileOptions",
    "Pinned",
    "PylockFile",
    "PylockPackage",
    "compile_pylock",
    "compile_requirements",
    "parse_compiled",
    "parse_pylock",
    "start_early",
    "uv_bin",
]


@dataclass(frozen=True)
class CompileOptions:
    """What both engines need: inputs, indexes and (uv only) the target interpreter/platform."""

    requirements: tuple[str, ...]
    python_version: str | None = None
    python_platform: str | None = None
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    index_strategy: str | None = None
    refresh: bool = False
    constraints: tuple[str, ...] = ()
    # Wheels first: only wheels, except the packages named in no_binary (built from source knowingly).
    only_binary: bool = False
    no_binary: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pinned:
    """One ``name==version`` line of a compiled requirements file, with its hashes and ``# via``."""

    name: str
    version: str
    hashes: tuple[str, ...] = ()
    via: tuple[str, ...] = ()
    marker: str | None = None
    extras: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PylockFile:
    """A wheel or sdist uv chose for the target: URL, file name and sha256."""

    url: str
    filename: str
    sha256: str
    kind: str  # wheel | sdist


@dataclass(frozen=True)
class PylockPackage:
    """One package of a PEP 751 ``pylock.toml``: its pin and the target's files."""

    name: str
    version: str
    files: tuple[PylockFile, ...]


def parse_pylock(text: str) -> list[PylockPackage]:
    """Read uv's ``pylock.toml`` output (only the target's wheels are listed, plus the sdist).

    Raises:
        ToolError: the text is not a pylock file.
    """
    from urllib.parse import unquote, urlsplit

    import tomllib
    from packaging.utils import canonicalize_name

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ToolError(f"uv wrote an unreadable pylock.toml ({exc}).") from None
    out = []
    for pkg in data.get("packages", []):
        files = []
        entries = [("sdist", pkg["sdist"])] if "sdist" in pkg else []
        entries += [("wheel", w) for w in pkg.get("wheels", [])]
        for kind, f in entries:
            url = f.get("url") or ""
            name = f.get("name") or unquote(urlsplit(url).path.rsplit("/", 1)[-1])
            sha = (f.get("hashes") or {}).get("sha256", "")
            files.append(PylockFile(url=url, filename=name, sha256=sha, kind=kind))
        out.append(PylockPackage(name=str(canonicalize_name(pkg["name"])),
                                 version=str(pkg.get("version", "")), files=tuple(files)))
    return out


def uv_bin() -> str:
    """Path of the uv binary shipped with the ``uv`` Python package (falls back to PATH)."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return "uv"


_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[(?P<extras>[^\]]*)\])?==(?P<version>[^\s;\\]+)"
    r"(?:\s*;\s*(?P<marker>[^\\]+?))?\s*(?:\\)?$"
)


def _continuation(line: str, hashes: list[str], via: list[str], in_via: bool) -> bool:
    """An indented line under a pin (``--hash=``, ``# via``); returns whether a via list is open."""
    if line.startswith("--hash="):
        algo, _, digest = line[len("--hash="):].rstrip("\\ ").partition(":")
        if algo == "sha256":
            hashes.append(digest.strip())
    elif line.startswith("# via"):
        in_via = True
        if rest := line[len("# via"):].strip():
            via.append(rest)
    elif line.startswith("#") and in_via:
        via.append(line.lstrip("# ").strip())
    return in_via


def _pin_line(line: str) -> Pinned:
    from packaging.utils import canonicalize_name

    m = _PIN.match(line)
    if not m:
        raise ToolError(f"unexpected line in the compiled requirements: '{redact(line)}'.",
                        hint="This is a bug in envbuild's engine adapter; please report it.")
    extras = tuple(e.strip() for e in (m.group("extras") or "").split(",") if e.strip())
    return Pinned(str(canonicalize_name(m.group("name"))), m.group("version"),
                  marker=(m.group("marker") or "").strip() or None, extras=extras)


def parse_compiled(text: str) -> list[Pinned]:
    """Parse pip-tools style output (``name==v \\`` / ``--hash=sha256:..`` / ``# via``).

    Raises:
        ToolError: a requirement line is not a plain ``==`` pin (the engine misbehaved).
    """
    pins: list[Pinned] = []
    cur: Pinned | None = None
    hashes: list[str] = []
    via: list[str] = []
    in_via = False

    def flush() -> None:
        if cur is not None:
            pins.append(Pinned(cur.name, cur.version, tuple(hashes), tuple(via), cur.marker, cur.extras))

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if raw.startswith((" ", "\t")):
            in_via = _continuation(line, hashes, via, in_via)
        elif line.startswith(("#", "-")):
            in_via = False
        else:
            flush()
            hashes, via, in_via = [], [], False
            cur = _pin_line(line)
    flush()
    return pins


def _explain(stderr: str) -> list[str]:
    lines = [ln.rstrip() for ln in stderr.splitlines()]
    start = next((i for i, ln in enumerate(lines) if "No solution found" in ln), 0)
    body = [ln.strip(" ×╰─▶") .strip() for ln in lines[start:] if ln.strip()]
    return [b for b in body if b][:40]


def compile_requirements(opts: CompileOptions, *, cache_dir: str | None = None, previous: str | None = None,
                         timeout: float = 1800) -> tuple[str, list[Pinned]]:
    """Run ``uv pip compile --generate-hashes`` for the target; return (raw output, pins).

    ``previous`` is an earlier output: uv keeps its pins where the inputs still allow them.

    Raises:
        ConflictError: no set of versions satisfies the inputs (uv's explanation attached).
        ToolError: uv is missing or failed for another reason (network, build failure).
    """
    out = _compile(opts, ["--generate-hashes"], "requirements.txt", previous, cache_dir, timeout)
    return out, parse_compiled(out)


def compile_pylock(opts: CompileOptions, *, cache_dir: str | None = None, previous: str | None = None,
                   timeout: float = 1800) -> tuple[str, list[PylockPackage]]:
    """Run ``uv pip compile --format pylock.toml``: pins plus the target's file URLs and hashes.

    ``previous`` is an earlier pylock.toml: uv prefers its pins (as pip-compile does with an
    existing output file), so a re-lock changes nothing unless the inputs force it, and it is
    faster because uv need not look at newer releases.

    Raises:
        ConflictError: no set of versions satisfies the inputs (uv's explanation attached).
        ToolError: uv is missing or failed for another reason (network, build failure).
    """
    out = _compile(opts, ["--format", "pylock.toml"], "pylock.toml", previous, cache_dir, timeout)
    return out, parse_pylock(out)


def _index_args(opts: CompileOptions, tmp: Path) -> tuple[list[str], dict[str, str]]:
    """uv's index flags with credentials kept off its command line.

    A URL with ``user:password@`` becomes a named index (``--default-index envbuild0=URL``) whose
    credentials uv reads from ``UV_INDEX_ENVBUILD0_USERNAME/PASSWORD``; a find-links page with
    credentials gets them from a netrc file in the temp dir (``NETRC``).  Without any credentials
    the plain flags are passed as before.

    Raises:
        InputError: find-links credentials a netrc file cannot hold (whitespace or a quote).
    """
    urls = ([opts.index_url] if opts.index_url else []) + list(opts.extra_index_urls)
    if not any(split_credentials(u)[1] is not None for u in [*urls, *opts.find_links]):
        args = ["--index-url", opts.index_url] if opts.index_url else []
        for u in opts.extra_index_urls:
            args += ["--extra-index-url", u]
        for u in opts.find_links:
            args += ["--find-links", u]
        return args, {}
    args, env = [], {}
    for i, u in enumerate(urls):
        clean, user, password = split_credentials(u)
        name = f"envbuild{i}"
        flag = "--default-index" if (i == 0 and opts.index_url) else "--index"
        args += [flag, f"{name}={clean}"]
        if user is not None:
            env[f"UV_INDEX_{name.upper()}_USERNAME"] = user
            env[f"UV_INDEX_{name.upper()}_PASSWORD"] = password or ""
    netrc = []
    for u in opts.find_links:
        clean, user, password = split_credentials(u)
        args += ["--find-links", clean]
        if user is not None:
            host = urlsplit(clean).hostname or ""
            if any(c.isspace() or c in "\"'" for c in f"{user}{password or ''}"):
                raise InputError("a find-links password with whitespace or a quote cannot be passed to uv.",
                                 field="find_links",
                                 hint="Put the credentials in ~/.netrc instead of the URL.")
            netrc.append(f"machine {host} login {user} password {password or ''}\n")
    if netrc:
        f = tmp / "netrc"
        f.write_text("".join(netrc))
        f.chmod(0o600)
        env["NETRC"] = str(f)
    return args, env


@dataclass(frozen=True)
class _Inputs:
    """Everything one ``uv pip compile`` run's result depends on, besides the indexes and the clock."""

    opts: CompileOptions
    fmt: tuple[str, ...]
    out_name: str
    previous: str | None
    cache_dir: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"opts": dataclasses.asdict(self.opts), "fmt": list(self.fmt), "out_name": self.out_name,
                "previous": self.previous, "cache_dir": self.cache_dir}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Inputs:
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d["opts"].items()}
        opts = CompileOptions(**kw)
        return cls(opts, tuple(d["fmt"]), str(d["out_name"]), d["previous"], d["cache_dir"])


class _Run:
    """One started ``uv pip compile``: its temp dir (inputs and output) and its process."""

    def __init__(self, inputs: _Inputs) -> None:
        self.inputs = inputs
        self._tmp = tempfile.TemporaryDirectory(prefix="envbuild-uv-")
        try:
            cmd, env = self._prepare(Path(self._tmp.name))
            # stderr is a pipe: communicate() wakes when uv exits (wait(timeout) would poll every 50 ms)
            self.proc = subprocess.Popen(cmd, cwd=self._tmp.name, env={**os.environ, **env},
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True, errors="replace")
        except FileNotFoundError:
            self.close()
            raise ToolError("'uv' is not installed or not on PATH.", field="uv",
                            hint="Install uv and try again.") from None
        except BaseException:
            self.close()
            raise

    def _prepare(self, tmp: Path) -> tuple[list[str], dict[str, str]]:
        opts = self.inputs.opts
        req_in = tmp / "requirements.in"
        req_in.write_text("\n".join(opts.requirements) + "\n")
        # uv reads an existing output file as pin preferences.
        self.out_file = tmp / self.inputs.out_name
        if self.inputs.previous:
            self.out_file.write_text(self.inputs.previous)
        cmd = [uv_bin(), "pip", "compile", str(req_in), *self.inputs.fmt, "-o", str(self.out_file),
               "--no-header", "--quiet", "--color", "never", "--no-strip-markers"]
        if opts.constraints:
            cons = tmp / "constraints.txt"
            cons.write_text("\n".join(opts.constraints) + "\n")
            cmd += ["--constraint", str(cons)]
        if opts.python_version:
            cmd += ["--python-version", opts.python_version]
        if opts.python_platform:
            cmd += ["--python-platform", opts.python_platform]
        idx_args, auth_env = _index_args(opts, tmp)
        cmd += idx_args
        if opts.index_strategy:
            cmd += ["--index-strategy", opts.index_strategy]
        if opts.refresh:
            cmd += ["--refresh"]
        cmd += ["--only-binary", ":all:"] * opts.only_binary
        cmd += [x for n in opts.no_binary for x in ("--no-binary", n)]
        env = {"UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never", **auth_env,
               # An index that accepts connections but never answers fails in ~10 s, not 52 s (uv's
               # default 30 s read timeout, 3 retries); one retry is kept for flaky links.
               "UV_HTTP_TIMEOUT": os.environ.get("UV_HTTP_TIMEOUT", "3"),
               "UV_HTTP_RETRIES": os.environ.get("UV_HTTP_RETRIES", "1")}
        if self.inputs.cache_dir:
            env["UV_CACHE_DIR"] = self.inputs.cache_dir
        self.cmd = cmd
        return cmd, env

    def result(self, timeout: float) -> str:
        """uv's output file; its failure explained (no solution, an unreadable index, anything else)."""
        try:
            try:
                _, stderr = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise ToolError(f"'{redact(shlex.join(self.cmd))}' did not finish within {timeout:.0f} s.",
                                field="uv") from None
            if self.proc.returncode != 0:
                raise _failure(redact(stderr or ""), self.proc.returncode)
            return self.out_file.read_text()
        finally:
            self.close()

    def close(self) -> None:
        """Stop uv if it still runs and remove the temp dir (idempotent)."""
        proc = getattr(self, "proc", None)
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
        self._tmp.cleanup()


def _failure(stderr: str, returncode: int) -> EnvbuildError:
    if "No solution found" in stderr:
        reasons = _explain(stderr)
        return ConflictError(
            "uv found no set of versions that satisfies the requirements for the target: "
            + " ".join(reasons[:12]),
            conflicts=reasons,
            hint="Relax a pin, or check the target's Python version and platform.",
        )
    tail = "\n".join(stderr.strip().splitlines()[-12:])
    if any(w in stderr for w in ("dns error", "Failed to fetch", "Connect", "timed out")):
        return FetchError(
            f"uv could not read an index:\n{tail}", field="indexes",
            hint="Check the network, or point --index-url / --pytorch-index / --openmmlab-index "
                 "at reachable mirrors.",
        )
    return ToolError(f"uv pip compile failed (exit {returncode}):\n{tail}", field="uv",
                     hint="'uv pip compile' with the same inputs reproduces it.")


def _compile(opts: CompileOptions, fmt: list[str], out_name: str, previous: str | None,
             cache_dir: str | None, timeout: float) -> str:
    inputs = _Inputs(opts, tuple(fmt), out_name, previous, cache_dir)
    run = _EARLY.take(inputs) or _Run(inputs)
    out = run.result(timeout)
    _EARLY.remember(inputs, out)
    return out


# --- early start: a re-lock's uv run begins before the CLI has parsed its options ---------------


class _Early:
    """The uv run the last ``envbuild lock`` with the same command line asked for first, started at once.

    ``envbuild lock`` spends ~0.5 s importing and parsing before it knows uv's inputs, and a warm uv
    run takes about as long.  The CLI calls ``start(key)`` first thing (``key``: the command line and
    the working directory); when an earlier run with that key left a record, its uv run is started
    then, with the lock it wrote as the preferences (what a re-lock reads).  ``_compile`` adopts it
    only when the inputs it computed are exactly the recorded ones; any other run is stopped and uv
    runs as usual, so the result is always that of the inputs given.  A process records its first
    run (never one with credentials in it).
    """

    def __init__(self) -> None:
        self.record: Path | None = None
        self.known: dict[str, Any] | None = None
        self.run: _Run | None = None

    def start(self, key: Sequence[str]) -> None:
        import atexit
        import hashlib
        import json

        digest = hashlib.sha256(json.dumps(list(key)).encode()).hexdigest()[:32]
        self.record = cache_home() / "uv-early" / f"{digest}.json"
        try:
            self.known = json.loads(self.record.read_text())
            assert isinstance(self.known, dict)
            d = {**self.known["inputs"]}
            # The re-lock reads back the lock this run wrote, unless it ignores it (--upgrade).
            d["previous"] = None if d["opts"]["refresh"] else self.known["output"]
            self.run = _Run(_Inputs.from_dict(d))
        except (OSError, ValueError, KeyError, TypeError, AssertionError, EnvbuildError):
            return
        atexit.register(self.stop)

    def take(self, inputs: _Inputs) -> _Run | None:
        """The early run when it was started with exactly ``inputs`` (any other is stopped)."""
        run, self.run = self.run, None
        if run is not None and run.inputs != inputs:
            run.close()
            run = None
        return run

    def remember(self, inputs: _Inputs, output: str) -> None:
        import json

        from envbuild._fs import atomic_write

        record, self.record = self.record, None  # the first run only
        if record is None:
            return
        data = {"inputs": {**inputs.to_dict(), "previous": None}, "output": output}
        text = json.dumps(data, sort_keys=True)
        if redact(text) != text or data == self.known:
            return  # a credential never goes to disk; an unchanged record is not rewritten
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(record, text, mode=0o600)
            _prune(record.parent, keep=_EARLY_RECORDS)
        except OSError:
            pass  # a speed-up only

    def stop(self) -> None:
        run, self.run = self.run, None
        if run is not None:
            run.close()


_EARLY = _Early()


# one record per distinct lock command line; the least recently written beyond this are dropped
_EARLY_RECORDS = 64


def _prune(directory: Path, keep: int) -> None:
    records = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in records[keep:]:
        old.unlink(missing_ok=True)


def start_early(key: Sequence[str]) -> None:
    """Start the uv run an earlier ``envbuild lock`` with the same ``key`` (its command line) began with."""
    _EARLY.start(key)


