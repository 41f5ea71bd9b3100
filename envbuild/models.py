"""Frozen records that cross stage boundaries: Profile, Resolution, Lock entries.

Stages import these rather than each other.  Every record has ``to_dict`` for
``--json`` and files, and ``from_dict`` that validates and names the bad field.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from envbuild.errors import EnvbuildError, InputError, ProfileError

if TYPE_CHECKING:
    from packaging.version import Version

__all__ = [
    "MAX_DEPTH",
    "PROFILE_SCHEMA",
    "CacheManifest",
    "Conflict",
    "Fact",
    "Fields",
    "Gpu",
    "LockedArtifact",
    "ManifestEntry",
    "Profile",
    "Resolution",
    "SourceBuild",
    "Toolkit",
    "decode_text",
    "deep_line",
    "known",
    "load_profile",
    "loose_version",
    "loose_xy",
    "parse_json",
    "pip_index_args",
    "read_json_file",
]

PROFILE_SCHEMA = 1

# --- the one schema layer ------------------------------------------------------------------------
# Every file envbuild reads (profile, lock, pack manifest, cache manifest) and every CLI value goes
# through the same two steps: ``read_json_file``/``decode_text`` (bytes -> checked text/JSON) and
# ``Fields`` (JSON -> typed record, one field at a time, each failure naming file, field, what was
# found and what to write).  The records' own ``from_dict`` uses ``Fields``; no pydantic/msgspec,
# because the records are plain frozen dataclasses already, probe.py must stay stdlib-only, and the
# error text has to follow errors.py's one-paragraph form rather than a library's.

MAX_DEPTH = 64  # no envbuild file nests deeper than ~6; this bounds every recursive walk after parsing
MAX_STR = 4096  # one field (name, URL, path); longer is not something envbuild wrote

# ASCII-only formats: ``\d`` would accept '４７０' (fullwidth) and other Unicode digits.
PYTHON_XY = re.compile(r"[0-9]{1,2}\.[0-9]{1,3}(\.[0-9]{1,4})?([a-z]{1,5}[0-9]{0,4})?\+?")
DRIVER = re.compile(r"[0-9]{2,4}(\.[0-9]{1,3}){1,2}")
CUDA_XY = re.compile(r"[0-9]{1,2}\.[0-9]{1,2}(\.[0-9]{1,9}){0,2}")
COMPUTE_CAP = re.compile(r"[0-9]{1,2}\.[0-9]")
GCC = re.compile(r"[0-9]{1,2}(\.[0-9]{1,4}){0,2}")
GLIBC = re.compile(r"[0-9]{1,2}\.[0-9]{1,3}(\.[0-9]{1,4})?")
WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
# PEP 508 names (before normalisation): a path component by construction.
NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?")
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
COMMIT = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
URL = re.compile(r"(https?|file|git\+https?|git\+ssh|git\+file|ssh|git)://[^\s]*|[\w.-]+@[\w.-]+:[^\s]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _show(value: Any) -> str:
    """How a found value is quoted in a message: short, typed, printable."""
    kind = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return kind
    text = json.dumps(value, ensure_ascii=bool(_SURROGATE.search(value))) if isinstance(value, str) \
        else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})" if not isinstance(value, type(None)) else "null"


def loose_version(text: str | None) -> Version | None:
    """A version read from a probe or a package ('2.1.0+cu118' -> 2.1.0), None when absent or unreadable."""
    from packaging.version import InvalidVersion, Version

    if not text:
        return None
    try:
        return Version(str(text).split("+")[0])
    except InvalidVersion:
        return None


def loose_xy(text: str | None) -> str | None:
    """'11.3.1' -> '11.3', '2.1.0+cu118' -> '2.1'; None when absent or unreadable."""
    v = loose_version(text)
    return None if v is None else f"{v.major}.{v.minor}"


def pip_index_args(index_urls: Sequence[str], find_links: Sequence[str] = (), *,
                   primary: bool = True) -> list[str]:
    """pip's index flags: the first URL as ``--index-url`` (``primary``), the others as extras.

    ``primary=False`` keeps the default index (PyPI or the user's mirror) and adds every URL.
    """
    out: list[str] = []
    for i, u in enumerate(index_urls):
        out += ["--index-url" if primary and i == 0 else "--extra-index-url", u]
    for u in find_links:
        out += ["--find-links", u]
    return out


def known(value: Any, alt: str = "unknown") -> str:
    """``value`` as text, or ``alt`` when the fact is missing: no 'None' on a user-facing line."""
    return alt if value is None or value == "" else str(value)


def decode_text(raw: bytes, *, path: str, error: type[EnvbuildError] = InputError,
                hint: str | None = None) -> str:
    """UTF-8 text of an input file (a BOM is allowed); any other byte is an input error with its line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise error(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} cannot be decoded).", path=path,
                    field=f"line {line}",
                    hint="Save the file as UTF-8." + (" " + hint if hint else "")) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str, *, path: str, error: type[EnvbuildError] = InputError,
               hint: str | None = None) -> Any:
    """JSON of an input file: strict (no NaN), at most ``MAX_DEPTH`` deep, no lone surrogates."""
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise error(f"not valid JSON (column {exc.colno}: {exc.msg}).", path=path,
                    field=f"line {exc.lineno}", hint=hint) from None
    except ValueError as exc:  # NaN / Infinity
        name = str(exc).split(" ", 1)[0]
        raise error(f"not valid JSON ({exc}; write a number or null).", path=path,
                    field=_outside_strings(text, lambda i, _d: text.startswith(name, i)), hint=hint) from None
    except RecursionError:
        raise error(f"nested deeper than {MAX_DEPTH} levels.", path=path, field=deep_line(text),
                    hint=hint) from None
    _check_tree(data, path=path, error=error, hint=hint, text=text)
    return data


def deep_line(text: str) -> str | None:
    """``line N`` where brackets first nest deeper than MAX_DEPTH (strings skipped)."""
    return _outside_strings(text, lambda _i, depth: depth > MAX_DEPTH)


def _outside_strings(text: str, hit: Callable[[int, int], bool]) -> str | None:
    """``line N`` of the first position outside a string where ``hit(index, depth)``; one linear scan."""
    depth, line, in_str, esc = 0, 1, False, False
    for i, ch in enumerate(text):
        if ch == "\n":
            line += 1
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
            continue
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if hit(i, depth):
            return f"line {line}"
    return None


def _check_tree(data: Any, *, path: str, error: type[EnvbuildError], hint: str | None,
                text: str | None = None) -> None:
    # iterative: a recursive walk would itself hit RecursionError on the input it is meant to refuse
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        node, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            line = deep_line(text) if text is not None else None
            raise error(f"nested deeper than {MAX_DEPTH} levels.", path=path,
                        field=line or where[:80] or None, hint=hint)
        if isinstance(node, dict):
            for k, v in node.items():
                if _SURROGATE.search(k):
                    raise error("a key holds an unpaired \\u surrogate escape.", path=path,
                                field=where or None, hint="Write the key as valid Unicode.")
                stack.append((v, depth + 1, f"{where}.{k}" if where else k))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(node))
        elif isinstance(node, str) and _SURROGATE.search(node):
            raise error("the value holds an unpaired \\u surrogate escape.", path=path,
                        field=where or None, hint="Write it as valid Unicode.")


def read_json_file(path: str | Path, *, error: type[EnvbuildError] = InputError, what: str = "file",
                   hint: str | None = None) -> Any:
    """Read, decode and parse one JSON input file; every failure is ``error`` naming the file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise error(f"cannot read the {what} ({exc.strerror or exc}).", path=str(p), hint=hint) from None
    return parse_json(decode_text(raw, path=str(p), error=error, hint=hint), path=str(p), error=error,
                      hint=hint)


class Fields:
    """Typed reads of one JSON object; a bad value raises ``error`` naming file, field, found, wanted.

    ``where`` is the dotted path of the object in the file (``gpus[0]``), so nested records name the
    full field (``gpus[0].compute_capability``).
    """

    def __init__(self, data: Any, *, path: str | None, error: type[EnvbuildError] = InputError,
                 hint: str | None = None, where: str = "", what: str = "an object") -> None:
        self.path, self.error, self.hint, self.where = path, error, hint, where
        if not isinstance(data, dict):
            self.fail(None, data, what)
        self.data: dict[str, Any] = data

    def name(self, key: str | None) -> str | None:
        if key is None:
            return self.where or None
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str | None, found: Any, wanted: str) -> NoReturn:
        raise self.error(f"found {_show(found)}; write {wanted}.", path=self.path, field=self.name(key),
                         hint=self.hint)

    def sub(self, key: str, *, what: str = "an object") -> Fields:
        return Fields(self.data.get(key), path=self.path, error=self.error, hint=self.hint,
                      where=self.name(key) or key, what=what)

    def text(self, key: str, *, pattern: re.Pattern[str] | None = None, wanted: str = "a string",
             required: bool = False, numbers: bool = False, controls: bool = False,
             default: str | None = None) -> str | None:
        """A string (``numbers``: a JSON number is taken as its text, as old profiles wrote 8.6)."""
        v = self.data.get(key)
        if v is None:
            if required:
                self.fail(key, v, wanted)
            return default
        return self._checked(key, v, pattern=pattern, wanted=wanted, numbers=numbers, controls=controls)

    def _checked(self, key: str, v: Any, *, pattern: re.Pattern[str] | None, wanted: str, numbers: bool,
                 controls: bool, label: str | None = None) -> str:
        def bad(extra: str = "") -> NoReturn:
            raise self.error(f"found {_show(v)}; write {wanted}{extra}.", path=self.path,
                             field=label or self.name(key), hint=self.hint)

        if numbers and isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            bad()
        if _SURROGATE.search(v):  # non-UTF-8 bytes of a command line arrive as lone surrogates
            bad(" in valid UTF-8")
        if len(v) > MAX_STR or (not controls and _CONTROL.search(v)) or "\x00" in v:
            bad(" (one line, no control characters)")
        if pattern is not None and not pattern.fullmatch(v):
            bad()
        return str(v)

    def req(self, key: str, **kw: Any) -> str:
        out = self.text(key, required=True, **kw)
        assert out is not None
        return out

    def whole(self, key: str, *, lo: int = 0, hi: int = 2**53, default: int | None = None,
            wanted: str | None = None) -> int | None:
        v = self.data.get(key)
        if v is None:
            return default
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            self.fail(key, v, wanted or f"a whole number from {lo} to {hi}")
        return v

    def flag(self, key: str, default: bool = False) -> bool:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.fail(key, v, "true or false")
        return v

    def items(self, key: str, wanted: str = "a list") -> list[Any]:
        v = self.data.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            self.fail(key, v, wanted)
        return v

    def objs(self, key: str, what: str = "an object") -> Iterator[Fields]:
        plural = f"a list of {what.removeprefix('an ').removeprefix('a ')}s"
        for i, item in enumerate(self.items(key, plural)):
            yield Fields(item, path=self.path, error=self.error, hint=self.hint,
                         where=f"{self.name(key)}[{i}]", what=what)

    def strs(self, key: str, *, pattern: re.Pattern[str] | None = None, wanted: str = "a string",
             controls: bool = False) -> tuple[str, ...]:
        items = self.items(key, f"a list of strings ({wanted})")
        return tuple(self._checked(key, v, pattern=pattern, wanted=wanted, numbers=False, controls=controls,
                                   label=f"{self.name(key)}[{i}]") for i, v in enumerate(items))

    def obj(self, key: str) -> dict[str, Any]:
        v = self.data.get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            self.fail(key, v, "an object")
        return v

    def str_map(self, key: str, *, wanted: str = "a string") -> dict[str, str]:
        sub = self.sub(key) if self.data.get(key) is not None else None
        if sub is None:
            return {}
        return {k: sub.req(k, wanted=wanted, controls=True) for k in sub.data}


# --- records ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str | None = None
    memory_mib: int | None = None


@dataclass(frozen=True)
class Toolkit:
    version: str
    path: str | None = None
    source: str | None = None


_PROFILE_HINT = "Re-run 'envbuild probe -o FILE' on the target machine, or fix the value."


@dataclass(frozen=True)
class Profile:
    """What envbuild knows of a machine: probed, loaded from JSON, or described by flags."""

    os: str = "linux"
    arch: str = "x86_64"
    glibc_version: str | None = None
    python_version: str | None = None
    gpus: tuple[Gpu, ...] = ()
    driver_version: str | None = None
    driver_cuda_version: str | None = None
    cuda_toolkits: tuple[Toolkit, ...] = ()
    gcc_version: str | None = None
    conda: str | None = None
    hostname: str | None = None
    notes: tuple[str, ...] = ()
    schema_version: int = PROFILE_SCHEMA

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus) or self.driver_version is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gpus"] = [asdict(g) for g in self.gpus]
        d["cuda_toolkits"] = [asdict(t) for t in self.cuda_toolkits]
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, data: Any, path: str | None = None, where: str = "",
                  error: type[EnvbuildError] = ProfileError) -> Profile:
        """Validate a profile mapping (as written by ``envbuild probe``); ``where`` prefixes fields
        when the profile is part of another file (a lock's ``target``).

        Raises:
            ProfileError: a field has the wrong type or format (``error`` when given).
        """
        f = Fields(data, path=path, error=error, hint=_PROFILE_HINT, where=where,
                   what="a profile object (as 'envbuild probe' writes)")
        gpus = []
        for g in f.objs("gpus", "a GPU object"):
            gpus.append(Gpu(
                name=g.req("name", wanted="the GPU's model name"),
                compute_capability=g.text("compute_capability", pattern=COMPUTE_CAP, numbers=True,
                                         wanted='a compute capability X.Y such as "8.6"'),
                memory_mib=g.whole("memory_mib", hi=2**31, wanted="the memory in MiB (a whole number)"),
            ))
        toolkits = [
            Toolkit(version=t.req("version", pattern=CUDA_XY, numbers=True,
                                  wanted='a CUDA version such as "11.3"'),
                    path=t.text("path", wanted="the toolkit's directory"),
                    source=t.text("source", wanted="how it was found"))
            for t in f.objs("cuda_toolkits", "a toolkit object")
        ]
        return cls(
            os=f.text("os", pattern=WORD, wanted='an OS name such as "linux"') or "linux",
            arch=f.text("arch", pattern=WORD, wanted='an architecture such as "x86_64"') or "x86_64",
            glibc_version=f.text("glibc_version", pattern=GLIBC, numbers=True,
                                wanted='a glibc version such as "2.31"'),
            python_version=f.text("python_version", pattern=PYTHON_XY, numbers=True,
                                 wanted='a Python version X.Y such as "3.10"'),
            gpus=tuple(gpus),
            driver_version=f.text("driver_version", pattern=DRIVER, numbers=True,
                                 wanted='a driver version such as "470.223.02"'),
            driver_cuda_version=f.text("driver_cuda_version", pattern=CUDA_XY, numbers=True,
                                      wanted='a CUDA version such as "11.4"'),
            cuda_toolkits=tuple(toolkits),
            gcc_version=f.text("gcc_version", pattern=GCC, numbers=True,
                              wanted='a gcc version such as "9.4.0"'),
            conda=f.text("conda", wanted="the conda executable's path"),
            hostname=f.text("hostname", wanted="a host name"),
            notes=f.strs("notes", wanted="a note", controls=True),
            schema_version=f.whole("schema_version", lo=1, hi=PROFILE_SCHEMA, default=PROFILE_SCHEMA,
                                 wanted=f"{PROFILE_SCHEMA} (written by a newer envbuild? re-probe "
                                        "with this one)") or PROFILE_SCHEMA,
        )


def load_profile(path: str | Path) -> Profile:
    """Read a profile JSON file.

    Raises:
        ProfileError: the file is missing, not UTF-8 JSON, or malformed.
    """
    data = read_json_file(path, error=ProfileError, what="profile",
                          hint="Write one with 'envbuild probe -o FILE' on the target machine.")
    return Profile.from_dict(data, path=str(path))


@dataclass(frozen=True)
class Fact:
    """One fact a verdict or a conflict stands on, with where it comes from."""

    text: str
    source: str
    confidence: str = "confirmed"  # confirmed | inferred | secondary | unverified

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "source": self.source, "confidence": self.confidence}


@dataclass(frozen=True)
class Conflict:
    """Why no consistent set exists: the sentence people read, the facts it rests on, what to change.

    ``text`` is what ``conflicts`` lists in ``--json`` (unchanged); ``conflict_details`` carries the rest.
    """

    text: str
    facts: tuple[Fact, ...] = ()
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "facts": [f.to_dict() for f in self.facts], "suggestion": self.suggestion}


@dataclass(frozen=True)
class SourceBuild:
    """A package compiled on the target after torch (mmdet3d 0.17.x; an mmcv with no prebuilt wheel).

    ``requires`` are its own requirements (they go to the lock engine, it does not); ``env`` is the
    build's environment (FORCE_CUDA, TORCH_CUDA_ARCH_LIST); ``reason`` and ``source``: why, and the
    fact it stands on.  ``Resolution.to_dict`` writes these six keys in this order (the ``--json`` shape).
    """

    name: str
    version: str
    requires: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    source: str = ""

    @classmethod
    def read(cls, f: Fields) -> SourceBuild:
        """One ``source_builds`` entry of a resolution being validated (``Resolution.from_dict``)."""
        return cls(name=f.req("name", pattern=NAME, wanted="a package name"),
                   version=f.req("version", wanted="a version"),
                   requires=list(f.strs("requires", wanted="a requirement")),
                   env=f.str_map("env", wanted="a value"),
                   reason=f.text("reason", wanted="a sentence", controls=True) or "",
                   source=f.text("source", wanted="a source", controls=True) or "")


@dataclass(frozen=True)
class Resolution:
    """What ``resolve`` decided for a target. ``to_dict`` is the ``--json`` contract.

    ``packages`` maps normalised names to pinned versions (torch with its local
    label, e.g. ``1.10.0+cu113``).  ``requirements`` is what the lock engine gets:
    the pins above plus the user's other requirements.  ``source_builds`` are
    packages that must be compiled on the target after torch (mmdet3d 0.17.x).
    """

    ok: bool
    python: str
    cuda: str | None
    packages: dict[str, str] = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)
    source_builds: list[SourceBuild] = field(default_factory=list)
    index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    build: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # why nothing fits (ok=False): ``--json`` lists their sentences under ``conflicts`` and the records
    # (facts with sources, suggestion) under ``conflict_details``
    conflicts: list[Conflict] = field(default_factory=list)
    choices: list[dict[str, Any]] = field(default_factory=list)
    target: dict[str, Any] = field(default_factory=dict)
    # bounds the chosen packages imply (numpy<2 for torch<2.3, numpy<1.24 for mmdet3d 1.4.0), with evidence
    implied: list[dict[str, Any]] = field(default_factory=list)
    # when the facts used were checked: {checked, oldest, newest, age_days, tables, ...}
    knowledge: dict[str, Any] = field(default_factory=dict)
    # the torch build's compatibility verdict: {ok, rule, reason, facts}
    verdict: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a plain sentence (older callers, hand-made resolutions) is a conflict without recorded facts
        self.conflicts[:] = [Conflict(c) if isinstance(c, str) else c for c in self.conflicts]
        # likewise a mapping (hand-made resolutions) is a source build's record
        self.source_builds[:] = [SourceBuild(**s) if isinstance(s, dict) else s for s in self.source_builds]

    @property
    def conflict_texts(self) -> list[str]:
        """The conflicts as the sentences ``--json`` lists under ``conflicts``."""
        return [c.text for c in self.conflicts]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conflicts"] = self.conflict_texts
        d["conflict_details"] = [c.to_dict() for c in self.conflicts]
        return d

    @classmethod
    def from_dict(cls, data: Any, path: str | None = None, where: str = "",
                  error: type[EnvbuildError] = InputError) -> Resolution:
        """Validate a resolution mapping (``resolve --json``, a lock's ``resolution``).

        Raises:
            InputError: a field has the wrong type (``error`` when given).
        """
        f = Fields(data, path=path, error=error, where=where, what="a resolution object",
                   hint="Re-create it with 'envbuild resolve' / 'envbuild lock'.")
        if not isinstance(f.data.get("ok", True), bool):
            f.fail("ok", f.data["ok"], "true or false")
        return cls(
            ok=f.flag("ok", default=True),
            python=f.text("python", pattern=PYTHON_XY, wanted='a Python version X.Y such as "3.10"') or "",
            cuda=f.text("cuda", pattern=CUDA_XY, numbers=True,
                        wanted='a CUDA version such as "11.3" or null'),
            packages=f.str_map("packages", wanted="a version"),
            requirements=list(f.strs("requirements", wanted="a requirement")),
            source_builds=[SourceBuild.read(s) for s in f.objs("source_builds", "a source-build object")],
            index_urls=list(f.strs("index_urls", pattern=URL, wanted="an index URL")),
            find_links=list(f.strs("find_links", pattern=URL, wanted="a find-links URL")),
            build=f.obj("build"),
            reasons=list(f.strs("reasons", wanted="a sentence", controls=True)),
            warnings=list(f.strs("warnings", wanted="a sentence", controls=True)),
            conflicts=_conflicts(f),
            choices=[c.data for c in f.objs("choices", "a choice object")],
            target=f.obj("target"),
            # kept as found, so a lock's resolution reads back to the same record (and the same bytes)
            implied=[x.data for x in f.objs("implied", "an implied-bound object")],
            knowledge=f.obj("knowledge"),
            verdict=f.obj("verdict"),
        )


@dataclass(frozen=True)
class LockedArtifact:
    """One file a lock needs: a wheel, an sdist, a git checkout or a conda package.

    ``kind`` is ``wheel`` | ``sdist`` | ``git`` | ``conda``; ``build`` is ``source``
    for packages compiled on the target after torch.
    """

    name: str
    version: str
    kind: str
    url: str
    sha256: str
    filename: str
    build: str | None = None
    commit: str | None = None
    subdir: str | None = None
    requires: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["requires"] = list(self.requires)
        return d

    def cache_path(self, conda_subdir: str | None = None) -> str:
        """Where this file lives in ``offline_cache/``: the one rule fetch, render and bundle use.

        A conda package without its own subdir goes where the lock's platform puts it
        (``conda_subdir``, the lock's ``platform.conda_subdir``), else ``noarch``.
        """
        if self.kind == "conda":
            return f"conda/{self.subdir or conda_subdir or 'noarch'}/{self.filename}"
        return f"wheels/{self.filename}"

    @classmethod
    def from_dict(cls, data: Any, path: str | None = None, where: str = "",
                  error: type[EnvbuildError] = InputError) -> LockedArtifact:
        """Validate one artifact of a lock: everything fetch, render and bundle rely on.

        A git artifact needs its full commit sha; every other one a 64-hex sha256 (each download is
        checked against it) and a plain file name (taken from the URL when the lock has none).

        Raises:
            InputError: a field is missing, has the wrong type or format (``error`` when given).
        """
        f = Fields(data, path=path, error=error, where=where, what="an artifact object", hint=_ART_HINT)
        kind = f.req("kind", pattern=_KINDS, wanted="wheel, sdist, git or conda")
        url = f.req("url", pattern=_NONEMPTY, wanted="a URL")
        commit = f.text("commit", pattern=COMMIT, wanted="a full git commit sha")
        sha = (f.text("sha256", default="", wanted="a 64-hex sha256") or "").lower()
        filename = f.text("filename", default="", wanted="a plain file name") or ""
        if kind == "git":
            if commit is None:
                f.fail("commit", None, "the full resolved commit sha of the git artifact")
        else:
            if not SHA256.fullmatch(sha):
                f.fail("sha256", sha, "a 64-hex sha256 (every downloaded file is checked against it)")
            filename = filename or Path(urllib.parse.urlsplit(url).path).name
        if (filename or kind != "git") and (filename in ("", ".", "..") or not _FILENAME.fullmatch(filename)):
            f.fail("filename", filename, "a plain file name ('/' or '..' in it is unsafe)")
        return cls(
            name=f.req("name", pattern=_ART_NAME, wanted="a package name"),
            version=f.req("version", pattern=_VERSION, wanted="a version"),
            kind=kind,
            # any printable text: scripts quote it (tests/test_render.py feeds shell syntax on purpose)
            url=url,
            sha256=sha,
            filename=filename,
            build=f.text("build", pattern=_KIND, wanted='"source" or null'),
            commit=commit,
            subdir=f.text("subdir", pattern=_SUBDIR, wanted='a conda subdir such as "linux-64"'),
            requires=f.strs("requires", wanted="a requirement"),
        )


_ART_HINT = "The lock is damaged; re-create it with 'envbuild lock'."
_KINDS = re.compile(r"wheel|sdist|git|conda")
_NONEMPTY = re.compile(r".+", re.S)
_KIND = re.compile(r"[a-z][a-z-]{0,31}")
_ART_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}")  # PEP 508 and conda names
_VERSION = re.compile(r"[A-Za-z0-9_.+!-][A-Za-z0-9_.+!*-]{0,127}")
_FILENAME = re.compile(r"[^/\\\x00]{1,255}")
_SUBDIR = re.compile(r"[a-z0-9_-]{1,32}")


# --- manifests (kept as dicts: pack and fetch read them by key; validated here, once) ---------------

_REL_PATH = re.compile(r"(?!/)(?!.*(^|/)\.\.(/|$))[^\x00\n\r]{1,4096}")


def check_pack_manifest(data: Any, path: str, error: type[EnvbuildError] = InputError) -> dict[str, Any]:
    """Validate an archive's ``envbuild-manifest.json``; returns it unchanged when every field is sound.

    Raises:
        InputError: a field has the wrong type or format (``error`` when given).
    """
    f = Fields(data, path=path, error=error, what="a manifest object",
               hint="The archive's manifest is damaged or was not written by 'envbuild pack'; pack it again.")
    f.whole("schema_version", lo=1, hi=1, wanted="1 (written by a newer envbuild?)")
    for key in ("generated_by", "created", "kind", "format", "python", "checksums"):
        f.text(key, wanted="a string")
    if f.data.get("checksums") is not None:
        f.text("checksums", pattern=_FILENAME, wanted="a plain file name")
    src = f.sub("source") if f.data.get("source") is not None else None
    if src is not None:
        src.text("prefix", wanted="the packed env's path")
        if src.data.get("profile") is not None:
            Profile.from_dict(src.data["profile"], path=path, where="source.profile", error=error)
    if f.data.get("torch") is not None:
        t = f.sub("torch")
        t.text("version", pattern=_VERSION, wanted="a torch version")
        t.text("cuda", pattern=CUDA_XY, wanted='a CUDA version such as "11.3" or null')
        t.text("site", pattern=_REL_PATH, wanted="a path inside the env")
    for p in f.objs("packages", "a package object"):
        p.req("name", pattern=_ART_NAME, wanted="a package name")
        p.text("version", numbers=True, wanted="a version")
        for key in ("build", "installer", "channel", "cuda", "path", "site"):
            p.text(key, wanted="a string or null")
    if f.data.get("lock") is not None:
        # whatever lock JSON the env carried (pack copies it as found); only its name is read
        f.sub("lock").text("name", wanted="the lock's name")
    if f.data.get("fixup") is not None:
        _check_manifest_fixup(f.sub("fixup"))
    return f.data


def _check_manifest_fixup(fx: Fields) -> None:
    """The manifest's ``fixup`` section: every path in it stays inside the env."""
    fx.text("kind", pattern=_KIND, wanted="conda or venv")
    fx.text("old_prefix", wanted="the packed env's path")
    fx.strs("shebangs", pattern=_REL_PATH, wanted="a relative path inside the env")
    fx.strs("text_files", pattern=_REL_PATH, wanted="a relative path inside the env")
    links = fx.sub("python_links") if fx.data.get("python_links") is not None else None
    if links is not None:
        for rel in links.data:
            if not _REL_PATH.fullmatch(rel):
                links.fail(None, rel, "relative paths inside the env as keys")
            links.req(rel, wanted="a link target")


CACHE_MANIFEST_SCHEMA = 1


@dataclass(frozen=True)
class ManifestEntry:
    """One file of the offline cache as ``manifest.json`` records it.

    ``kind`` is the lock artifact's kind or what fetch made: ``git-wheel``, ``git-sdist``,
    ``build-req``, ``tool``; ``build_key`` (build requirements, the uv wheel) says for which
    Python, platform and requirements they were resolved.
    """

    # the file as it lies in the cache
    file: str
    sha256: str
    size: int
    # where it came from (a git build: the repository and its commit)
    url: str
    commit: str | None
    # what it is
    kind: str
    name: str
    version: str
    build_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.build_key is None:  # only build requirements and tools carry one
            del d["build_key"]
        return d


@dataclass(frozen=True)
class CacheManifest:
    """``offline_cache/manifest.json``: which lock the cache was fetched for, and every file's sha256.

    fetch writes it last; bundle, verify-cache and install-offline.sh read it (the script with awk:
    ``dumps`` keeps one key per line, sorted, so ``file`` precedes ``sha256``).
    """

    files: tuple[ManifestEntry, ...]
    lock_name: str = ""
    lock_spec_hash: str = ""
    python: str = ""
    platform: str | None = None
    schema_version: int = CACHE_MANIFEST_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "lock_name": self.lock_name,
                "lock_spec_hash": self.lock_spec_hash, "python": self.python, "platform": self.platform,
                "files": [e.to_dict() for e in self.files]}

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def by_file(self) -> dict[str, ManifestEntry]:
        return {e.file: e for e in self.files}

    @classmethod
    def from_dict(cls, data: Any, path: str, error: type[EnvbuildError] = InputError) -> CacheManifest:
        """Validate a cache's ``manifest.json``.

        Raises:
            InputError: a field has the wrong type or format (``error`` when given).
        """
        f = Fields(data, path=path, error=error, what="an object with a 'files' list",
                   hint="Run 'envbuild fetch LOCKDIR --cache DIR' to (re)build the cache.")
        if not isinstance(f.data.get("files"), list):
            f.fail("files", f.data.get("files"), "a list of file entries")
        files = tuple(
            ManifestEntry(
                file=e.req("file", pattern=_REL_PATH, wanted="a relative path inside the cache"),
                sha256=e.req("sha256", pattern=SHA256, wanted="a 64-hex sha256"),
                size=e.whole("size", hi=2**50, default=0, wanted="the size in bytes") or 0,
                url=e.text("url", wanted="a string") or "",
                name=e.text("name", wanted="a string") or "",
                version=e.text("version", numbers=True, wanted="a string") or "",
                kind=e.text("kind", wanted="a string") or "",
                commit=e.text("commit", pattern=COMMIT, wanted="a full git commit sha"),
                build_key=e.text("build_key", wanted="a string"),
            )
            for e in f.objs("files", "a file entry"))
        return cls(files=files, lock_name=f.text("lock_name", wanted="a lock name") or "",
                   lock_spec_hash=f.text("lock_spec_hash", wanted="a hash") or "",
                   python=f.text("python", numbers=True, wanted="a Python version") or "",
                   platform=f.text("platform", wanted="a platform tag"),
                   schema_version=f.whole("schema_version", lo=1, hi=CACHE_MANIFEST_SCHEMA,
                                          default=CACHE_MANIFEST_SCHEMA,
                                          wanted=f"{CACHE_MANIFEST_SCHEMA} (written by a newer envbuild?)")
                   or CACHE_MANIFEST_SCHEMA)


def check_cache_manifest(data: Any, path: str, error: type[EnvbuildError] = InputError) -> dict[str, Any]:
    """Validate an offline cache's ``manifest.json`` (``CacheManifest.from_dict``); returns it unchanged.

    Raises:
        InputError: a field has the wrong type or format (``error`` when given).
    """
    CacheManifest.from_dict(data, path, error=error)
    return dict(data)


def _conflicts(f: Fields) -> list[Conflict]:
    """A resolution's conflicts: the sentences, with their records when ``conflict_details`` has them."""
    texts = f.strs("conflicts", wanted="a sentence", controls=True)
    details = list(f.objs("conflict_details", "a conflict object"))
    out = []
    for i, text in enumerate(texts):
        d = details[i] if i < len(details) else None
        if d is None:
            out.append(Conflict(text))
            continue
        facts = tuple(Fact(text=x.text("text", wanted="a sentence", controls=True) or "",
                           source=x.text("source", wanted="a source", controls=True) or "",
                           confidence=x.text("confidence", wanted="a confidence level") or "confirmed")
                      for x in d.objs("facts", "a fact object"))
        out.append(Conflict(text, facts, d.text("suggestion", wanted="a sentence", controls=True)))
    return out
