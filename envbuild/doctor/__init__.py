"""Diagnose a CUDA deep-learning environment: read error logs, check an installed env.

Both entry points share one vocabulary of *families* (stable ids such as ``driver-too-old`` or
``undefined-symbol``, listed with their meaning in ``envbuild/data/finding_families.json``):

- ``rules``: :func:`read_log` matches the regexes of ``envbuild/data/doctor_rules.json`` against
  an error log and fills each rule's cause/fix templates (``facts`` builds their context from what
  the log, the env and the target profile say: versions, the needed driver, gcc max);
- ``checks``: :func:`check_env` checks an installed env with its own interpreter and its ELF files;
- ``report``: the ``Finding`` and ``Report`` records, their order, the verdict, and the printing.

:func:`diagnose` runs both and concludes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from envbuild.doctor.checks import check_env, check_prefix, dist_extensions, env_info, torch_cuda_links
from envbuild.doctor.facts import LIB_FAMILY, LibKind, library_kind
from envbuild.doctor.report import (
    SEVERITIES,
    VERDICTS,
    Finding,
    Report,
    conclude,
    dedupe,
    present_report,
    rank,
)
from envbuild.doctor.rules import load_rules, log_summary, read_log, read_log_file
from envbuild.models import Profile, known  # known: re-exported for older imports

__all__ = [
    "FAMILIES",
    "LIB_FAMILY",
    "SEVERITIES",
    "VERDICTS",
    "Finding",
    "LibKind",
    "Report",
    "check_env",
    "diagnose",
    "dist_extensions",
    "env_info",
    "known",
    "library_kind",
    "load_rules",
    "present_report",
    "read_log",
    "read_log_file",
    "torch_cuda_links",
]


def __getattr__(name: str) -> Any:
    # FAMILIES is read from the registry on first use, so importing doctor (pack does) reads no data
    if name == "FAMILIES":
        from envbuild.doctor.report import doctor_families

        return doctor_families()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def diagnose(
    prefix: Path | None = None,
    profile: Profile | None = None,
    log_text: str | None = None,
    *,
    log_name: str | None = None,
    load: bool = True,
) -> Report:
    """Run the env checks (when ``prefix``) and read the log (when ``log_text``).

    Raises:
        InputError: ``prefix`` is not an env directory.
        ToolError: the env's interpreter failed.
    """
    t0 = time.perf_counter()
    findings: list[Finding] = []
    info: dict[str, Any] | None = None
    checked: dict[str, Any] = {}
    if prefix is not None:
        prefix = Path(prefix)
        findings, info, checked = check_prefix(prefix, profile, load=load)
    log_findings: list[Finding] = []
    if log_text is not None:
        log_findings = read_log(log_text, profile, info)
        findings += log_findings
        checked.update(log_summary(log_text))
    ranked = rank([(f, i) for i, f in enumerate(dedupe(findings))])
    return Report(
        findings=conclude(ranked, checked, prefix=prefix, log_given=log_text is not None,
                          log_explained=bool(log_findings), targeted=profile is not None),
        prefix=None if prefix is None else str(prefix),
        log=log_name,
        checked=checked,
        seconds=time.perf_counter() - t0,
    )
