"""The records doctor (and pack/unpack) report, their order, doctor's verdict, and how they print.

A ``Finding`` names a family of ``envbuild/data/finding_families.json`` (the one registry, read
through ``envbuild.matrix.finding_families``); ``Report`` is what ``envbuild doctor`` prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envbuild.errors import DataError

__all__ = ["SEVERITIES", "VERDICTS", "Finding", "Report", "doctor_families", "present_report"]

SEVERITIES = ("error", "warning", "info")
# Verdicts are findings too (info), so JSON readers see one list; they are not failure families.
VERDICTS = (
    "healthy",  # an env whose every check ran and found nothing (and a log, if given, with a known cause)
    "incomplete",  # nothing found, but some check did not run (named in the finding)
    "no-known-cause",  # a log none of the rules recognise: envbuild does not know why it failed
)
# Tests set this: a Finding whose text holds the word None (a missing fact formatted raw) then raises
# instead of being repaired, so every message template is checked with missing facts.
STRICT_TEXT = False
_NONE_WORD = re.compile(r"\bNone\b")
_FINDING_KEYS = ("family", "severity", "cause", "fix", "evidence", "source", "rule", "library_kind")


def _registered(family: str) -> bool:
    from envbuild.matrix import finding_families

    try:
        return family in finding_families()
    except DataError:  # a broken registry must not stop a diagnosis: the family goes unchecked
        return True


def doctor_families() -> tuple[str, ...]:
    """The failure families doctor reports (its log rules and env checks), in the registry's order."""
    from envbuild.matrix import finding_families

    return tuple(
        f.id for f in finding_families().values() if f.kind == "failure" and "doctor" in f.used_by
    )


@dataclass(frozen=True)
class Finding:
    """One diagnosis: which family, how bad, the cause in a sentence, the fix, what shows it."""

    family: str
    severity: str
    cause: str
    fix: str
    evidence: str
    source: str | None = None  # an explanation to read (FAQ, upstream issue)
    rule: str | None = None
    weight: int = 50
    # for a missing library: nvidia-cuda|nvidia-driver|torch|package|system|unknown
    library_kind: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} of a {self.family} finding: use {SEVERITIES}")
        if not _registered(self.family):
            raise ValueError(f"unknown finding family {self.family!r}: add it to "
                             "envbuild/data/finding_families.json with its meaning")
        for name in ("cause", "fix", "evidence"):
            text = getattr(self, name)
            if _NONE_WORD.search(text):
                if STRICT_TEXT:
                    raise AssertionError(f"'None' in the {name} of a {self.family} finding: {text}")
                object.__setattr__(self, name, _NONE_WORD.sub("unknown", text))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FINDING_KEYS}


@dataclass
class Report:
    """What ``envbuild doctor`` prints: findings most likely first, and what was looked at."""

    findings: list[Finding]
    prefix: str | None = None
    log: str | None = None
    checked: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def verdict(self) -> str:
        """error | warning | one of VERDICTS: what the exit code says."""
        sev = {f.severity for f in self.findings}
        for v in ("error", "warning"):
            if v in sev:
                return v
        fams = {f.family for f in self.findings}
        for v in ("no-known-cause", "incomplete"):
            if v in fams:
                return v
        return "healthy"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "verdict": self.verdict, "prefix": self.prefix, "log": self.log}
        out["checked"], out["seconds"] = self.checked, round(self.seconds, 3)
        out["findings"] = [f.to_dict() for f in self.findings]
        return out


# --- order -------------------------------------------------------------------------------------------


def rank(items: Iterable[tuple[Finding, int]]) -> list[Finding]:
    """Most likely first: by severity, then weight, then where it showed (a log offset)."""
    sev = {s: i for i, s in enumerate(SEVERITIES)}
    return [f for f, _ in sorted(items, key=lambda fp: (sev[fp[0].severity], -fp[0].weight, fp[1]))]


def dedupe(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per (family, cause): the env check and the log often say the same."""
    seen: set[tuple[str, str]] = set()
    out = []
    for f in findings:
        k = (f.family, f.cause)
        if k not in seen:
            seen.add(k)
            out.append(f)
    return out


# --- the verdict when nothing is wrong -----------------------------------------------------------------


def conclude(
    ranked: list[Finding],
    checked: Mapping[str, Any],
    *,
    prefix: Path | None,
    log_given: bool,
    log_explained: bool,
    targeted: bool,
) -> list[Finding]:
    """``ranked`` plus doctor's verdict finding: no-known-cause, incomplete or healthy (when due)."""
    if log_given and not log_explained:
        return [*ranked, _no_known_cause(checked)]
    if prefix is None or any(f.severity in ("error", "warning") for f in ranked):
        return ranked
    what = f"{checked.get('packages')} packages and {checked.get('extensions')} compiled extensions"
    what += f" in {prefix}"
    ran = "ran: " + ", ".join(checked.get("checks") or [])
    # the driver/GPU checks need a target; without one, 'healthy' is about this machine
    missing = {k: v for k, v in (checked.get("skipped") or {}).items() if k != "driver-and-gpu"}
    if missing:
        not_run = "; ".join(f"{k} ({v})" for k, v in missing.items())
        return [*ranked, Finding(
            "incomplete", "info", f"No problem found in {what} by the checks that ran; not run: {not_run}.",
            "Run without the option that skipped them for a full check.", ran, rule="incomplete", weight=0)]
    scope = " for the target" if targeted else " (no --target: driver/GPU not checked)"
    return [*ranked, Finding("healthy", "info", f"No known problem found in {what}{scope}.",
                             "Nothing to fix.", ran, rule="healthy", weight=0)]


def _no_known_cause(checked: Mapping[str, Any]) -> Finding:
    fams = checked["log_families"]
    return Finding(
        "no-known-cause",
        "info",
        f"No known cause found in the log ({checked['log_lines']} lines): none of the "
        f"{checked['log_rules']} rules of {len(fams)} failure families matched, so envbuild cannot "
        "say why it failed.",
        "Look at the last error in the log; if it is an environment problem envbuild should know, "
        "run 'envbuild doctor --prefix ENV' on the env, or report the text so a rule can be added.",
        "checked families: " + ", ".join(fams),
        rule="no-known-cause",
        weight=0,
    )


# --- printing ------------------------------------------------------------------------------------------


def present_report(report: Report, as_json: bool) -> None:
    """Print the findings: JSON (``findings`` most likely first) or a table plus one paragraph each."""
    from envbuild.output import console, print_json, styled, table

    if as_json:
        print_json(report.to_dict())
        return
    console.print(
        table(
            "envbuild doctor"
            + (f": {report.prefix}" if report.prefix else "")
            + (f" + {report.log}" if report.log else ""),
            ["#", "severity", "family", "cause"],
            [(i + 1, f.severity, f.family, f.cause) for i, f in enumerate(report.findings)],
        )
    )
    for i, f in enumerate(report.findings):
        if f.family in VERDICTS:
            if f.family != "healthy":
                console.print(f"{i + 1}. {f.family}: {f.fix}", markup=False, highlight=False)
                console.print(f"   {f.evidence}", markup=False, highlight=False)
            continue
        console.print(styled(f"{i + 1}. {f.family}", "bold", f"({f.severity})"), highlight=False)
        console.print(f"   fix: {f.fix}", markup=False, highlight=False)
        console.print(f"   evidence: {f.evidence}", markup=False, highlight=False)
        if f.source:
            console.print(f"   read: {f.source}", markup=False, highlight=False)
    console.print(f"checked in {report.seconds:.2f} s", markup=False, highlight=False)
