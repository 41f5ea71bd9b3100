"""Lock a resolution: pin the whole tree for the TARGET's Python and platform, with hashes.

``lock`` runs the resolver, hands the pip part to an engine (uv by default: one
``uv pip compile --format pylock.toml`` call gives pins, the target's file URLs and their
sha256; pip-tools as the compatible fallback), resolves git refs to commits, finds the
sdists of packages built on the target, solves the conda part with py-rattler, and writes
``lockfiles/NAME/`` atomically (see docs/CONTRACTS.md).  Nothing in the output depends on
the time or on this machine, so re-locking an unchanged spec rewrites identical bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from envbuild import __version__, cache_home
from envbuild._fs import atomic_write, check_output_dir, one_line, output_dir, path_component
from envbuild._http import TIMEOUT, http_session
from envbuild.errors import ConflictError, FetchError, InputError
from envbuild.lockfile import LOCK_FILE, Lock, TargetPlatform
from envbuild.managers import CONDA_MANAGERS, get_manager
from envbuild.models import LockedArtifact, Profile, Resolution, SourceBuild
from envbuild.spec import Spec
from envbuild.tools._run import redact
from envbuild.tools.git import pip_git_url

__all__ = [
    "ENGINES",
    "IndexClient",
    "IndexFile",
    "LockResult",
    "TargetPlatform",
    "lock",
    "resolve_for_lock",
    "target_platform",
]

ENGINES = ("uv", "pip-tools")
# The manylinux levels `uv --python-platform` accepts (it has no 2_18..2_27 names).
_UV_GLIBC_MINORS = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)
_ARCHES = {"x86_64": "linux-64", "aarch64": "linux-aarch64"}


# --- target platform ----------------------------------------------------------------------------


def target_platform(profile: Profile) -> TargetPlatform:
    """Map a profile to manylinux/uv/conda platform names (glibc unknown: manylinux2014).

    Raises:
        InputError: a non-Linux or unsupported architecture target.
    """
    if profile.os != "linux":
        raise InputError(f"cannot lock for os '{profile.os}'.", field="os",
                         hint="envbuild locks CUDA environments for Linux targets only.")
    if profile.arch not in _ARCHES:
        raise InputError(f"cannot lock for architecture '{profile.arch}'.", field="arch",
                         hint=f"Supported: {', '.join(_ARCHES)}.")
    minor = 17
    if profile.glibc_version:
        m = re.match(r"2\.(\d+)", profile.glibc_version)
        if m:
            # The highest level uv can name that the target's glibc still runs.
            minor = max([g for g in _UV_GLIBC_MINORS if g <= int(m.group(1))], default=17)
    return TargetPlatform(
        os="linux", arch=profile.arch, glibc=f"2.{minor}",
        pip_platform=f"manylinux_2_{minor}_{profile.arch}",
        uv_platform=f"{profile.arch}-manylinux_2_{minor}", conda_subdir=_ARCHES[profile.arch],
    )


# --- package index client (PEP 691 JSON / PEP 503 HTML / find-links pages) --------------------


@dataclass(frozen=True)
class IndexFile:
    """A file an index lists for a project."""

    url: str
    filename: str
    sha256: str | None = None
    yanked: bool = False

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    def project_version(self) -> tuple[str, Version] | None:
        """(normalised name, version) from the file name, or None for files pip would skip."""
        try:
            if self.is_wheel:
                name, ver, _, _ = parse_wheel_filename(self.filename)
                return str(name), ver
            if self.filename.endswith((".tar.gz", ".zip")):
                name, ver = parse_sdist_filename(self.filename)
                return str(name), ver
        except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
            return None
        return None


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            a = dict(attrs)
            if a.get("href"):
                self.links.append((a["href"] or "", "data-yanked" in a))


def _file_from_link(base: str, href: str, yanked: bool) -> IndexFile:
    url, frag = urldefrag(urljoin(base, href))
    sha = None
    if frag.startswith("sha256="):
        sha = frag[len("sha256="):].lower()
    return IndexFile(url=url, filename=unquote(urlsplit(url).path.rsplit("/", 1)[-1]), sha256=sha,
                     yanked=yanked)


class IndexClient:
    """Reads project pages of indexes and find-links pages (each page fetched once)."""

    def __init__(self, index_urls: Sequence[str], find_links: Sequence[str], *,
                 timeout: tuple[float, float] = TIMEOUT) -> None:
        self.index_urls = [u.rstrip("/") for u in index_urls]
        self.find_links = list(find_links)
        self.timeout = timeout
        self._session: Any = None
        self._flat: list[IndexFile] | None = None

    @property
    def session(self) -> Any:
        # requests is imported on first use: the uv engine usually needs no index request at all.
        if self._session is None:
            self._session = http_session(16, "envbuild-lock")
        return self._session

    def _get(self, url: str, accept: str | None = None) -> tuple[str, str, str] | None:
        """(final url, content type, text); None for 404.  Local paths/file:// are read directly."""
        import requests

        if url.startswith("file://") or url.startswith("/"):
            path = Path(unquote(urlsplit(url).path) if url.startswith("file://") else url)
            if path.is_dir():
                links = "".join(f'<a href="{p.name}">{p.name}</a>' for p in sorted(path.iterdir()))
                return path.as_uri() + "/", "text/html", links
            if not path.is_file():
                return None
            return path.as_uri(), "text/html", path.read_text(errors="replace")
        headers = {"Accept": accept} if accept else {}
        try:
            resp = self.session.get(url, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise FetchError(f"cannot read {redact(url)}: {redact(str(exc))}",
                             hint="Check the index URL and the network (or the mirror settings).") from None
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise FetchError(f"{redact(url)} answered HTTP {resp.status_code}.",
                             hint="Check the index URL and its credentials.")
        return resp.url, resp.headers.get("Content-Type", ""), resp.text

    def flat_files(self) -> list[IndexFile]:
        """Every file linked from the find-links pages."""
        if self._flat is None:
            files: list[IndexFile] = []
            for page in self.find_links:
                got = self._get(page)
                if got is None:
                    raise FetchError(f"the find-links page {redact(page)} does not exist.",
                                     field="find_links", hint="Check the OpenMMLab mirror URL.")
                parser = _Links()
                parser.feed(got[2])
                files += [_file_from_link(got[0], h, y) for h, y in parser.links]
            self._flat = files
        return self._flat

    def files(self, project: str) -> list[IndexFile]:
        """Files for ``project`` from find-links pages, then every index, in that order."""
        name = str(canonicalize_name(project))
        out = [f for f in self.flat_files() if (pv := f.project_version()) and pv[0] == name]
        accept = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
                  "text/html;q=0.1")
        for base in self.index_urls:
            got = self._get(f"{base}/{name}/", accept)
            if got is None:
                continue
            final, ctype, text = got
            if "json" in ctype:
                data = json.loads(text)
                for f in data.get("files", []):
                    url = urljoin(final, f["url"])
                    out.append(IndexFile(url=url, filename=f["filename"],
                                         sha256=(f.get("hashes") or {}).get("sha256"),
                                         yanked=bool(f.get("yanked"))))
            else:
                parser = _Links()
                parser.feed(text)
                out += [_file_from_link(final, h, y) for h, y in parser.links]
        return out

    def sha256(self, f: IndexFile) -> str:
        """The file's sha256: from the index, else by downloading it once (cached by URL)."""
        if f.sha256:
            return f.sha256
        cache = _hash_cache_path()
        known: dict[str, str] = {}
        if cache.exists():
            try:
                known = json.loads(cache.read_text())
            except (OSError, json.JSONDecodeError):
                known = {}
        key = redact(f.url)
        if key in known:
            return known[key]
        h = hashlib.sha256()
        if f.url.startswith("file://"):
            h.update(Path(unquote(urlsplit(f.url).path)).read_bytes())
        else:
            with self.session.get(f.url, stream=True, timeout=self.timeout) as resp:
                if resp.status_code != 200:
                    raise FetchError(f"cannot download {redact(f.url)} to hash it (HTTP {resp.status_code}).")
                for chunk in resp.iter_content(1 << 20):
                    h.update(chunk)
        known[key] = h.hexdigest()
        atomic_write(cache, json.dumps(known, indent=1, sort_keys=True))
        return known[key]


def _hash_cache_path() -> Path:
    return cache_home() / "url-sha256.json"


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Locked:
    """One requirements.txt entry: the artifact fetch takes and every target file's hash."""

    artifact: LockedArtifact
    hashes: tuple[str, ...]


@dataclass(frozen=True)
class LockResult:
    """What ``lock`` wrote, for the CLI table and ``--json``."""

    lock: Lock
    out_dir: Path
    files: tuple[str, ...]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for a in self.lock.artifacts:
            k = "source" if a.build == "source" else a.kind
            kinds[k] = kinds.get(k, 0) + 1
        return {
            "ok": True,
            "name": self.lock.name,
            "out_dir": str(self.out_dir),
            "files": list(self.files),
            "engine": self.lock.engine,
            "python": self.lock.python,
            "platform": self.lock.platform.to_dict(),
            "cuda": self.lock.cuda,
            "counts": dict(sorted(kinds.items())),
            "packages": {a.name: a.version for a in self.lock.artifacts if a.kind != "conda"},
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
        }


# --- resolution ---------------------------------------------------------------------------------


def resolve_for_lock(spec: Spec, target: Profile, indexes: Mapping[str, str], *,
                     prefer_pypi: bool = True, native_driver_only: bool = False,
                     today: dt.date | None = None) -> Resolution:
    """Run ``envbuild.resolve.resolve`` for the spec's requirements (``today`` dates its knowledge).

    Raises:
        ConflictError: the resolver found no consistent set (its explanations attached).
    """
    from envbuild import resolve as resolver
    from envbuild.target import host_python

    # envbuild's own Python first when the target names none: the lock engines can run for it
    res: Resolution = resolver.resolve(spec.resolver_requirements(), target, indexes=dict(indexes),
                                       prefer_pypi=prefer_pypi, native_driver_only=native_driver_only,
                                       cuda=spec.cuda, prefer_python=host_python(), today=today)
    hint = "Change a pin or the target (see 'envbuild resolve' for the full explanation)."
    return resolver.check(res, path=spec.path, hint=hint)


def _python_of(res: Resolution, spec: Spec, target: Profile) -> str:
    for v in (res.python, spec.python, target.python_version):
        if v:
            m = re.match(r"(\d+)\.(\d+)", str(v))
            if m:
                return f"{m.group(1)}.{m.group(2)}"
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


# --- the stage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _EngineInput:
    """What the lock engines get: the indexes (redacted only when written) and the requirements."""

    primary: str
    extras: list[str]
    find_links: list[str]
    reqs: list[str]


@dataclass
class _Pinned:
    """What the engines and the side solves pinned, before it becomes a ``Lock``."""

    locked: list[_Locked]
    source_builds: list[_Locked]
    git: list[LockedArtifact]
    conda: list[LockedArtifact]
    conda_lines: list[str]
    pylock: str = ""


def _check_inputs(spec: Spec, idx: Mapping[str, str], engine: str, out: Path) -> None:
    """Refused before any work: the name becomes a directory, the URLs lines of requirements.txt."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine '{engine}'.", field="--engine",
                         hint=f"Use one of: {', '.join(ENGINES)}.")
    path_component(spec.name, field="name", path=spec.path)
    for key, url in idx.items():
        _check_url(url, f"indexes.{key}", spec.path)
    for g in spec.git:
        _check_url(g.url, "git", spec.path)
    check_output_dir(out)


def _engine_input(spec: Spec, res: Resolution, idx: Mapping[str, str]) -> _EngineInput:
    primary = idx["pypi"].rstrip("/")
    extras = list(dict.fromkeys(u.rstrip("/") for u in [*res.index_urls, *spec.extra_index_urls]
                                if u.rstrip("/") != primary))
    find_links = list(dict.fromkeys([*res.find_links, *spec.find_links]))
    # Source builds are compiled on the target; only their own requirements go to the engine.
    sb_names = {str(canonicalize_name(sb.name)) for sb in res.source_builds}
    reqs = [r for r in res.requirements if _req_name(r) not in sb_names]
    for sb in res.source_builds:
        reqs += [r for r in sb.requires if _req_name(r) not in sb_names]
    for u in [*extras, *find_links]:
        _check_url(u, "indexes", spec.path)
    return _EngineInput(primary, extras, find_links, list(dict.fromkeys(reqs)))


def _pin(spec: Spec, target: Profile, res: Resolution, python: str, plat: TargetPlatform, inp: _EngineInput,
         engine: str, cache_dir: str | None, previous: str | None, upgrade: bool, warnings: list[str],
         timings: dict[str, float]) -> _Pinned:
    """Run the engine on the requirements (with each git package's own) beside the side solves."""
    client = IndexClient([*inp.extras, inp.primary], inp.find_links)
    reqs = list(inp.reqs)
    t1 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        # The sdists of source builds and the conda solve overlap the git reads and the engine run.
        sb_f = pool.submit(_lock_source_builds, client, res.source_builds)
        conda_f = (pool.submit(_lock_conda, spec, python, plat, target)
                   if spec.manager in CONDA_MANAGERS else None)
        # The git packages' own requirements are the engine's input too, so their commits come first.
        git_arts = _lock_git(spec)
        git_names = frozenset(a.name for a in git_arts)
        # Each git package's requirements, read from its metadata at the locked commit, are locked
        # (hashed, fetched) like any other package; one uv cannot read here goes to uv as a URL.
        for g, a in zip(spec.git, git_arts, strict=True):
            got = _git_requirements(g, a)
            reqs += got if got is not None else [_git_input(g, a)]
        # An upgrade must see releases newer than the cached index pages.
        opts = dataclasses.replace(_options(reqs, python, plat, inp.primary, inp.extras, inp.find_links),
                                   refresh=upgrade, constraints=tuple(spec.constraints), only_binary=True,
                                   no_binary=tuple(sorted({*spec.allow_sdist, *git_names})))
        pylock = ""
        if engine == "uv":
            pylock, locked, relaxed = _engine_uv_relaxing(opts, spec, res, python, plat, client, cache_dir,
                                                          previous, git_names)
            for name, (was, now) in relaxed.items():
                warnings.append(f"{name} {was} (the resolver's pick) has no wheel for {plat.pip_platform}: "
                                f"locked {name} {now}, the newest version with one.")
        else:
            locked = _engine_piptools(opts, python, plat, client, cache_dir, previous)
        timings["engine"] = time.perf_counter() - t1
        _check_spec_hashes(spec, locked)
        conda_arts, conda_lines = conda_f.result() if conda_f else ([], [])
        pinned = _Pinned(locked, sb_f.result(), git_arts, conda_arts, conda_lines, pylock)
    timings["extras"] = time.perf_counter() - t1 - timings["engine"]
    return pinned


def _lock_record(spec: Spec, target: Profile, res: Resolution, python: str, plat: TargetPlatform,
                 inp: _EngineInput, idx: Mapping[str, str], pinned: _Pinned, engine: str, cmd: str) -> Lock:
    artifacts = sorted([*(x.artifact for x in [*pinned.locked, *pinned.source_builds]), *pinned.git,
                        *pinned.conda], key=lambda a: (a.kind, a.name, a.filename))
    spec_dict = json.loads(redact(json.dumps({**spec.to_dict(), "indexes": dict(sorted(idx.items()))})))
    canonical = json.dumps(spec_dict, sort_keys=True, separators=(",", ":"))
    return Lock(
        name=spec.name, manager=spec.manager, python=python,
        platform=plat, target=target, resolution=_dated_out(res), artifacts=tuple(artifacts),
        index_urls=tuple(redact(u) for u in [inp.primary, *inp.extras]),
        find_links=tuple(redact(u) for u in inp.find_links),
        conda_channels=(tuple(redact(c) for c in spec.conda_channels)
                        if spec.manager in CONDA_MANAGERS else ()),
        spec=spec_dict, spec_hash=hashlib.sha256(canonical.encode()).hexdigest(), command=redact(cmd),
        generated_by=f"envbuild {__version__}", engine=engine,
    )


def _lock_texts(lk: Lock, cmd: str, res: Resolution, inp: _EngineInput, pinned: _Pinned) -> dict[str, str]:
    """Every file of the lock directory: the lock JSON and the installers' inputs derived from it."""
    head = _header(lk, cmd)
    texts: dict[str, str] = {
        LOCK_FILE: lk.dumps(),
        "requirements.txt": _requirements_txt(head, inp.primary, inp.extras, inp.find_links, pinned.locked),
        "source-builds.txt": _source_builds_txt(head, res, pinned.source_builds),
        "git.txt": head + "".join(f"{a.name} @ git+{pip_git_url(a.url)}@{a.commit}"
                                  + (f"#subdirectory={a.subdir}" if a.subdir else "") + "\n"
                                  for a in pinned.git),
    }
    if pinned.pylock:
        # uv's PEP 751 lock of the same pins (target files only); also the next re-lock's preferences.
        texts["pylock.toml"] = pinned.pylock
    if lk.manager in CONDA_MANAGERS:
        texts["conda.txt"] = head + f"# platform: {lk.platform.conda_subdir}\n@EXPLICIT\n" + "".join(
            f"{ln}\n" for ln in pinned.conda_lines)
    return texts


def lock(
    spec: Spec,
    target: Profile,
    *,
    out_dir: str | os.PathLike[str],
    engine: str = "uv",
    indexes: Mapping[str, str] | None = None,
    resolution: Resolution | None = None,
    command: str | None = None,
    cache_dir: str | None = None,
    upgrade: bool = False,
    prefer_pypi: bool = True, native_driver_only: bool = False, today: dt.date | None = None,
) -> LockResult:
    """Lock ``spec`` for ``target`` into ``out_dir`` (written whole or not at all).

    ``indexes`` override the spec's mirrors (keys pypi, pytorch, openmmlab); ``resolution``
    skips the resolver (tests, or a caller that already resolved).  An existing lock in
    ``out_dir`` gives the engine its pins as preferences (kept unless the inputs force a
    change, like pip-compile); ``upgrade`` ignores them.  ``prefer_pypi=False`` takes torch from
    the PyTorch index even when PyPI's default wheel is the same CUDA build.

    Raises:
        InputError: unknown engine, or pip-tools asked to lock for another Python.
        ConflictError: the resolver or the engine found no consistent set.
        ToolError / FetchError: uv, git, rattler or an index failed.
    """
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    idx = {**spec.indexes, **dict(indexes or {})}
    out = Path(out_dir)
    _check_inputs(spec, idx, engine, out)
    plat = target_platform(target)
    res = (resolution if resolution is not None
           else resolve_for_lock(spec, target, idx, prefer_pypi=prefer_pypi,
                                 native_driver_only=native_driver_only, today=today))
    from envbuild.resolve import check

    check(res, path=spec.path)
    timings["resolve"] = time.perf_counter() - t0
    python = _python_of(res, spec, target)
    warnings: list[str] = list(res.warnings)
    if not target.glibc_version:
        warnings.append(f"the target's glibc is unknown: locked for glibc {plat.glibc} "
                        f"({plat.pip_platform} wheels, which every supported Linux runs); newer packages may "
                        "have wheels only for a newer glibc. Run 'envbuild probe' on the target and lock "
                        "with --target PROFILE.")
    inp = _engine_input(spec, res, idx)
    prev_file = out / ("pylock.toml" if engine == "uv" else "requirements.txt")
    previous = prev_file.read_text() if not upgrade and prev_file.is_file() else None
    pinned = _pin(spec, target, res, python, plat, inp, engine, cache_dir, previous, upgrade, warnings,
                  timings)
    cmd = command or _default_command(spec, out, engine)
    lk = _lock_record(spec, target, res, python, plat, inp, idx, pinned, engine, cmd)
    texts = _lock_texts(lk, cmd, res, inp, pinned)
    with output_dir(out) as tmp:
        for fname, text in texts.items():
            # Every byte written passes through redact: no credential reaches any file.
            (tmp / fname).write_text(redact(text))
    timings["total"] = time.perf_counter() - t0
    # The record later stages get is the file as written (redacted, validated, defaults applied),
    # so plan passes it on instead of reading the lock back.
    written = Lock.from_dict(json.loads(redact(texts[LOCK_FILE])), path=str(out / LOCK_FILE))
    return LockResult(lock=written, out_dir=out,
                      files=tuple(sorted(texts)), seconds=timings["total"], timings=timings,
                      warnings=tuple(warnings))


def _check_url(url: str, field: str, path: str | None) -> None:
    """A URL is one token: whitespace or a control character would end a requirements.txt line."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise InputError(f"the URL {one_line(redact(repr(url)))} contains whitespace or a control character.",
                         path=path, field=field,
                         hint="Write the URL on one line without spaces (percent-encode them as %20).")


def _req_name(req: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    return str(canonicalize_name(m.group(1))) if m else req


def _default_command(spec: Spec, out: Path, engine: str) -> str:
    import shlex

    src = ["--spec", spec.path] if spec.path else [*spec.requirements, *(str(g) for g in spec.git)]
    parts = ["envbuild", "lock", *src, "-o", str(out)]
    if engine != "uv":
        parts += ["--engine", engine]
    return shlex.join(parts)


def _header(lk: Lock, cmd: str) -> str:
    cuda = f", CUDA {lk.cuda}" if lk.cuda else ""
    return (
        "#\n"
        f"# This file is autogenerated by envbuild for {one_line(lk.name)}: Python {one_line(lk.python)} on "
        f"{one_line(lk.platform.pip_platform)}{one_line(cuda)}.\n"
        "# To update, run:\n"
        "#\n"
        f"#    {one_line(cmd)}\n"
        "#\n"
    )


def _hash_lines(name: str, version: str, hashes: Sequence[str]) -> str:
    lines = [f"{name}=={version}"] + [f"    --hash=sha256:{h}" for h in hashes]
    return " \\\n".join(lines) + "\n"


def _requirements_txt(head: str, primary: str, extras: Sequence[str], find_links: Sequence[str],
                      locked: Sequence[_Locked]) -> str:
    opts = [f"--index-url {primary}"] + [f"--extra-index-url {u}" for u in extras]
    opts += [f"--find-links {u}" for u in find_links]
    body = "".join(_hash_lines(x.artifact.name, x.artifact.version, x.hashes)
                   for x in sorted(locked, key=lambda x: x.artifact.name))
    return head + "\n".join(opts) + "\n\n" + body


def _source_builds_txt(head: str, res: Resolution, sb: Sequence[_Locked]) -> str:
    lines = [head, "# Built on the target after torch: pip install --no-build-isolation --no-deps\n"]
    for x in sb:
        env: dict[str, str] = next((s.env for s in res.source_builds
                                    if canonicalize_name(s.name) == x.artifact.name), {})
        if env:
            lines.append("# env: " + one_line(" ".join(f"{k}={v}" for k, v in sorted(env.items()))) + "\n")
        lines.append(_hash_lines(x.artifact.name, x.artifact.version, x.hashes))
    return "".join(lines)


# --- engines ------------------------------------------------------------------------------------


def _options(reqs: Sequence[str], python: str, plat: TargetPlatform, primary: str, extras: Sequence[str],
             find_links: Sequence[str]) -> Any:
    from envbuild.tools.uv import CompileOptions

    return CompileOptions(
        requirements=tuple(reqs), python_version=python, python_platform=plat.uv_platform,
        index_url=primary, extra_index_urls=tuple(extras), find_links=tuple(find_links),
        # The PyTorch index also serves numpy, pillow, ... in few versions: uv's default
        # first-index rule would then miss PyPI's; every index here is the user's choice.
        index_strategy="unsafe-best-match" if extras else None,
    )


def _choose(name: str, version: str, files: Sequence[IndexFile], rank: Mapping[Tag, int],
            client: IndexClient, *, kind_hint: str | None = None) -> _Locked | None:
    """Keep the files pip on the target could take; the artifact is the one it would pick."""
    try:
        want = Version(version)
    except InvalidVersion:
        return None
    wheels: list[tuple[int, IndexFile]] = []
    sdist: IndexFile | None = None
    for f in files:
        pv = f.project_version()
        if pv is None or pv[0] != name or pv[1] != want:
            continue
        if f.is_wheel:
            _, _, _, ftags = parse_wheel_filename(f.filename)
            top = min((rank[t] for t in ftags if t in rank), default=None)
            if top is not None:
                wheels.append((top, f))
        elif sdist is None or (f.filename.endswith(".tar.gz") and not sdist.filename.endswith(".tar.gz")):
            sdist = f
    if kind_hint == "sdist":
        wheels = []
    # One entry per file name (an index and a find-links page may list the same file).
    uniq: dict[str, tuple[int, IndexFile]] = {}
    for r, f in sorted(wheels, key=lambda x: (x[0], x[1].filename)):
        uniq.setdefault(f.filename, (r, f))
    if uniq:
        chosen = [f for _, f in uniq.values()]
        hashes = [client.sha256(f) for f in chosen]
        best = chosen[0]
        art = LockedArtifact(name=name, version=version, kind="wheel", url=redact(best.url), sha256=hashes[0],
                             filename=best.filename)
        return _Locked(art, tuple(sorted(set(hashes))))
    if sdist is not None:
        sha = client.sha256(sdist)
        art = LockedArtifact(name=name, version=version, kind="sdist", url=redact(sdist.url), sha256=sha,
                             filename=sdist.filename)
        return _Locked(art, (sha,))
    return None


def _engine_uv(opts: Any, python: str, plat: TargetPlatform, client: IndexClient, cache_dir: str | None,
               previous: str | None, git_names: frozenset[str] = frozenset()) -> tuple[str, list[_Locked]]:
    from envbuild.tools.uv import compile_pylock

    if not opts.requirements:
        return "", []
    rank = {t: i for i, t in enumerate(plat.tags(python))}
    try:
        raw, packages = compile_pylock(opts, cache_dir=cache_dir, previous=previous)
    except ConflictError as exc:
        raise _no_wheel_error(exc, opts, python, plat, client, rank) or exc from None
    out = []
    for p in packages:
        if p.name in git_names and not p.files:
            continue  # the git package itself: locked by its commit (git.txt), built by fetch
        files = [IndexFile(url=f.url, filename=f.filename, sha256=f.sha256 or None) for f in p.files]
        if p.name in opts.no_binary:
            # --allow-sdist: uv resolved it from source; a wheel of that version for the target still wins
            files += client.files(p.name)
        got = _choose(p.name, p.version, files, rank, client)
        if got is None:
            raise FetchError(f"uv pinned {p.name}=={p.version} but listed no file usable on "
                             f"{plat.pip_platform} with Python {python}.",
                             hint="Check the target's Python/glibc, or the indexes that carry this package.")
        out.append(got)
    return raw, out


class _NoWheel(InputError):
    """A requirement with no wheel for the target (``package`` names it)."""

    package: str = ""


# Pins the resolver makes for reasons beyond versions (the CUDA build, mmcv's compiled ops): never relaxed.
_NEVER_RELAX = {"torch", "torchvision", "torchaudio", "mmcv", "mmcv-full"}


def _engine_uv_relaxing(opts: Any, spec: Spec, res: Resolution, python: str, plat: TargetPlatform,
                        client: IndexClient, cache_dir: str | None, previous: str | None,
                        git_names: frozenset[str] = frozenset(),
                        ) -> tuple[str, list[_Locked], dict[str, tuple[str, str]]]:
    """Wheels first: a resolver pin (numpy==X) the user did not ask for that has no wheel for the target
    becomes 'the newest version with one' (<=X, and the user's own specifier); a user's pin stays an error."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    relaxed: dict[str, tuple[str, str]] = {}
    while True:
        try:
            raw, locked = _engine_uv(opts, python, plat, client, cache_dir, previous, git_names)
        except _NoWheel as exc:
            name = exc.package
            pin = next((r for r in opts.requirements if _req_name(r) == name), None)
            user = [Requirement(r) for r in [*spec.requirements, *spec.constraints] if _req_name(r) == name]
            if (pin is None or name in relaxed or name in _NEVER_RELAX or name not in res.packages
                    or any(sp.operator in ("==", "===") for u in user for sp in u.specifier)):
                raise InputError(exc.message, path=spec.path, field=exc.field, hint=exc.hint) from None
            r = Requirement(pin)
            was = str(res.packages[name])
            narrowed = SpecifierSet(f"<={was}")
            for u in user:
                narrowed &= u.specifier
            r.specifier = narrowed
            relaxed[name] = (was, "")
            opts = dataclasses.replace(opts, requirements=tuple(str(r) if x == pin else x
                                                                for x in opts.requirements))
            continue
        for x in locked:
            if x.artifact.name in relaxed:
                relaxed[x.artifact.name] = (relaxed[x.artifact.name][0], x.artifact.version)
                res.packages[x.artifact.name] = x.artifact.version
        return raw, locked, relaxed


def _no_wheel_error(exc: ConflictError, opts: Any, python: str, plat: TargetPlatform, client: IndexClient,
                    rank: Mapping[Tag, int]) -> InputError | None:
    """uv found no wheel-only solution: name the package, the target's tags and its newest wheel."""
    text = " ".join(exc.conflicts) or exc.message
    pattern = r"([A-Za-z0-9][A-Za-z0-9._-]*)[^\s]* has no (?:usable )?wheels"
    names = list(dict.fromkeys(str(canonicalize_name(m.group(1))) for m in re.finditer(pattern, text)))
    if not names:
        return None
    name = names[0]
    newest: Version | None = None
    for f in client.files(name):
        pv = f.project_version()
        if f.is_wheel and pv and not pv[1].is_prerelease and any(
                t in rank for t in parse_wheel_filename(f.filename)[3]):
            newest = pv[1] if newest is None or pv[1] > newest else newest
    tags = plat.tags(python)
    tag_text = f"{tags[0]}, {tags[1]}, ... ({len(tags)} tags, glibc {plat.glibc})"
    req = next((r for r in opts.requirements if _req_name(r) == name), name)
    found = (f"the newest {name} with a wheel for it is {newest}: pin '{name}=={newest}' (or relax the "
             "requirement that excludes it)" if newest else f"no version of {name} has a wheel for it")
    err = _NoWheel(
        f"'{req}' has no wheel for the target (Python {python}: {tag_text}); {found}. envbuild locks "
        "wheels only, so the bundle installs without compilers; a newer glibc in the target's profile may "
        f"have one, or '--allow-sdist {name}' accepts building it from source on the target "
        f"(uv: {text[:240]})",
        field=name,
        hint=f"Pin a version with a wheel, lock with --target PROFILE, or pass --allow-sdist {name}.")
    err.package = name
    return err


def _engine_piptools(opts: Any, python: str, plat: TargetPlatform, client: IndexClient,
                     cache_dir: str | None, previous: str | None) -> list[_Locked]:
    from envbuild.tools import piptools

    if python != piptools.host_python():
        raise InputError(
            f"pip-tools resolves only for the Python it runs in ({piptools.host_python()}), "
            f"not for the target's Python {python}.",
            field="--engine", hint="Use '--engine uv' (the default) to lock for another Python or platform.",
        )
    if not opts.requirements:
        return []
    _, pins = piptools.compile_requirements(opts, cache_dir=cache_dir, previous=previous)
    rank = {t: i for i, t in enumerate(plat.tags(python))}
    with ThreadPoolExecutor(max_workers=16) as pool:
        pages = list(pool.map(lambda p: client.files(p.name), pins))
    out = []
    for p, files in zip(pins, pages, strict=True):
        # pip-compile hashes every platform's files; keep the ones the index says are the target's.
        got = _choose(p.name, p.version, files, rank, client)
        if got is None:
            raise FetchError(f"no file of {p.name}=={p.version} on the indexes fits {plat.pip_platform} "
                             f"with Python {python}.", hint="Check the indexes that carry this package.")
        if p.hashes and not set(got.hashes) <= set(p.hashes):
            raise FetchError(f"the index hashes of {p.name}=={p.version} differ from pip-compile's.",
                             hint="The index changed while locking; run the lock again.")
        out.append(got)
    return out


def _check_spec_hashes(spec: Spec, locked: Sequence[_Locked]) -> None:
    """A requirements file's ``--hash=`` lines name the only files the user accepts."""
    for x in locked:
        want = spec.hashes.get(x.artifact.name)
        if want and not set(x.hashes) & set(want):
            raise InputError(
                f"{x.artifact.name}=={x.artifact.version} was locked, but none of its files for the target "
                f"has a hash the requirements file lists ({', '.join(h[:12] for h in want)}...).",
                path=spec.path, field=x.artifact.name,
                hint="Pin the version those hashes belong to, or update the --hash lines "
                     "(pip hash FILE prints a file's hash).")


def _lock_source_builds(client: IndexClient, builds: Sequence[SourceBuild]) -> list[_Locked]:
    out = []
    for sb in builds:
        name, version = str(canonicalize_name(sb.name)), sb.version
        got = _choose(name, version, client.files(name), {}, client, kind_hint="sdist")
        if got is None:
            raise FetchError(f"no sdist of {name}=={version} (a package built on the target) on "
                             f"{', '.join(redact(u) for u in client.index_urls)}.",
                             hint="Point --index-url at a mirror that carries it.")
        art = dataclasses.replace(got.artifact, build="source", requires=tuple(sb.requires))
        out.append(_Locked(art, got.hashes))
    return out


def _lock_git(spec: Spec) -> list[LockedArtifact]:
    from envbuild.tools.git import resolve_ref

    out = []
    for g in spec.git:
        commit = resolve_ref(g.url, g.ref)
        # subdir of a git artifact: the package's directory inside the repository (pip's #subdirectory=)
        out.append(LockedArtifact(name=str(canonicalize_name(g.name)), version=g.ref or commit[:12],
                                  kind="git", url=redact(g.url), sha256="", filename="", commit=commit,
                                  subdir=g.subdirectory))
    return out


def _git_requirements(g: Any, art: LockedArtifact) -> list[str] | None:
    """The git package's own requirements at ``art.commit``: static ``[project] dependencies``, else
    the metadata pip prepares with this machine's build backend (no index); None when neither works."""
    import subprocess
    import tempfile

    import tomllib
    from packaging.requirements import InvalidRequirement, Requirement

    from envbuild.tools.git import checkout

    assert art.commit is not None
    with tempfile.TemporaryDirectory(prefix="envbuild-gitmeta-") as tmp:
        src = checkout(g.url, art.commit, Path(tmp) / "src")
        pkg = src / g.subdirectory if g.subdirectory else src
        try:
            project = tomllib.loads((pkg / "pyproject.toml").read_text()).get("project", {})
        except (OSError, tomllib.TOMLDecodeError):
            project = {}
        if project and "dependencies" not in project.get("dynamic", []):
            # PEP 621: static metadata, read as written (absent and not dynamic means none)
            deps = [str(d) for d in project.get("dependencies", [])]
        else:
            report = Path(tmp) / "report.json"
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--no-deps",
                 "--ignore-installed", "--no-build-isolation", "--no-index", "--quiet", "--report",
                 str(report), str(pkg)], capture_output=True, text=True, check=False,
                env={**os.environ, "PIP_CONFIG_FILE": os.devnull}, timeout=600)
            if proc.returncode != 0 or not report.is_file():
                return None
            items = json.loads(report.read_text()).get("install", [])
            meta = items[0].get("metadata", {}) if items else {}
            deps = [str(d) for d in meta.get("requires_dist") or []]
    out = []
    for d in deps:
        try:
            r = Requirement(d)
        except InvalidRequirement:
            return None
        if r.marker is not None and "extra" in str(r.marker):
            continue  # only for one of the package's extras
        out.append(d)
    return out


def _git_input(g: Any, art: LockedArtifact) -> str:
    """``NAME @ git+URL@COMMIT[#subdirectory=DIR]`` for the engine (the user's URL, credentials included)."""
    return (f"{art.name} @ git+{pip_git_url(g.url)}@{art.commit}"
            + (f"#subdirectory={g.subdirectory}" if g.subdirectory else ""))


def _lock_conda(spec: Spec, python: str, plat: TargetPlatform, target: Profile
                ) -> tuple[list[LockedArtifact], list[str]]:
    from envbuild.tools.rattler import explicit_lines, solve_conda

    cache = _hash_cache_path().parent / "rattler"
    recs = solve_conda(list(spec.conda_channels), [f"python {python}.*", "pip", *spec.conda_packages],
                       subdir=plat.conda_subdir, glibc=target.glibc_version or plat.glibc,
                       cuda=target.driver_cuda_version, cache_dir=cache)
    arts = [LockedArtifact(name=r.name, version=r.version, kind="conda", url=redact(r.url),
                           sha256=r.sha256 or "", filename=r.filename, subdir=r.subdir) for r in recs]
    return arts, explicit_lines(recs)


# --- CLI helpers ----------------------------------------------------------------------------------


def input_spec(spec_path: Path | None, reqs: Sequence[str], *, manager: str | None = None,
               name: str | None = None, python: str | None = None) -> Spec:
    """The spec from ``--spec FILE`` or bare requirements, with ``--manager``/``--python`` applied.

    Raises:
        SpecError: bad file, bad requirement, unknown manager; or both/neither inputs given.
    """
    from envbuild.errors import SpecError
    from envbuild.spec import load_spec, spec_from_requirements

    if spec_path is not None and reqs:
        raise SpecError("give either --spec FILE or requirements, not both.", field="--spec")
    if spec_path is None and not reqs:
        default = Path("envbuild.toml")
        if not default.exists():
            raise SpecError("nothing to lock.", field="--spec",
                            hint="Pass --spec envbuild.toml or requirements like 'numpy<2 scipy'.")
        spec_path = default
    if spec_path is not None:
        spec = load_spec(spec_path)
    else:
        spec = spec_from_requirements(list(reqs), name=name or "env", python=python,
                                      manager=manager or "venv")
    if manager is not None and manager != spec.manager:
        mgr = get_manager(manager, field="--manager", error=SpecError)
        spec = dataclasses.replace(spec, manager=mgr.name)
    if name:
        spec = dataclasses.replace(spec, name=name)
    if python:
        spec = dataclasses.replace(spec, python=python)
    return spec


def _dated_out(resolution: Resolution) -> Resolution:
    """The resolution as the lock keeps it: the knowledge's checked dates, not the day it was made
    (``today``/``age_days``), so re-locking on another day writes the same bytes."""
    kept = {k: v for k, v in resolution.knowledge.items() if k not in ("today", "age_days")}
    return dataclasses.replace(resolution, knowledge=kept)


def with_allow_sdist(spec: Spec, names: Sequence[str]) -> Spec:
    """``--allow-sdist NAME``: these packages may be locked as source archives (built on the target)."""
    if not names:
        return spec
    for n in names:
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", n):
            raise InputError(f"'{n}' is not a package name.", field="--allow-sdist",
                             hint="Name the package, like '--allow-sdist mmcv-full'.")
    allowed = tuple(dict.fromkeys([*spec.allow_sdist, *(str(canonicalize_name(n)) for n in names)]))
    return dataclasses.replace(spec, allow_sdist=allowed)


def present_lock(result: LockResult, as_json: bool) -> None:
    """Print the locked artifacts as a table (or the result as JSON)."""
    from envbuild.output import console, print_json, styled, table

    if as_json:
        print_json(result.to_dict())
        return
    rows = [(a.name, a.version, "source" if a.build == "source" else a.kind,
             a.commit[:12] if a.commit else a.filename) for a in result.lock.artifacts]
    lk = result.lock
    title = f"{lk.name}: Python {lk.python} on {lk.platform.pip_platform}"
    title += f", CUDA {lk.cuda}" if lk.cuda else ""
    console.print(table(title, ["package", "version", "kind", "file / commit"], rows))
    for w in result.warnings:
        console.print(styled("warning:", "yellow", w), highlight=False)
    console.print(f"wrote {result.out_dir}/ ({', '.join(result.files)}) in {result.seconds:.1f} s "
                  f"with {result.lock.engine}", highlight=False)
