"""Re-target an existing env (or lock) to another machine: re-resolve, then change only what must change.

``rebuild`` reads what is installed (``--prefix``, through doctor's env reader, nothing
imported) or what a lock pinned (``lockfiles/NAME``), re-resolves the CUDA-sensitive
packages for the target profile with ``envbuild.resolve.resolve``, and writes:

- ``resolution.json``: the new resolution;
- ``plan.json``: every step with its reason (what ``--json`` prints);
- ``rebuild.sh``: reinstall the wheels whose build changes (torch +cu113 -> +cu102), then
  recompile the source-built ops (mmdet3d) with FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST of the
  target GPU, CUDA_HOME at a toolkit matching torch's CUDA and a gcc that nvcc accepts;
- ``lock/``: the new lock (``envbuild.lock``), unless ``lock=False``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from envbuild import __version__
from envbuild._fs import check_output_dir, output_dir, path_component
from envbuild.errors import InputError
from envbuild.models import Profile, Resolution, known, loose_version, loose_xy, pip_index_args

__all__ = [
    "CurrentEnv",
    "RebuildPlan",
    "Step",
    "current_from_lock",
    "current_from_prefix",
    "plan_rebuild",
    "rebuild",
    "render_script",
]

# Packages whose build depends on torch/CUDA: re-resolved for the target; others stay as installed.
CUDA_SENSITIVE = (
    "torch",
    "torchvision",
    "torchaudio",
    "mmcv-full",
    "mmcv",
    "mmdet",
    "mmsegmentation",
    "mmdet3d",
    "numpy",
    "spconv",
    "cupy",
)
_TORCH_FAMILY = ("torch", "torchvision", "torchaudio")


@dataclass
class CurrentEnv:
    """What the env (or lock) being re-targeted holds."""

    source: str
    kind: str  # "prefix" | "lock"
    python: str | None
    packages: dict[str, str]  # canonical name -> version (with local label)
    torch_cuda: str | None = None
    source_builds: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {version, dir, editable}
    requirements: list[str] = field(default_factory=list)
    manager: str = "venv"
    name: str = "env"
    # dists whose compiled files link torch or CUDA (ELF NEEDED / torch C++ symbols): rebuilt when torch
    # or CUDA changes; name -> the evidence ("_ext.so links libc10.so")
    compiled: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One change with its reason; ``kind`` is preflight|uninstall|install|build|verify."""

    kind: str
    reason: str
    package: str | None = None
    old: str | None = None
    new: str | None = None
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("kind", "package", "old", "new", "reason", "command", "env")}


@dataclass
class RebuildPlan:
    """The changes for the target, the build toolchain they need, and where files were written."""

    current: CurrentEnv
    target: Profile
    resolution: Resolution
    steps: list[Step]
    cuda: str | None
    arch_list: str | None
    cuda_home: str | None
    toolkit_found: bool
    gcc: str | None
    gcc_max: int | None
    index_args: list[str] = field(default_factory=list)  # where the new wheels come from (online)
    requirements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    out_dir: str | None = None
    files: list[str] = field(default_factory=list)
    lock_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "source": self.current.source,
            "source_kind": self.current.kind,
            "target": self.target.to_dict(),
            "cuda": self.cuda,
            "torch_cuda_arch_list": self.arch_list,
            "cuda_home": self.cuda_home,
            "toolkit_found": self.toolkit_found,
            "gcc": self.gcc,
            "gcc_max": self.gcc_max,
            "index_args": self.index_args,
            "requirements": self.requirements,
            "changes": {
                s.package: {"old": s.old, "new": s.new}
                for s in self.steps
                if s.kind in ("install", "build") and s.package
            },
            "steps": [s.to_dict() for s in self.steps],
            "notes": self.notes,
            "out_dir": self.out_dir,
            "files": self.files,
            "lock_dir": self.lock_dir,
            "resolution": self.resolution.to_dict(),
        }


# --- reading the current state -----------------------------------------------------------------


def _name(n: str) -> str:
    return str(canonicalize_name(n))


def _base(v: str | None) -> str | None:
    return None if v is None else v.split("+")[0]


def current_from_prefix(prefix: Path) -> CurrentEnv:
    """Describe an installed env via doctor's env reader (its own interpreter; nothing imported).

    A dist counts as source-built when pip recorded a local directory, a VCS URL or an sdist
    for it (direct_url.json) or when it is editable, and it ships compiled code.
    """
    from envbuild.doctor import dist_extensions, env_info, torch_cuda_links

    info = env_info(prefix)
    packages = {_name(d["name"]): str(d["version"]) for d in info.get("dists") or []}
    torch = info.get("torch") or {}
    if torch.get("version"):
        packages["torch"] = str(torch["version"])
    builds: dict[str, dict[str, Any]] = {}
    links: dict[str, str] = {}
    for d in info.get("dists") or []:
        direct = d.get("direct_url") or {}
        from_source = (
            direct.get("dir_info") is not None
            or direct.get("vcs_info") is not None
            or str(direct.get("url", "")).endswith((".tar.gz", ".zip"))
        )
        if (d.get("editable") or from_source) and (d.get("editable") or d.get("has_so")):
            url = str(direct.get("url") or "")
            src_dir = url[len("file://") :] if url.startswith("file://") else None
            builds[_name(d["name"])] = {
                "version": d["version"],
                "dir": src_dir,
                "editable": bool(d.get("editable")),
            }
            if src_dir and d.get("editable"):
                # an editable install's ops live in its source tree, not in site-packages
                why = torch_cuda_links(_tree_objects(Path(src_dir)))
                if why:
                    links[_name(d["name"])] = why
    # merely shipping compiled code (numpy) is no dependency on torch: the ELF files must link it or CUDA
    for name, paths in dist_extensions(info).items():
        if _name(name) in _TORCH_FAMILY:
            continue
        why = torch_cuda_links(paths)
        if why:
            links[_name(name)] = why
    return CurrentEnv(
        compiled=set(links),
        links=links,
        source=str(prefix),
        kind="prefix",
        python=".".join(str(info.get("python", "")).split(".")[:2]) or None,
        packages=packages,
        torch_cuda=torch.get("cuda"),
        source_builds=builds,
        manager="conda" if info.get("conda") else "venv",
        name=Path(prefix).name,
    )


def _tree_objects(root: Path, limit: int = 2000) -> list[str]:
    """The shared objects of a source tree (not .git, not build/), at most ``limit``."""
    out: list[str] = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", "build", "__pycache__")]
        out += [os.path.join(dirpath, f) for f in files if f.endswith(".so")]
        if len(out) >= limit:
            break
    return out[:limit]


def current_from_lock(lock_dir: Path) -> CurrentEnv:
    """Describe what a lock directory pinned (its resolution and its user requirements)."""
    from envbuild.lockfile import load_lock

    lk = load_lock(lock_dir)
    res = lk.resolution
    packages = {_name(k): str(v) for k, v in res.packages.items()}
    for a in lk.artifacts:
        packages.setdefault(_name(a.name), a.version)
    builds = {
        _name(sb.name): {"version": sb.version, "dir": None, "editable": False}
        for sb in res.source_builds
    }
    reqs = list((lk.spec or {}).get("requirements") or [])
    # a lock does not say which wheels hold compiled code; these are the CUDA builds among the pins
    compiled = {n for n in packages if n in ("mmcv-full", "spconv") or n.startswith(("cupy", "spconv"))}
    return CurrentEnv(
        compiled=compiled,
        source=str(lock_dir),
        kind="lock",
        python=lk.python,
        packages=packages,
        torch_cuda=res.cuda,
        source_builds=builds,
        requirements=reqs,
        manager=lk.manager,
        name=lk.name,
    )


def requirements_for(current: CurrentEnv) -> list[str]:
    """What to re-resolve: the lock's own requirements, or the env's CUDA-sensitive packages pinned."""
    if current.requirements:
        return list(current.requirements)
    reqs: list[str] = []
    for name, version in sorted(current.packages.items()):
        base = _base(version)
        if name.startswith("cupy"):
            reqs.append(f"cupy=={base}")  # the resolver picks the cupy-cudaXXX package for the target
        elif name in CUDA_SENSITIVE:
            reqs.append(f"{name}=={base}")
    return reqs


# --- planning ------------------------------------------------------------------------------------




def _arch_list(target: Profile, res: Resolution) -> str | None:
    ccs = sorted({g.compute_capability for g in target.gpus if g.compute_capability},
                 key=lambda c: loose_version(c) or 0)
    if ccs:
        return ";".join(ccs)
    got = res.build.get("torch_cuda_arch_list")
    return str(got) if got else None


def _gcc_max(cuda: str | None, res: Resolution) -> int | None:
    got = res.build.get("gcc_max")
    if got is not None:
        try:
            return int(str(got).split(".")[0])
        except ValueError:
            pass
    from envbuild.matrix import load_matrix

    return load_matrix().gcc_max(cuda) if cuda else None


def _pip(python: str, *args: str) -> list[str]:
    return [python, "-m", "pip", *args]


def _wheel_steps(
    current: CurrentEnv, res: Resolution, target: Profile, cuda: str | None, index_args: list[str]
) -> tuple[list[Step], bool]:
    """Wheels whose pin (or build) changes; True when the torch family changes."""
    steps: list[Step] = []
    sb_names = {_name(sb.name) for sb in res.source_builds}
    # 1. wheels whose pin changes (torch +cu113 -> +cu102, cupy-cuda113 -> cupy-cuda102)
    torch_changed = False
    new_torch = res.packages.get("torch")
    old_torch = current.packages.get("torch")
    torch_moves = (
        new_torch is not None
        and old_torch is not None
        and not _same_build("torch", old_torch, new_torch, current, res)
    )
    for name, pin in sorted(res.packages.items()):
        n = _name(name)
        if n in sb_names:
            continue
        old = current.packages.get(n)
        renamed = False
        if old is None and n.startswith("cupy"):
            uninstalls, old = _cupy_replaced(n, current, cuda)
            steps += uninstalls
            renamed = old is not None
        same = old is not None and _same_build(n, old, pin, current, res)
        rebuilt_for_torch = torch_moves and n in current.compiled and same
        if same and not rebuilt_for_torch:
            continue
        if old is None and n not in _TORCH_FAMILY and not n.startswith("cupy"):
            continue  # not installed before: the rebuild changes, it does not add
        torch_changed = torch_changed or (not renamed and not rebuilt_for_torch and n in _TORCH_FAMILY)
        why = _wheel_reason(n, old, pin, current, res, target, cuda, renamed=renamed,
                            rebuilt_for_torch=rebuilt_for_torch)
        cmd = _pip(_PY, "install", "--no-deps", "--force-reinstall", "--only-binary", ":all:", f"{n}=={pin}")
        steps.append(Step("install", why, n, old, pin, cmd))
    # torch first: the other wheels were built against it
    order = {"uninstall": 0, "install": 1}
    steps.sort(
        key=lambda st: (order.get(st.kind, 2), st.kind == "install" and st.package not in _TORCH_FAMILY)
    )
    return steps, torch_changed


_PY = "$PYTHON"  # rebuild.sh sets it to the env's interpreter


def _cupy_replaced(n: str, current: CurrentEnv, cuda: str | None) -> tuple[list[Step], str | None]:
    """The uninstalls of the env's cupy-cudaXXX that the target's ``n`` replaces, and the old pin."""
    olds = [k for k in current.packages if k.startswith("cupy")]
    steps = [
        Step("uninstall", f"{o} is built for another CUDA than the target's {cuda}; {n} replaces it",
             o, current.packages[o], None, _pip(_PY, "uninstall", "-y", o))
        for o in olds
    ]
    return steps, (f"{olds[0]}=={current.packages[olds[0]]}" if olds else None)


def _wheel_reason(
    n: str, old: str | None, pin: str, current: CurrentEnv, res: Resolution, target: Profile,
    cuda: str | None, *, renamed: bool, rebuilt_for_torch: bool,
) -> str:
    """Why wheel ``n`` is reinstalled (old -> pin)."""
    if renamed:
        return f"CuPy for CUDA {cuda} (the runtime torch will use) replaces {old}"
    if rebuilt_for_torch:
        evidence = f" ({current.links[n]})" if n in current.links else ""
        return (
            f"{n} {old} holds ops compiled for torch {current.packages.get('torch')}{evidence}; the "
            f"same version built for torch {res.packages.get('torch')} comes from the target's "
            "index/find-links"
        )
    if n not in _TORCH_FAMILY:
        return f"{n} {old} -> {pin}: the build for the target's torch/CUDA"
    was = current.torch_cuda or _cuda_of(old)
    built = f"is built for CUDA {was}" if was else "is a CPU build" if "+cpu" in str(old) else "is built"
    driver = (
        f"the target's driver {known(target.driver_version, '')} (CUDA "
        f"{known(target.driver_cuda_version)}) needs"
        if target.driver_version or target.driver_cuda_version
        else "the target needs"
    )
    return f"{n} {old} {built}; {driver} the {f'CUDA {cuda}' if cuda else 'CPU'} build"


def _build_steps(
    current: CurrentEnv,
    res: Resolution,
    target: Profile,
    cuda: str | None,
    arch: str | None,
    gcc_max: int | None,
    cuda_home: str | None,
    index_args: list[str],
    torch_changed: bool,
) -> tuple[list[Step], list[str]]:
    """Source-built ops to recompile (with the env vars nvcc needs), and notes for the user."""
    steps: list[Step] = []
    notes: list[str] = []
    # 2. source-built ops: rebuilt when torch or its CUDA changes (their .so link both)
    gcc_v = loose_version(target.gcc_version)
    cc_env: dict[str, str] = {}
    if gcc_max is not None and gcc_v is not None and gcc_v.major > gcc_max:
        cc_env = {"CC": f"gcc-{gcc_max}", "CXX": f"g++-{gcc_max}"}
    for n, b in sorted(_source_builds(current, res).items()):
        cur = current.source_builds.get(n) or {}
        # torch moving rebuilds ops that link it (ELF evidence); a lock has no files, so all its builds
        depends = current.kind == "lock" or n in current.links
        if not (
            (torch_changed and depends)
            or n not in current.source_builds
            or _base(cur.get("version")) != b["version"]
        ):
            continue
        env = {"FORCE_CUDA": "1", **{k: str(v) for k, v in b["env"].items()}}
        if arch:
            env["TORCH_CUDA_ARCH_LIST"] = arch
        if cuda_home:
            env["CUDA_HOME"] = cuda_home
        env.update(cc_env)
        src = cur.get("dir")
        # from the env's own source tree when it has one, else the sdist of the pinned version
        what = ([*(["-e"] if cur.get("editable") else []), src] if src
                else ["--no-binary", n, f"{n}=={b['version']}"])
        cmd = _pip(_PY, "install", "--no-build-isolation", "--no-deps", "--force-reinstall", *what)
        steps.append(Step("build", _build_reason(n, current, res, target, cuda, arch), n, cur.get("version"),
                          b["version"], cmd, env))
        if src and cur.get("editable"):
            notes.append(
                f"{n} is an editable install in {src}: its old build/ and in-tree .so files are "
                "removed first, or Python would keep importing them."
            )
    return steps, notes


def _source_builds(current: CurrentEnv, res: Resolution) -> dict[str, dict[str, Any]]:
    """name -> {version, env, reason}: the resolution's source builds, then the env's own."""
    builds: dict[str, dict[str, Any]] = {}
    for sb in res.source_builds:
        builds[_name(sb.name)] = {"version": sb.version, "env": dict(sb.env), "reason": sb.reason or None}
    for n, cur in current.source_builds.items():
        builds.setdefault(n, {"version": _base(cur.get("version")), "env": {}, "reason": None})
    return builds


def _build_reason(
    n: str, current: CurrentEnv, res: Resolution, target: Profile, cuda: str | None, arch: str | None
) -> str:
    other = loose_xy(_first_toolkit(target))
    evidence = f" ({current.links[n]})" if n in current.links else ""
    return (
        f"{n}'s compiled ops link torch{evidence}: compile them against torch "
        f"{known(res.packages.get('torch'), 'the new torch')}"
        + (f" with nvcc {cuda}" if cuda else " (CPU build)")
        + (
            f" (an nvcc {other} build would need libcudart.so.{other} at run time)"
            if cuda and other and other != cuda
            else ""
        )
        + (f" for TORCH_CUDA_ARCH_LIST={arch}" if arch and cuda else "")
    )


def plan_rebuild(current: CurrentEnv, res: Resolution, target: Profile) -> RebuildPlan:
    """The minimal change list from ``current`` to the resolution ``res`` for ``target``."""
    from envbuild.resolve import check

    check(res)
    cuda = loose_xy(res.cuda) or _cuda_of(res.packages.get("torch"))
    arch = _arch_list(target, res)
    gcc_max = _gcc_max(cuda, res)
    toolkit = next((t for t in target.cuda_toolkits if loose_xy(t.version) == cuda), None)
    cuda_home = (toolkit.path if toolkit and toolkit.path else None) or (
        f"/usr/local/cuda-{cuda}" if cuda else None
    )

    # extra: the default index (PyPI or the user's mirror) still serves everything else
    index_args = pip_index_args(res.index_urls, res.find_links, primary=False)
    steps, torch_changed = _wheel_steps(current, res, target, cuda, index_args)
    builds, notes = _build_steps(
        current, res, target, cuda, arch, gcc_max, cuda_home, index_args, torch_changed
    )
    steps += builds
    if not steps:
        torch_pin = res.packages.get("torch") or current.packages.get("torch")
        notes.append(
            "Nothing must change: the installed builds already fit the target ("
            + ", ".join(
                x for x in (f"torch {torch_pin}" if torch_pin else "", f"CUDA {cuda}" if cuda else "CPU") if x
            )
            + ")."
        )
    if not toolkit and any(s.kind == "build" for s in steps):
        notes.append(
            f"The target has no CUDA {known(cuda)} toolkit (it has: "
            f"{', '.join(t.version + ' at ' + str(t.path) for t in target.cuda_toolkits) or 'none'}); "
            f"rebuild.sh expects one at {cuda_home} (override with CUDA_HOME=...): the NVIDIA "
            f"runfile installs it without a driver ('--toolkit --silent --toolkitpath={cuda_home}')."
        )
    return RebuildPlan(
        current=current,
        target=target,
        resolution=res,
        steps=steps,
        cuda=cuda,
        arch_list=arch,
        cuda_home=cuda_home,
        toolkit_found=toolkit is not None,
        gcc=target.gcc_version,
        gcc_max=gcc_max,
        index_args=index_args,
        notes=notes,
    )


def _cuda_of(pin: str | None) -> str | None:
    m = re.search(r"\+cu(\d+)(\d)$", pin or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _same_build(name: str, old: str, pin: str, current: CurrentEnv, res: Resolution) -> bool:
    """``old`` installed is the build ``pin`` names: equal, or torch-family versions of one CUDA.

    The plain PyPI torch wheel has no local label (``2.6.0`` is the CUDA 12.4 build); its CUDA is
    torch/version.py's (``current.torch_cuda``) when installed and the resolution's when pinned.
    """
    if old == pin:
        return True
    if _name(name) not in _TORCH_FAMILY or _base(old) != _base(pin) or "+cpu" in old + pin:
        return False
    was = loose_xy(_cuda_of(old) or current.torch_cuda)
    return was is not None and was == loose_xy(_cuda_of(pin) or res.cuda)


def _first_toolkit(target: Profile) -> str | None:
    return target.cuda_toolkits[0].version if target.cuda_toolkits else None


# --- rendering -----------------------------------------------------------------------------------


def render_script(plan: RebuildPlan, hashes: Mapping[str, Sequence[str]] | None = None) -> str:
    """rebuild.sh for ``plan`` (every value shell-quoted; each step echoes its reason).

    ``hashes``: package -> the sha256 values the new lock lists for its wheels; rebuild.sh checks the
    staged wheel against them before it changes anything.
    """
    from envbuild.render import template_environment

    env = template_environment(trim=False)
    prefix = plan.current.source if plan.current.kind == "prefix" else None
    builds = [s for s in plan.steps if s.kind == "build"]
    return env.get_template("rebuild.sh.j2").render(
        version=__version__,
        plan=plan,
        prefix=prefix,
        steps=plan.steps,
        builds=builds,
        torch_pin=plan.resolution.packages.get("torch"),
        hashes={k: list(v) for k, v in (hashes or {}).items()},
        toolchain=toolchain_line(plan),
        editable_dirs=[(s.package, s.command[-1]) for s in builds if "-e" in s.command],
    )


# --- the stage -----------------------------------------------------------------------------------


def _resolve(reqs: Sequence[str], target: Profile, indexes: Mapping[str, str] | None,
             native_driver_only: bool = False, today: dt.date | None = None) -> Resolution:
    from envbuild import resolve as resolver
    from envbuild.target import host_python

    kw: dict[str, Any] = {"indexes": dict(indexes)} if indexes else {}
    kw["native_driver_only"] = native_driver_only
    kw["prefer_python"] = host_python()  # when the target names none: the lock engines can run for it
    kw["today"] = today
    res: Resolution = resolver.resolve(list(reqs), target, **kw)
    return res


def rebuild(
    source: Path,
    target: Profile,
    *,
    out_dir: Path | None = None,
    lock: bool = True,
    indexes: Mapping[str, str] | None = None,
    resolution: Resolution | None = None,
    native_driver_only: bool = False,
    today: dt.date | None = None,
) -> RebuildPlan:
    """Plan the re-target of ``source`` (an env prefix or a lock dir) and write the files to ``out_dir``.

    Raises:
        InputError: ``source`` is neither an env (bin/python) nor a lock directory.
        ConflictError: no consistent set exists for the target.
    """
    source = Path(source)
    if (source / "envbuild.lock.json").is_file():
        current = current_from_lock(source)
    elif (source / "bin" / "python").exists() or (source / "bin" / "python3").exists():
        current = current_from_prefix(source)
    else:
        raise InputError(
            "neither an env (no bin/python) nor a lock directory (no envbuild.lock.json).",
            path=str(source),
            field="--prefix/LOCK_DIR",
            hint="Pass --prefix ENV for an installed env, or lockfiles/NAME for a lock.",
        )
    if out_dir is not None:
        check_output_dir(out_dir)  # refused before any work, not after the resolve
    reqs = requirements_for(current)
    if not reqs:
        raise InputError(
            "nothing CUDA-dependent to rebuild (no torch, mmcv, cupy ... found).", path=str(source)
        )
    res = resolution if resolution is not None else _resolve(reqs, target, indexes, native_driver_only, today)
    plan = plan_rebuild(current, res, target)
    plan.requirements = reqs
    out = (
        Path(out_dir)
        if out_dir is not None
        # The default name is made from the env's name and the target's hostname: both foreign text.
        else Path("rebuild") / path_component(
            re.sub(r"[^A-Za-z0-9._-]+", "-", f"{current.name}-{target.hostname or 'target'}").strip("-._")
            or "rebuild", field="--output", path=str(source))
    )
    script = render_script(plan)
    plan.out_dir, plan.files = str(out), ["plan.json", "rebuild.sh", "resolution.json"]
    with output_dir(out) as tmp:
        # the lock first: when it fails (an index down) nothing of the rebuild dir appears
        if lock:
            _write_lock(current, reqs, target, res, tmp / "lock", indexes)
            plan.lock_dir = str(out / "lock")
            plan.files.append("lock/")
            script = render_script(plan, _lock_hashes(tmp / "lock"))
        (tmp / "rebuild.sh").write_text(script)
        (tmp / "rebuild.sh").chmod(0o755)
        (tmp / "resolution.json").write_text(json.dumps(res.to_dict(), indent=2, sort_keys=True) + "\n")
        (tmp / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2, sort_keys=True) + "\n")
    return plan


def _lock_hashes(lock_dir: Path) -> dict[str, list[str]]:
    """Package -> sha256 of every wheel the lock lists for it (rebuild.sh accepts any of them)."""
    from envbuild.lockfile import load_lock

    out: dict[str, list[str]] = {}
    for a in load_lock(lock_dir).artifacts:
        if a.kind == "wheel" and a.sha256:
            out.setdefault(_name(a.name), []).append(a.sha256)
    return out


def _write_lock(
    current: CurrentEnv,
    reqs: Sequence[str],
    target: Profile,
    res: Resolution,
    out: Path,
    indexes: Mapping[str, str] | None,
) -> Path:
    from envbuild.lock import lock as lock_stage
    from envbuild.spec import spec_from_requirements

    # rebuild.sh changes pip packages only, so the new lock is the pip part (a conda env's own conda
    # packages -- python, cudatoolkit -- are not re-solved; solving them would need its channels)
    spec = spec_from_requirements(list(reqs), name=current.name, python=current.python, manager="venv")
    lock_stage(
        spec,
        target,
        out_dir=out,
        resolution=res,
        indexes=indexes,
        command=f"envbuild rebuild {shlex.quote(current.source)} --target ...",
    )
    return out


def toolchain_line(plan: RebuildPlan) -> str:
    """What the rebuild runs with, naming only the facts that are known (a CPU target has no CUDA)."""
    if not plan.cuda:
        parts = ["CPU target: no CUDA, no nvcc needed"]
        if plan.gcc:
            parts.append(f"gcc {plan.gcc}")
        return "; ".join(parts)
    parts = [f"CUDA {plan.cuda}"]
    if plan.arch_list:
        parts.append(f"TORCH_CUDA_ARCH_LIST={plan.arch_list}")
    if plan.cuda_home and any(s.kind == "build" for s in plan.steps):
        found = "found on the target" if plan.toolkit_found else "NOT on the target yet"
        parts.append(f"CUDA_HOME={plan.cuda_home} ({found})")
    gcc = f"gcc {plan.gcc}" if plan.gcc else "gcc of the target unknown"
    parts.append(gcc + (f" (nvcc {plan.cuda} accepts <= {plan.gcc_max})" if plan.gcc_max else ""))
    return ", ".join(parts)


def present_plan(plan: RebuildPlan, as_json: bool) -> None:
    """Print the plan: JSON, or a table of changes and the path of rebuild.sh."""
    from envbuild.output import console, print_json, table

    if as_json:
        print_json(plan.to_dict())
        return
    rows = [(s.kind, s.package or "-", s.old or "-", s.new or "-", s.reason) for s in plan.steps]
    console.print(
        table(
            f"rebuild {plan.current.source} for {plan.target.hostname or 'the target'}",
            ["step", "package", "now", "then", "why"],
            rows,
        )
    )
    console.print(toolchain_line(plan), markup=False, highlight=False)
    for n in plan.notes:
        console.print(f"note: {n}", markup=False, highlight=False)
    console.print(f"wrote {plan.out_dir}/rebuild.sh", markup=False, highlight=False)
