"""uv adapter: ``uv pip compile`` for a target Python/platform, and the pip-tools output parser."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

from envbuild.errors import ConflictError, FetchError, InputError, ToolError
from envbuild.tools._run import ToolFailed, redact, run, split_credentials

__all__ = [
    "CompileOptions",
    "Pinned",
    "PylockFile",
    "PylockPackage",
    "compile_pylock",
    "compile_requirements",
    "parse_compiled",
    "parse_pylock",
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
            continue
        if line.startswith(("#", "-")):
            in_via = False
            continue
        flush()
        hashes, via, in_via = [], [], False
        m = _PIN.match(line)
        if not m:
            raise ToolError(f"unexpected line in the compiled requirements: '{redact(line)}'.",
                            hint="This is a bug in envbuild's engine adapter; please report it.")
        extras = tuple(e.strip() for e in (m.group("extras") or "").split(",") if e.strip())
        cur = Pinned(str(canonicalize_name(m.group("name"))), m.group("version"),
                     marker=(m.group("marker") or "").strip() or None, extras=extras)
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


def _compile(opts: CompileOptions, fmt: list[str], out_name: str, previous: str | None,
             cache_dir: str | None, timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="envbuild-uv-") as tmp:
        req_in = Path(tmp) / "requirements.in"
        req_in.write_text("\n".join(opts.requirements) + "\n")
        # uv reads an existing output file as pin preferences.
        out_file = Path(tmp) / out_name
        if previous:
            out_file.write_text(previous)
        cmd = [uv_bin(), "pip", "compile", str(req_in), *fmt, "-o", str(out_file), "--no-header",
               "--quiet", "--color", "never", "--no-strip-markers"]
        if opts.constraints:
            cons = Path(tmp) / "constraints.txt"
            cons.write_text("\n".join(opts.constraints) + "\n")
            cmd += ["--constraint", str(cons)]
        if opts.python_version:
            cmd += ["--python-version", opts.python_version]
        if opts.python_platform:
            cmd += ["--python-platform", opts.python_platform]
        idx_args, auth_env = _index_args(opts, Path(tmp))
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
        if cache_dir:
            env["UV_CACHE_DIR"] = cache_dir
        try:
            run(cmd, env=env, timeout=timeout, tool="uv", cwd=tmp)
        except ToolFailed as exc:
            if "No solution found" in exc.stderr:
                reasons = _explain(exc.stderr)
                raise ConflictError(
                    "uv found no set of versions that satisfies the requirements for the target: "
                    + " ".join(reasons[:12]),
                    conflicts=reasons,
                    hint="Relax a pin, or check the target's Python version and platform.",
                ) from None
            tail = "\n".join(exc.stderr.strip().splitlines()[-12:])
            if any(w in exc.stderr for w in ("dns error", "Failed to fetch", "Connect", "timed out")):
                raise FetchError(
                    f"uv could not read an index:\n{tail}", field="indexes",
                    hint="Check the network, or point --index-url / --pytorch-index / --openmmlab-index "
                         "at reachable mirrors.",
                ) from None
            raise ToolError(
                f"uv pip compile failed (exit {exc.returncode}):\n{tail}", field="uv",
                hint="'uv pip compile' with the same inputs reproduces it.",
            ) from None
        return out_file.read_text()
