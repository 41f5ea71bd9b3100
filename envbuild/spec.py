"""Read a project's ``envbuild.toml`` (and, as a convenience, requirements.txt / environment.yml).

Layout of ``envbuild.toml``::

    [project]
    name = "echofusion"
    python = "3.7"
    manager = "conda"            # conda | mamba | micromamba | venv
    requirements = ["mmcv-full==1.4.0", "mmdet==2.19.0", "cupy", "numpy"]
    git = ["pypcd @ git+https://github.com/klintan/pypcd.git@master"]

    [conda]                      # optional; only for conda-like managers
    channels = ["conda-forge"]
    packages = ["libgl"]

    [target]                     # optional default target
    profile = "targets/server.json"

    [indexes]                    # optional mirrors
    pypi = "https://pypi.org/simple"
    pytorch = "https://download.pytorch.org/whl"
    openmmlab = "https://download.openmmlab.com/mmcv/dist"
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from envbuild.errors import SpecError
from envbuild.managers import MANAGERS, get_manager
from envbuild.matrix import default_indexes, load_names
from envbuild.models import decode_text, deep_line

__all__ = [
    "MANAGERS",
    "GitRequirement",
    "Manager",
    "Spec",
    "load_spec",
    "parse_requirement",
    "spec_from_requirements",
]

# A manager's name (envbuild.managers.REGISTRY is the list; get_manager checks a name against it).
Manager = str


_TOP_KEYS = {"project", "conda", "target", "indexes"}
_PROJECT_KEYS = {"name", "python", "manager", "requirements", "git"}
_CONDA_KEYS = {"channels", "packages"}
_TARGET_KEYS = {"profile"}


@dataclass(frozen=True)
class GitRequirement:
    """``name @ git+URL@REF``; REF is a branch, tag or commit (resolved to a commit at lock)."""

    name: str
    url: str
    ref: str | None
    subdirectory: str | None = None  # pip's '#subdirectory=DIR': the package's directory in the repository

    def __str__(self) -> str:
        return (f"{self.name} @ git+{self.url}" + (f"@{self.ref}" if self.ref else "")
                + (f"#subdirectory={self.subdirectory}" if self.subdirectory else ""))


@dataclass(frozen=True)
class Spec:
    """A project's environment request, independent of any machine."""

    name: str = "env"
    python: str | None = None
    manager: Manager = "venv"
    requirements: tuple[str, ...] = ()
    git: tuple[GitRequirement, ...] = ()
    conda_channels: tuple[str, ...] = ("conda-forge",)
    conda_packages: tuple[str, ...] = ()
    target_profile: str | None = None
    # pip's index, the PyTorch wheel index and OpenMMLab's wheel pages: envbuild/data (read when needed,
    # so a broken data file is a DataError of the command, not of importing this module)
    indexes: dict[str, str] = field(default_factory=default_indexes)
    path: str | None = None
    # From requirements files and environment.yml (empty for envbuild.toml unless written there):
    constraints: tuple[str, ...] = ()        # '-c FILE' lines: restrict versions, add nothing
    cuda: str | None = None                  # a CUDA version specifier (conda cudatoolkit=11.8 -> ==11.8.*)
    extra_index_urls: tuple[str, ...] = ()   # '--extra-index-url'
    find_links: tuple[str, ...] = ()         # '-f' / '--find-links'
    hashes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # '--hash=sha256:' per package
    allow_sdist: tuple[str, ...] = ()        # '--no-binary NAME': built from source knowingly

    def to_dict(self) -> dict[str, Any]:
        # The file-only fields appear only when set, so digests of existing specs do not change.
        extra: dict[str, Any] = {k: v for k, v in (
            ("constraints", list(self.constraints)), ("cuda", self.cuda),
            ("extra_index_urls", list(self.extra_index_urls)), ("find_links", list(self.find_links)),
            ("hashes", {k: list(v) for k, v in sorted(self.hashes.items())}),
            ("allow_sdist", list(self.allow_sdist))) if v}
        return {
            **extra,
            "name": self.name,
            "python": self.python,
            "manager": self.manager,
            "requirements": list(self.requirements),
            "git": [str(g) for g in self.git],
            "conda_channels": list(self.conda_channels),
            "conda_packages": list(self.conda_packages),
            "target_profile": self.target_profile,
            "indexes": dict(sorted(self.indexes.items())),
        }

    def resolver_requirements(self) -> list[str]:
        """The requirements, plus the constraints that narrow one of them (the resolver picks torch, CuPy,
        numpy ... itself, so a '-c' pin of a required package must reach it; the rest reach the engine)."""
        names = {str(canonicalize_name(Requirement(r).name)) for r in self.requirements}
        return [*self.requirements,
                *(c for c in self.constraints if str(canonicalize_name(Requirement(c).name)) in names)]

    def digest(self) -> str:
        """sha256 over the canonical JSON of the spec: equal specs lock identically."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def parse_requirement(text: str, *, path: str | None = None, field: str | None = None) -> Requirement:
    """Parse one PEP 508 requirement.

    Raises:
        SpecError: the text is not a valid requirement.
    """
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise SpecError(
            f"'{text}' is not a valid PEP 508 requirement ({exc}).",
            path=path,
            field=field,
            hint="Write it like 'numpy<1.20' or 'mmcv-full==1.4.0'.",
        ) from None


_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_GIT_HINT = ("Write it as 'name @ git+https://host/repo.git@TAG' (or git+ssh://git@host/repo.git@REF, "
             "git+file:///path@REF; pip's 'git+URL@REF#egg=NAME&subdirectory=DIR' works too).")


def parse_git(text: str, *, path: str | None = None, field: str | None = None) -> GitRequirement:
    """Parse a git requirement in any of pip's forms.

    ``name @ git+URL[@REF][#subdirectory=DIR]`` and the bare ``git+URL[@REF][#egg=NAME&subdirectory=DIR]``
    (the name is the egg, else the repository's name); URL is https, ssh, git or file.

    Raises:
        SpecError: the text is not of that form.
    """
    s = text.strip()
    m = re.fullmatch(rf"({_NAME})\s*@\s*git\+(\S+)", s)
    name: str | None
    if m:
        name, rest = m.group(1), m.group(2)
    elif s.startswith("git+") and len(s) > 4 and not re.search(r"\s", s):
        name, rest = None, s[4:]
    else:
        raise SpecError(f"'{text}' is not a git requirement.", path=path, field=field, hint=_GIT_HINT)
    rest, _, frag = rest.partition("#")
    params: dict[str, str] = {}
    for part in filter(None, frag.split("&")):
        key, eq, val = part.partition("=")
        if key not in ("egg", "subdirectory") or not eq or not val:
            raise SpecError(f"'{text}': unknown URL fragment '{part}' (pip knows egg= and subdirectory=).",
                            path=path, field=field, hint=_GIT_HINT)
        params[key] = val
    if not re.match(r"^(https?|ssh|git|file)://", rest):
        raise SpecError(f"'{text}' is not a git requirement: '{rest}' is not an https://, ssh://, git:// or "
                        "file:// URL.", path=path, field=field, hint=_GIT_HINT)
    url, ref = rest, None
    # The ref is whatever follows the last '@' after the scheme and host part (user@host is not a ref).
    tail_start = rest.find("://") + 3
    at = rest.rfind("@")
    if at > tail_start and "/" in rest[tail_start:at]:
        url, ref = rest[:at], rest[at + 1 :]
    repo = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    egg = params.get("egg")
    if egg is not None:
        egg = re.split(r"[=<>!~\[]", egg, maxsplit=1)[0]  # old pip wrote egg=name==1.0 or name[extra]
    name = name or egg or repo
    if not re.fullmatch(_NAME, name or ""):
        raise SpecError(f"'{text}': cannot tell the package's name.", path=path, field=field,
                        hint="Add '#egg=NAME', or write it as 'NAME @ git+URL@REF'.")
    sub = params.get("subdirectory")
    if sub is not None and (sub.startswith("/") or ".." in sub.split("/")):
        raise SpecError(f"'{text}': subdirectory '{sub}' must be a path inside the repository.",
                        path=path, field=field,
                        hint="Write it relative to the repository's top, like subdirectory=python.")
    return GitRequirement(name=name, url=url, ref=ref or None, subdirectory=sub.strip("/") if sub else None)


def _str_list(value: Any, path: str, fld: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError("expected a list of strings.", path=path, field=fld)
    return tuple(value)


def _check_keys(table: dict[str, Any], allowed: set[str], path: str, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise SpecError(
                f"unknown key '{key}'.",
                path=path,
                field=f"{prefix}{key}",
                hint=f"Allowed here: {', '.join(sorted(allowed))}. "
                "See 'envbuild init' for a commented example.",
            )


def _table(data: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpecError("expected a table.", path=path, field=key, hint=f"Write it as a [{key}] section.")
    return value


def _read_toml(p: Path) -> dict[str, Any]:
    ps = str(p)
    try:
        text = decode_text(p.read_bytes(), path=ps, error=SpecError)
    except OSError as exc:
        raise SpecError(f"cannot read the spec ({exc.strerror}).", path=ps,
                        hint="Create one with 'envbuild init'.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML ({exc}).", path=ps) from None
    except RecursionError:
        raise SpecError("nested too deeply to read.", path=ps, field=deep_line(text)) from None


def load_spec(path: str | Path) -> Spec:
    """Read ``envbuild.toml`` (or a ``requirements.txt`` / ``environment.yml``).

    Raises:
        SpecError: unreadable file, unknown key, bad requirement, unknown manager.
    """
    p = Path(path)
    ps = str(p)
    if p.name.endswith(".txt"):
        return _from_requirements_txt(p)
    if p.suffix in (".yml", ".yaml"):
        return _from_environment_yml(p)
    data = _read_toml(p)
    _check_keys(data, _TOP_KEYS, ps, "")
    project = data.get("project", {})
    if not isinstance(project, dict):
        raise SpecError("expected a table.", path=ps, field="project")
    _check_keys(project, _PROJECT_KEYS, ps, "project.")
    manager = get_manager(project.get("manager", "venv"), path=ps, field="project.manager",
                          error=SpecError).name
    python = project.get("python")
    if isinstance(python, float):
        # TOML reads python = 3.10 as the float 3.1: ask for a string instead of guessing.
        raise SpecError(f"{python!r} is a number; Python versions must be quoted.", path=ps,
                        field="project.python", hint='Write it as python = "3.10".')
    if python is not None:
        python = str(python)
        if not re.fullmatch(r"3\.\d{1,2}", python):
            raise SpecError(f"'{python}' is not a Python version like '3.10'.", path=ps,
                            field="project.python")
    reqs = _str_list(project.get("requirements", []), ps, "project.requirements")
    for i, r in enumerate(reqs):
        parse_requirement(r, path=ps, field=f"project.requirements[{i}]")
    gits = tuple(
        parse_git(g, path=ps, field=f"project.git[{i}]")
        for i, g in enumerate(_str_list(project.get("git", []), ps, "project.git"))
    )
    conda = _table(data, "conda", ps)
    _check_keys(conda, _CONDA_KEYS, ps, "conda.")
    target = _table(data, "target", ps)
    _check_keys(target, _TARGET_KEYS, ps, "target.")
    indexes = default_indexes()
    raw_idx = _table(data, "indexes", ps)
    _check_keys(raw_idx, set(indexes), ps, "indexes.")
    for k, v in raw_idx.items():
        if not isinstance(v, str) or not re.match(r"^(https?|file)://", v):
            raise SpecError("expected an http(s):// or file:// URL.", path=ps, field=f"indexes.{k}")
        indexes[k] = v.rstrip("/")
    profile = target.get("profile")
    if profile is not None:
        profile = str(p.parent / profile) if not Path(profile).is_absolute() else profile
    default_name = re.sub(r"[^A-Za-z0-9._-]+", "-", p.resolve().parent.name).strip("-._") or "env"
    name = project.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise SpecError(f"'{name}' is not a usable name (letters, digits, . _ -).", path=ps,
                        field="project.name")
    return Spec(
        name=name,
        python=python,
        manager=manager,
        requirements=reqs,
        git=gits,
        conda_channels=_str_list(conda.get("channels", ["conda-forge"]), ps, "conda.channels"),
        conda_packages=_str_list(conda.get("packages", []), ps, "conda.packages"),
        target_profile=profile,
        indexes=indexes,
        path=ps,
    )


def spec_from_requirements(
    reqs: list[str], *, name: str = "env", python: str | None = None, manager: str = "venv"
) -> Spec:
    """Build a spec from bare command-line requirements (git ones included).

    Raises:
        SpecError: a requirement does not parse or the manager is unknown.
    """
    get_manager(manager, field="--manager", error=SpecError)
    plain: list[str] = []
    gits: list[GitRequirement] = []
    for r in reqs:
        if "git+" in r:
            gits.append(parse_git(r, field="REQ"))
        else:
            parse_requirement(r, field="REQ")
            plain.append(r)
    return Spec(name=name, python=python, manager=manager,
                requirements=tuple(plain), git=tuple(gits))


def _read_text(p: Path) -> str:
    """The file's text; not UTF-8 is bad input (named by line), not a crash or a guess."""
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read ({exc.strerror}).", path=str(p)) from None
    return decode_text(data, path=str(p), error=SpecError)


_COMMENT = re.compile(r"(^|\s+)#.*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Options envbuild reads; the hint of an unknown one lists them.
_REQ_OPTIONS = ("-r/--requirement FILE, -c/--constraint FILE, -e/--editable git+URL, -i/--index-url URL, "
                "--extra-index-url URL, -f/--find-links URL|DIR, --no-binary NAME, --only-binary :all:, "
                "--prefer-binary, --require-hashes, and NAME==V --hash=sha256:HEX")
_OTHER_VCS = re.compile(r"^(?:[A-Za-z0-9._-]+\s*@\s*)?(hg|svn|bzr)\+")


@dataclass
class _Reqs:
    """What requirement files say, gathered across their ``-r`` / ``-c`` includes."""

    requirements: list[str] = field(default_factory=list)
    git: list[GitRequirement] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    hashes: dict[str, list[str]] = field(default_factory=dict)
    allow_sdist: list[str] = field(default_factory=list)
    stack: list[Path] = field(default_factory=list)
    read: set[Path] = field(default_factory=set)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) with pip's backslash continuations joined and comments removed."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for i, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = i
        if raw.endswith("\\") and not raw.lstrip().startswith("#"):
            buf.append(raw[:-1])
            continue
        buf.append(raw)
        line = _COMMENT.sub("", " ".join(buf)).strip()
        buf = []
        if line:
            out.append((start, line))
    if buf:
        line = _COMMENT.sub("", " ".join(buf)).strip()
        if line:
            out.append((start, line))
    return out


def _include(acc: _Reqs, target: str, base: Path, where: str, fld: str, *, constraint: bool) -> None:
    if re.match(r"^[a-z]+://", target):
        raise SpecError(f"'{target}' is a URL; envbuild reads only local requirement files.", path=where,
                        field=fld, hint="Download it next to this file and refer to it by path.")
    p = (base / target).resolve()
    if p in acc.stack:
        raise SpecError(f"'{target}' includes itself (through {' -> '.join(x.name for x in acc.stack)}).",
                        path=where, field=fld, hint="Remove one of the -r/-c lines of the cycle.")
    if p in acc.read and not constraint:
        return  # the same file included twice (a diamond): its requirements are already in
    if not p.is_file():
        raise SpecError(f"the included file '{target}' does not exist ({p}).", path=where, field=fld,
                        hint="Paths in -r/-c are relative to the file that names them.")
    acc.read.add(p)
    acc.stack.append(p)
    try:
        _read_requirement_lines(acc, _logical_lines(_read_text(p)), p.parent, str(p), constraint=constraint)
    finally:
        acc.stack.pop()


def _location(base: Path, value: str) -> str:
    """A find-links value: a URL as given, a local directory as an absolute file:// URL."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", value):
        return value.rstrip("/")
    return (base / value).resolve().as_uri()


def _read_requirement_lines(acc: _Reqs, lines: list[tuple[int, str]], base: Path, where: str, *,
                            constraint: bool, field_of: Any = None) -> None:
    """Read requirements.txt lines into ``acc``; anything not understood is an error naming the line."""
    for lineno, line in lines:
        fld = field_of(lineno) if field_of else f"line {lineno}"
        if bad := _CONTROL.search(line):
            raise SpecError(f"the line holds a control character ({bad.group()!r}).", path=where, field=fld,
                            hint="Remove it: requirement lines are plain text (a NUL or escape byte is "
                                 "usually a damaged or binary file).")
        if line.startswith("-"):
            m = re.match(r"^(-[A-Za-z]|--[A-Za-z][A-Za-z-]*)(?:\s*=\s*|\s+|$)(.*)$", line)
            opt, val = (m.group(1), m.group(2).strip()) if m else (line.split()[0], "")
            _option(acc, opt, val, base, where, fld, line, constraint=constraint)
            continue
        _requirement(acc, line, base, where, fld, constraint=constraint)


def _option(acc: _Reqs, opt: str, val: str, base: Path, where: str, fld: str, line: str, *,
            constraint: bool) -> None:
    takes_value = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-i", "--index-url",
                   "--extra-index-url", "-f", "--find-links", "--no-binary", "--only-binary"}
    if opt in takes_value and not val:
        raise SpecError(f"'{opt}' needs a value.", path=where, field=fld, hint=f"Write it as '{opt} VALUE'.")
    if opt in ("-r", "--requirement"):
        _include(acc, val, base, where, fld, constraint=constraint)
    elif opt in ("-c", "--constraint"):
        _include(acc, val, base, where, fld, constraint=True)
    elif opt in ("-e", "--editable"):
        if val.startswith("git+") or re.match(rf"^{_NAME}\s*@\s*git\+", val):
            acc.git.append(parse_git(val, path=where, field=fld))
        else:
            raise SpecError(f"'{line}': an editable local checkout cannot be shipped to the target.",
                            path=where, field=fld,
                            hint="Commit it and write 'NAME @ git+file:///abs/path@REF' (or a git+https "
                                 "URL); envbuild builds it at that commit.")
    elif opt in ("-i", "--index-url"):
        acc.index_url = _location(base, val)
    elif opt == "--extra-index-url":
        acc.extra_index_urls.append(_location(base, val))
    elif opt in ("-f", "--find-links"):
        acc.find_links.append(_location(base, val))
    elif opt == "--no-binary":
        names = [n.strip() for n in val.split(",") if n.strip() and n.strip() != ":none:"]
        if ":all:" in names:
            raise SpecError("'--no-binary :all:' would build every package on the target.", path=where,
                            field=fld, hint="Name the packages that must be built from source: "
                                            "'--no-binary NAME' (envbuild locks wheels first).")
        acc.allow_sdist += [str(canonicalize_name(n)) for n in names]
    elif opt in ("--only-binary", "--prefer-binary", "--require-hashes"):
        pass  # what envbuild does anyway: wheels first, every file hashed
    else:
        raise SpecError(f"pip option '{opt}' is not understood by envbuild.", path=where, field=fld,
                        hint=f"Remove it; envbuild reads {_REQ_OPTIONS}.")


def _requirement(acc: _Reqs, line: str, base: Path, where: str, fld: str, *, constraint: bool) -> None:
    req, *opts = re.split(r"\s+(?=--)", line)
    hashes: list[str] = []
    for o in opts:
        m = re.fullmatch(r"--hash(?:=|\s+)(\w+):([0-9A-Fa-f]+)", o.strip())
        if not m:
            raise SpecError(f"'{o.strip()}' after a requirement is not understood by envbuild.", path=where,
                            field=fld, hint="Only '--hash=sha256:HEX' may follow a requirement on its line.")
        if m.group(1) != "sha256" or len(m.group(2)) != 64:
            raise SpecError(f"'{o.strip()}' is not a sha256 hash.", path=where, field=fld,
                            hint="Write '--hash=sha256:' and the 64 hex digits (pip hash FILE prints it).")
        hashes.append(m.group(2).lower())
    if _OTHER_VCS.match(req):
        raise SpecError(f"'{req}': only git repositories are supported.", path=where, field=fld,
                        hint="Publish the package to an index, or mirror it into git and write "
                             "'NAME @ git+URL@REF'.")
    if req.startswith("git+") or re.match(rf"^{_NAME}\s*@\s*git\+", req):
        if constraint:
            raise SpecError(f"'{req}': a constraints file can only restrict versions.", path=where, field=fld,
                            hint="Move the git requirement to a requirements file (-r).")
        acc.git.append(parse_git(req, path=where, field=fld))
        return
    if req.startswith((".", "/", "~", "file:")) or (("/" in req or req.endswith((".whl", ".tar.gz", ".zip")))
                                                   and "@" not in req and "://" not in req):
        raise SpecError(f"'{req}' is a local path; envbuild locks packages from indexes and git.", path=where,
                        field=fld, hint="Put the wheel in a directory and add '-f DIR', or write "
                                        "'NAME @ git+file:///abs/path@REF' for a local repository.")
    r = parse_requirement(req, path=where, field=fld)
    name = str(canonicalize_name(r.name))
    if hashes:
        acc.hashes.setdefault(name, [])
        acc.hashes[name] += [h for h in hashes if h not in acc.hashes[name]]
    (acc.constraints if constraint else acc.requirements).append(req)


def _spec_from_reqs(acc: _Reqs, base: Spec) -> Spec:
    indexes = dict(base.indexes)
    if acc.index_url:
        indexes["pypi"] = acc.index_url
    return dataclasses.replace(
        base, requirements=tuple(dict.fromkeys([*base.requirements, *acc.requirements])),
        git=tuple(dict.fromkeys([*base.git, *acc.git])),
        constraints=tuple(dict.fromkeys([*base.constraints, *acc.constraints])),
        indexes=indexes, extra_index_urls=tuple(dict.fromkeys(acc.extra_index_urls)),
        find_links=tuple(dict.fromkeys(acc.find_links)),
        hashes={k: tuple(v) for k, v in sorted(acc.hashes.items())},
        allow_sdist=tuple(dict.fromkeys(acc.allow_sdist)))


def _from_requirements_txt(p: Path) -> Spec:
    acc = _Reqs(stack=[p.resolve()], read={p.resolve()})
    _read_requirement_lines(acc, _logical_lines(_read_text(p)), p.parent, str(p), constraint=False)
    return _spec_from_reqs(acc, Spec(name=_dir_name(p), path=str(p)))


def _dir_name(p: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", p.resolve().parent.name).strip("-._") or "env"


# The conda names that are PyPI packages the resolver chooses (a conda spec of one becomes that
# requirement on the pip side, so one torch is installed, not two) and the conda packages whose version
# is the CUDA version (a CUDA constraint; most also stay in conda.txt): names.json, via matrix.load_names.


def _conda_version(spec: str, where: str, fld: str, dep: str) -> str:
    """A conda version spec (``=1.12``, ``1.12.*``, ``<=1.12.1``, ``>=1,<2``) as a PEP 440 specifier."""
    spec = spec.strip()
    if not spec:
        return ""
    out = []
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(==|>=|<=|!=|~=|=|<|>)?\s*([0-9][0-9A-Za-z.*+_-]*)", part)
        if not m or "|" in part:
            raise SpecError(f"'{dep}': cannot read the conda version '{spec}'.", path=where, field=fld,
                            hint="Write it like 'pytorch<=1.12.1', 'pytorch=1.12' or 'cudatoolkit=11.8'.")
        op, ver = m.group(1) or "", m.group(2)
        if op in ("", "="):
            # conda's '=1.12' and '1.12' are fuzzy (1.12.*); '1.12.*' says so itself
            out.append(f"=={ver}" if ver.endswith("*") else f"=={ver}.*" if op == "=" else f"=={ver}")
        else:
            out.append(f"{op}{ver}")
    return ",".join(out)


def _conda_dep(value: str, where: str, lineno: int) -> tuple[str, str, str, str]:
    """(conda name, its version spec, the build string, the spec as written) of a dependencies entry."""
    fld = f"line {lineno}"
    text = value.split("::", 1)[-1].strip()  # channel::name (conda env export --channel form)
    m = re.fullmatch(r"([A-Za-z0-9_][A-Za-z0-9._-]*)\s*(.*)", text)
    if not m or "[" in text:
        raise SpecError(f"'{value}' is not a conda package spec envbuild can read.", path=where, field=fld,
                        hint="Write it like 'numpy', 'numpy=1.19', 'numpy=1.19.5=py38h_0' or 'numpy>=1.19'.")
    name, rest = m.group(1).lower(), m.group(2).strip()
    build = ""
    if rest.startswith("=") and not rest.startswith("=="):
        # conda env export: name=version=build
        ver, _, build = rest[1:].partition("=")
        rest = "=" + ver if not build else "==" + ver
    elif " " in rest:
        rest, _, build = rest.partition(" ")
    return name, rest, build.strip(), value


def _conda_dependencies(items: list[tuple[int, str]], where: str) -> tuple[
        list[str], list[str], str | None, str | None]:
    """Split conda entries: (kept conda specs, pip requirements they become, CUDA specifier, python)."""
    names = load_names()
    keep: list[str] = []
    reqs: list[str] = []
    cuda: list[str] = []
    python: str | None = None
    for lineno, value in items:
        name, ver, _build, text = _conda_dep(value, where, lineno)
        fld = f"line {lineno}"
        if name == "python":
            m = re.search(r"3\.\d+", ver)
            python = m.group(0) if m else None
        elif name == "pip":
            continue  # pip itself; envbuild's environments always have it
        elif name in names.conda_to_pypi:
            reqs.append(names.conda_to_pypi[name] + _conda_version(ver, where, fld, text))
        elif name in names.conda_cuda:
            spec = _conda_version(ver, where, fld, text)
            cuda += [spec] if spec else []
            if names.conda_cuda[name]:
                keep.append(text)
        else:
            keep.append(text)
    return keep, reqs, ",".join(cuda) or None, python


_YML_KEYS = ("name", "channels", "dependencies", "prefix")


def _yml_key(item: str, where: str, lineno: int) -> tuple[str, str, list[str]]:
    """A top-level ``key: value`` line: (key, scalar value, entries of a flow list ``[a, b]``)."""
    key, colon, val = item.partition(":")
    section, val = key.strip(), val.strip()
    if not colon or section not in _YML_KEYS:
        raise SpecError(f"'{item}' is not a key envbuild reads.", path=where, field=f"line {lineno}",
                        hint=f"An environment.yml has {', '.join(_YML_KEYS)}; for anything else "
                             "write an envbuild.toml ('envbuild init').")
    if section in ("name", "prefix") or not val:
        return section, val.strip("'\""), []
    if not (val.startswith("[") and val.endswith("]")):
        raise SpecError(f"'{item}': expected a list.", path=where, field=f"line {lineno}",
                        hint=f"Write each entry on its own line as '  - VALUE' under '{section}:'.")
    return section, "", [v.strip().strip("'\"") for v in val[1:-1].split(",") if v.strip()]


@dataclass
class _Yml:
    """What an environment.yml says, read line by line (``section``: the top-level key being read)."""

    where: str
    name: str = "env"
    channels: list[str] = field(default_factory=list)
    conda_items: list[tuple[int, str]] = field(default_factory=list)
    pip_lines: list[tuple[int, str]] = field(default_factory=list)
    section: str = ""
    in_pip: bool = False
    pip_indent: int = 0

    def key(self, item: str, lineno: int) -> None:
        """A top-level ``key: value`` line (lists may sit flush under it)."""
        self.in_pip = False
        self.section, val, flow = _yml_key(item, self.where, lineno)
        if self.section == "name":
            self.name = val
        elif self.section == "channels":
            self.channels += flow
        elif self.section == "dependencies":
            self.conda_items += [(lineno, v) for v in flow]

    def entry(self, item: str, indent: int, lineno: int) -> None:
        """A ``- VALUE`` line under the current key."""
        if self.section in ("name", "prefix"):
            raise SpecError(f"'{item}': '{self.section}' takes one value on its own line.", path=self.where,
                            field=f"line {lineno}")
        if not item.startswith("- "):
            raise SpecError(f"'{item}' is not a list entry.", path=self.where, field=f"line {lineno}",
                            hint="Entries of channels and dependencies are written '  - VALUE'.")
        value = item[2:].strip()
        if value[:1] in "'\"" and value[-1:] == value[:1]:
            value = value[1:-1]
        if self.section == "channels":
            self.channels.append(value)
        elif self.section == "dependencies":
            self.dependency(value, indent, lineno)

    def dependency(self, value: str, indent: int, lineno: int) -> None:
        if re.fullmatch(r"pip\s*:", value):
            self.in_pip, self.pip_indent = True, indent
        # pip entries are nested deeper than their '- pip:' line, at whatever indent the file uses.
        elif self.in_pip and indent > self.pip_indent:
            self.pip_lines.append((lineno, value))
        else:
            self.in_pip = False
            self.conda_items.append((lineno, value))


def _from_environment_yml(p: Path) -> Spec:
    """The environment.yml shape conda writes and reads: name, channels, dependencies (with a pip
    section), prefix (``conda env export``; a path on the machine it came from, not used)."""
    where = str(p)
    yml = _Yml(where)
    for lineno, raw in enumerate(_read_text(p).splitlines(), 1):
        line = _COMMENT.sub("", raw).rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if indent == 0 and not item.startswith("-"):
            yml.key(item, lineno)
        else:
            yml.entry(item, indent, lineno)
    keep, conda_reqs, cuda, python = _conda_dependencies(yml.conda_items, where)
    acc = _Reqs(stack=[p.resolve()], read={p.resolve()})
    _read_requirement_lines(acc, yml.pip_lines, p.parent, where, constraint=False,
                            field_of=lambda n: f"line {n} (dependencies.pip)")
    # A torch written both in conda and in pip is one requirement on the pip side.
    acc.requirements = list(dict.fromkeys([*conda_reqs, *acc.requirements]))
    base = Spec(name=yml.name or "env", python=python, manager="conda", path=where, cuda=cuda,
                conda_channels=tuple(yml.channels or ["conda-forge"]), conda_packages=tuple(keep))
    return _spec_from_reqs(acc, base)
