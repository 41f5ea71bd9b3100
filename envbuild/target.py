"""The target machine: one rule for building its ``Profile`` from a profile file and flags.

Every command that plans for a machine (resolve, lock, plan, rebuild) describes it the same way:
``--target FILE`` (from ``envbuild probe``), else the spec's ``[target] profile``, overridden by
``--python/--driver/--gpu/--cuda-toolkit/--gcc/--cpu``.  ``TargetFlags`` carries those flags from the
CLI; ``build_target`` applies this rule; ``make_target`` applies flags to an already loaded profile.
GPU names are looked up in the bundled data (``envbuild.matrix``); the resolver itself never reads a
file, a flag or the host.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envbuild.errors import InputError, ProfileError

if TYPE_CHECKING:
    from envbuild.matrix import Matrix
    from envbuild.models import Gpu, Profile
    from envbuild.spec import Spec

__all__ = ["TargetFlags", "build_target", "host_python", "load_target_file", "make_target", "profile_path"]


def host_python() -> str:
    """envbuild's own Python X.Y: the lock engines can run for it, so callers prefer it when free."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


@dataclass(frozen=True)
class TargetFlags:
    """The seven target options as given on the command line (None / False: not given)."""

    target: Path | None = None
    python: str | None = None
    driver: str | None = None
    gpu: str | None = None
    cuda_toolkit: str | None = None
    gcc: str | None = None
    cpu: bool = False

    def described(self) -> bool:
        """A profile file or any flag that describes the machine was given."""
        return self.target is not None or any(self.overrides().values())

    def overrides(self) -> dict[str, Any]:
        """The flags that override a profile, by ``make_target`` keyword."""
        return {"python": self.python, "driver": self.driver, "gpu": self.gpu,
                "cuda_toolkit": self.cuda_toolkit, "gcc": self.gcc, "cpu": self.cpu}

    def check_values(self) -> dict[str, Any]:
        """The values for ``cli.check_flags`` (flag name with '_' for '-')."""
        return {"target": self.target, **{k: v for k, v in self.overrides().items() if k != "cpu"}}


def _parse_cc(text: str) -> str | None:
    """'sm_86' / 'sm86' / 'compute_86' / '8.6' -> '8.6'; None when it is not a capability."""
    t = text.strip().lower()
    m = re.fullmatch(r"(?:sm|compute)_?(\d{2,3})", t)
    if m:
        d = m.group(1)
        return f"{d[:-1]}.{d[-1]}"
    if re.fullmatch(r"\d{1,2}\.\d", t):
        return t
    return None


def _check_version(value: str, flag: str, pattern: str, example: str) -> str:
    if not re.fullmatch(pattern, value.strip()):
        raise InputError(f"'{value}' is not a valid version for {flag}.", field=flag,
                         hint=f"Write it like {example}.")
    return value.strip()


def _gpu_from_name(name: str, m: Matrix, where: str, path: str | None = None) -> Gpu:
    from envbuild.models import Gpu

    cc = _parse_cc(name)
    if cc is not None:
        return Gpu(name=f"sm_{cc.replace('.', '')}", compute_capability=cc)
    model = m.gpu(name)
    if model is None:
        close = m.suggest_gpus(name)
        hint = ("Did you mean: " + ", ".join(repr(c) for c in close) + "? " if close else "")
        raise ProfileError(
            f"unknown GPU model '{name}'.", path=path, field=where,
            hint=hint + "Or give the compute capability instead, e.g. --gpu sm_86 or --gpu 8.6.")
    return Gpu(name=name, compute_capability=model.compute_capability)


def _flag_changes(m: Matrix, *, python: str | None, driver: str | None, gpu: str | None,
                  cuda_toolkit: str | None, gcc: str | None, cpu: bool) -> dict[str, Any]:
    """The profile fields the flags set (checked: a malformed value is refused here)."""
    from envbuild.matrix import xy
    from envbuild.models import Toolkit

    changes: dict[str, Any] = {}
    if python is not None:
        changes["python_version"] = _check_version(python, "--python", r"3\.\d{1,2}(\.\d+)?", "--python 3.10")
    if cpu and (gpu or driver):
        raise InputError("--cpu cannot be combined with --gpu or --driver.", field="--cpu",
                         hint="Drop --cpu to plan for a GPU machine, "
                              "or drop --gpu/--driver for a CPU-only one.")
    if driver is not None:
        drv = _check_version(driver, "--driver", r"\d{2,4}(\.\d{1,3}){1,2}", "--driver 470.223.02")
        changes["driver_version"] = drv
        changes["driver_cuda_version"] = m.native_cuda(drv)
    if gpu is not None:
        changes["gpus"] = (_gpu_from_name(gpu, m, "--gpu"),)
    if cuda_toolkit is not None:
        tk = _check_version(cuda_toolkit, "--cuda-toolkit", r"\d{1,2}\.\d(\.\d+)?", "--cuda-toolkit 11.3")
        changes["cuda_toolkits"] = (Toolkit(version=xy(tk), path=None, source="--cuda-toolkit"),)
    if gcc is not None:
        changes["gcc_version"] = _check_version(gcc, "--gcc", r"\d{1,2}(\.\d+){0,2}", "--gcc 7.5")
    if cpu:
        changes.update(gpus=(), driver_version=None, driver_cuda_version=None)
    return changes


def make_target(base: Profile | None, *, python: str | None = None, driver: str | None = None,
                gpu: str | None = None, cuda_toolkit: str | None = None, gcc: str | None = None,
                cpu: bool = False, matrix: Matrix | None = None) -> Profile:
    """The target profile: ``base`` (a probed/loaded profile or nothing) overridden by flags.

    Raises:
        InputError: a flag value is malformed or flags contradict each other (--cpu with --gpu/--driver).
        ProfileError: a GPU name is unknown (suggests close names).
    """
    # The data and the profile model are imported here, not with the module: the CLI imports
    # TargetFlags to declare its options, and only a command that plans for a target needs them.
    from packaging.version import InvalidVersion

    from envbuild.matrix import load_matrix
    from envbuild.models import Gpu, Profile

    m = matrix or load_matrix()
    prof = base or Profile(notes=("described by flags",))
    prof = dataclasses.replace(prof, **_flag_changes(m, python=python, driver=driver, gpu=gpu,
                                                     cuda_toolkit=cuda_toolkit, gcc=gcc, cpu=cpu))
    # A loaded profile may name a GPU without its capability: fill it from the data (or refuse).
    gpus = []
    for i, g in enumerate(prof.gpus):
        if g.compute_capability:
            gpus.append(g)
        else:
            filled = _gpu_from_name(g.name, m, f"gpus[{i}].name")
            gpus.append(Gpu(name=g.name, compute_capability=filled.compute_capability,
                            memory_mib=g.memory_mib))
    if prof.driver_version and not prof.driver_cuda_version:
        try:
            gpus_ok = m.native_cuda(prof.driver_version)
        except InvalidVersion:
            raise ProfileError(f"'{prof.driver_version}' is not a driver version.", field="driver_version",
                               hint="Write it like 470.223.02.") from None
        prof = dataclasses.replace(prof, driver_cuda_version=gpus_ok)
    return dataclasses.replace(prof, gpus=tuple(gpus))


def load_target_file(path: Path | None) -> Profile | None:
    """The ``--target`` profile exactly as written, no flags applied (doctor and unpack check against it).

    Raises:
        ProfileError: the file is missing, not UTF-8 JSON, or malformed.
    """
    from envbuild.models import load_profile

    return load_profile(path) if path is not None else None


def profile_path(flags: TargetFlags, spec: Spec | None = None) -> Path | None:
    """``--target``, else the spec's ``[target] profile`` (relative to the spec when not found as given)."""
    if flags.target is not None:
        return flags.target
    if spec is None or not spec.target_profile:
        return None
    p = Path(spec.target_profile)
    if not p.is_absolute() and not p.exists() and spec.path:
        p = Path(spec.path).parent / p
    return p


def build_target(flags: TargetFlags, spec: Spec | None = None, *, matrix: Matrix | None = None) -> Profile:
    """The target of a command: the profile file (``--target`` or the spec's) overridden by the flags.

    The spec's Python fills in when ``--python`` is not given.

    Raises:
        InputError: a flag value is malformed or flags contradict each other.
        ProfileError: the profile file is unreadable or malformed, or a GPU name is unknown (the error
            names the profile file when the bad GPU came from it).
    """
    from envbuild.models import load_profile

    path = profile_path(flags, spec)
    base = load_profile(path) if path is not None else None
    over = flags.overrides()
    if over["python"] is None and spec is not None:
        over["python"] = spec.python
    try:
        return make_target(base, matrix=matrix, **over)
    except ProfileError as exc:
        if exc.path is None and path is not None and (exc.field or "").startswith("gpus["):
            exc.path = str(path)  # the bad GPU came from the profile file, not a flag
        raise
