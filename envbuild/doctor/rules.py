"""Read an error log: the rules of ``envbuild/data/doctor_rules.json`` matched against it.

Each rule names a failure family (of ``finding_families.json``), a regex with its anchors, and
cause/fix templates filled with what the log, the env and the target profile say (``facts``).
"""

from __future__ import annotations

import re
import string
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from envbuild.doctor.facts import LIB_FAMILY, Facts, data_facts, derive, env_ctx, library_kind, profile_ctx
from envbuild.doctor.report import SEVERITIES, Finding, doctor_families, rank
from envbuild.errors import DataError, InputError
from envbuild.models import Profile

__all__ = ["fill", "load_rules", "log_summary", "read_log", "read_log_file"]


@dataclass(frozen=True)
class _Rule:
    id: str
    family: str
    severity: str
    weight: int
    pattern: re.Pattern[str]
    anchors: tuple[str, ...]  # every match contains one: the regex runs only around them
    cause: tuple[str, ...]
    fix: tuple[str, ...]
    source: str | None


@lru_cache(maxsize=1)
def load_rules() -> tuple[_Rule, ...]:
    """The log rules of ``envbuild/data/doctor_rules.json``, regexes compiled.

    Raises:
        DataError: the file is missing or a rule is malformed.
    """
    from envbuild import matrix

    data = matrix.load_doctor_rules()
    rules_file = str(matrix.DATA_DIR / "doctor_rules.json")
    families = {f: matrix.finding_families()[f].source for f in doctor_families()}
    return tuple(_rule(i, r, rules_file, families) for i, r in enumerate(data.get("rules") or []))


def _seq(v: Any) -> tuple[str, ...]:
    return tuple(v) if isinstance(v, list) else (str(v),)


def _rule(i: int, r: Mapping[str, Any], rules_file: str, families: Mapping[str, str]) -> _Rule:
    """Rule ``i`` checked: a doctor family of the registry, a severity, a regex and its anchors."""
    where = f"rules[{i}]"
    fam = str(r.get("family"))
    if fam not in families:
        raise DataError(f"unknown family {fam!r} (the doctor families of finding_families.json).",
                        path=rules_file, field=where)
    if r.get("severity", "error") not in SEVERITIES:
        raise DataError("severity must be error|warning|info.", path=rules_file, field=where)
    try:
        pat = re.compile(r["pattern"], re.MULTILINE | (re.IGNORECASE if "i" in r.get("flags", "") else 0))
    except (KeyError, re.error) as exc:
        raise DataError(f"bad pattern ({exc}).", path=rules_file, field=where) from None
    anchors = r.get("anchors")
    if not isinstance(anchors, list) or not anchors or not all(isinstance(a, str) and a for a in anchors):
        raise DataError(
            "anchors must be a non-empty list of the literal strings every match contains.",
            path=rules_file,
            field=where + ".anchors",
        )
    return _Rule(
        id=str(r.get("id") or f"{fam}-{i}"),
        family=fam,
        severity=r.get("severity", "error"),
        weight=int(r.get("weight", 50)),
        pattern=pat,
        anchors=tuple(a.lower() for a in anchors) if "i" in r.get("flags", "") else tuple(anchors),
        cause=_seq(r.get("cause", "")),
        fix=_seq(r.get("fix", "")),
        source=r.get("source") or families[fam],
    )


_FMT = string.Formatter()


def fill(templates: Sequence[str], ctx: Mapping[str, Any]) -> str:
    """The first template whose every {field} is known in ``ctx``."""
    for t in templates:
        names = [f for _, f, _, _ in _FMT.parse(t) if f]
        if all(ctx.get(n) not in (None, "") for n in names):
            return t.format_map(ctx)
    return templates[-1] if templates else ""



def _snippet(text: str, m: re.Match[str]) -> str:
    # bounded searches: the evidence of a match in a 40 KB line is the window around it
    start = _line_start(text, m.start())
    end = text.find("\n", m.end(), m.end() + _BEFORE)
    end = end if end != -1 else min(len(text), m.end() + _BEFORE)
    if end - start > 300:  # a long line: keep the window around the match
        a, b = max(start, m.start() - 60), min(end, max(m.end(), m.start() + 200) + 40)
        return ("..." if a > start else "") + text[a:b].strip() + ("..." if b < end else "")
    return text[start:end].strip()


# A regex runs only on windows around its rule's anchors: from the anchor's line start (at most
# _BEFORE characters back) to the end of the line _AFTER characters on (multi-line rules such as pip's
# "The conflict is caused by:" block fit in it). Finding anchors is str.find (C speed), so a 20 MB log
# costs a few scans of it, and a 40 KB line costs no more than its windows.
_BEFORE, _AFTER = 4096, 8192


def _line_start(text: str, pos: int) -> int:
    """Where the line holding ``pos`` starts, looking back at most _BEFORE characters."""
    floor = max(0, pos - _BEFORE)
    nl = text.rfind("\n", floor, pos)
    return floor if nl == -1 and floor > 0 else nl + 1


def _windows(text: str, anchors: Sequence[str], lowered: str | None) -> list[tuple[int, int]]:
    hay = text if lowered is None else lowered
    spans: list[tuple[int, int]] = []
    n = len(text)
    for a in anchors:
        pos = hay.find(a)
        while pos != -1:
            lo = _line_start(text, pos)
            end = min(n, pos + len(a) + _AFTER)
            nl = text.find("\n", end)
            hi = n if nl == -1 else nl
            spans.append((lo, hi))
            pos = hay.find(a, max(hi - len(a) + 1, pos + 1))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _matches(
    rule: _Rule, text: str, lowered: str | None, *, anchored: bool = True
) -> Iterable[re.Match[str]]:
    """Every match of ``rule`` in ``text``; ``anchored=False`` scans it all (what tests compare with)."""
    if not anchored:
        yield from rule.pattern.finditer(text)
        return
    for lo, hi in _windows(text, rule.anchors, lowered):
        yield from rule.pattern.finditer(text, lo, hi)


def _line_starts(text: str, m: re.Match[str]) -> list[int]:
    """The offsets of the lines a match touches (bounded: a match is at most a window long)."""
    lo = _line_start(text, m.start())
    out = [lo]
    nl = text.find("\n", lo, m.end())
    while nl != -1:
        out.append(nl + 1)
        nl = text.find("\n", nl + 1, m.end())
    return out


def read_log(
    text: str,
    profile: Profile | None = None,
    env: Mapping[str, Any] | None = None,
    *,
    anchored: bool = True,
) -> list[Finding]:
    """Name the failure families an error log shows, most likely first.

    ``profile`` (the target machine) and ``env`` (from :func:`env_info`) make the
    fixes concrete: versions of torch, the driver needed, the gcc nvcc accepts.
    Linear in the log's size (see ``_windows``); ``anchored=False`` runs every regex on
    the whole text (slower; tests use it to check the anchors).
    """
    facts = data_facts()
    base: dict[str, Any] = {**profile_ctx(profile, facts), **env_ctx(env)}
    found: dict[tuple[str, str], tuple[Finding, int]] = {}
    claimed: dict[str, set[int]] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    rules = load_rules()
    lowered = text.lower() if any(r.pattern.flags & re.IGNORECASE for r in rules) else None
    for rule in rules:
        low = lowered if rule.pattern.flags & re.IGNORECASE else None
        # the two library families share one claim: a line names one missing library
        lines = claimed.setdefault("lib" if rule.family in LIB_FAMILY.values() else rule.family, set())
        for m in _matches(rule, text, low, anchored=anchored):
            # rules are listed specific-first: a generic rule of the same family that matches the same
            # line adds nothing
            touched = _line_starts(text, m)
            if any(ln in lines for ln in touched):
                continue
            lines.update(touched)
            groups = {k: v for k, v in m.groupdict().items() if v}
            key_groups = (rule.id, tuple(sorted(groups.items())))
            if key_groups in seen:  # the same captures give the same finding: a repeated line costs nothing
                continue
            seen.add(key_groups)
            f = _finding(rule, m, text, {**base, **{k.rstrip("2"): v for k, v in groups.items()}}, facts)
            found.setdefault((f.family, f.cause), (f, m.start()))
    return rank([(f, pos) for f, pos in found.values()])


def _finding(rule: _Rule, m: re.Match[str], text: str, ctx: dict[str, Any], facts: Facts) -> Finding:
    """What ``rule`` says of match ``m``; ``ctx`` holds the base context and the match's groups
    (alternatives in one pattern name their groups x, x2: a regex name must be unique)."""
    derive(ctx, facts)
    family, lib_kind = rule.family, None
    lib = str(ctx.get("lib") or "")
    if rule.family in ("cuda-lib-missing", "lib-missing") and lib:
        if "/" in lib or ".cpython-" in lib:
            # the module itself cannot be opened: per the mmcv FAQ the CUDA/gcc runtime it was
            # built with differs from the env's (seed scenario C)
            family = "cuda-lib-missing"
        else:
            lk = library_kind(lib)
            family, lib_kind = lk.family, lk.kind
    return Finding(
        family=family,
        severity=rule.severity,
        cause=fill(rule.cause, ctx),
        fix=fill(rule.fix, ctx),
        evidence=_snippet(text, m),
        source=rule.source,
        rule=rule.id,
        weight=rule.weight,
        library_kind=lib_kind,
    )


def read_log_file(path: str) -> tuple[str, str]:
    """The text of ``--log FILE`` (``-`` is stdin) and the name to show for it.

    Raises:
        InputError: the file cannot be read.
    """
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(errors="replace"), path
    except OSError as exc:
        raise InputError(
            f"cannot read the log ({exc.strerror}).",
            path=path,
            field="--log",
            hint="Pass a text file with the error output, or '-' for stdin.",
        ) from None



def log_summary(text: str) -> dict[str, Any]:
    """What reading ``text`` looked at: its lines, the rules and the families they name."""
    rules = load_rules()
    return {
        "log_lines": text.count("\n") + 1,
        "log_rules": len(rules),
        "log_families": sorted({r.family for r in rules}),
    }
