"""Render install scripts from a lock: install.sh, install-offline.sh, verify.sh and INSTALL.md.

The templates live in ``envbuild/templates/`` (jinja2, package data).  Every value that reaches a script goes
through the ``q`` filter (``shlex.quote``) or the ``comment`` filter (one line, for ``#``
comments); the scripts themselves find the lock files beside them, so a rendered directory
can be copied anywhere.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name

from envbuild._fs import atomic_write, claim_output_dir, is_within_directory, one_line
from envbuild.errors import InputError
from envbuild.lockfile import LOCK_FILE, Lock, load_lock
from envbuild.managers import get_manager
from envbuild.models import pip_index_args

if TYPE_CHECKING:
    import jinja2
from envbuild.tools.git import pip_git_url

__all__ = ["SCRIPTS", "TEMPLATE_DIR", "RenderResult", "render", "render_texts", "template_environment"]

SCRIPTS = ("install.sh", "install-offline.sh", "verify.sh")
DOCS = ("INSTALL.md",)
# built.sha256: what fetch built for this lock (git wheels, build requirements), checked offline.
LOCK_TEXTS = (LOCK_FILE, "requirements.txt", "conda.txt", "source-builds.txt", "git.txt", "built.sha256")

# Distribution name -> module to import when verifying (only where the two differ).
_IMPORT_NAMES = {
    "mmcv-full": "mmcv", "mmsegmentation": "mmseg", "opencv-python": "cv2",
    "opencv-python-headless": "cv2", "opencv-contrib-python": "cv2", "pillow": "PIL",
    "pyyaml": "yaml", "scikit-learn": "sklearn", "scikit-image": "skimage", "pytorch-lightning":
    "pytorch_lightning", "tensorboard": "tensorboard", "protobuf": "google.protobuf",
}
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


@dataclass(frozen=True)
class RenderResult:
    """What ``render`` wrote."""

    lock_name: str
    manager: str
    out_dir: Path
    files: tuple[str, ...]
    # the scripts and INSTALL.md as written (name -> text): a bundle carries these, not a second render
    texts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "lock": self.lock_name, "manager": self.manager, "out_dir": str(self.out_dir),
                "files": list(self.files)}


# Package data, so an installed (non-editable) envbuild renders too.
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def _comment(value: object) -> str:
    """One line of text for a shell/markdown comment: no newline can end the comment early."""
    return one_line(value)


def _quote(value: object) -> str:
    return shlex.quote(str(value))


def _cmd(argv: list[str]) -> str:
    """An argv as one shell line; ``$PYTHON`` stays a (quoted) variable reference."""
    return " ".join('"$PYTHON"' if a == "$PYTHON" else shlex.quote(a) for a in argv)


def template_environment(*, trim: bool = True) -> jinja2.Environment:
    """The one jinja2 environment every script template renders in.

    Values reach scripts only through the filters ``q`` (shlex.quote), ``cmd`` (argv -> quoted
    line) and ``comment`` (one line), and an undefined name is an error, not an empty string.

    Raises:
        InputError: the templates are missing from this installation.
    """
    import jinja2

    if not TEMPLATE_DIR.is_dir():
        raise InputError("the templates directory is missing from this envbuild installation.",
                         path=str(TEMPLATE_DIR), hint="Reinstall envbuild.")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), undefined=jinja2.StrictUndefined,
        autoescape=False, keep_trailing_newline=True, trim_blocks=trim, lstrip_blocks=trim,
    )
    env.filters["q"] = _quote
    env.filters["cmd"] = _cmd
    env.filters["comment"] = _comment
    return env


def _environment() -> Any:
    return template_environment()


def _build_env(lk: Lock) -> list[tuple[str, str]]:
    """The environment the source builds are compiled in: theirs, plus FORCE_CUDA and the arch list."""
    build_env: dict[str, str] = {}
    for s in lk.resolution.source_builds:
        build_env.update({str(k): str(v) for k, v in s.env.items()})
    build = lk.resolution.build
    if lk.source_builds and lk.cuda:
        build_env.setdefault("FORCE_CUDA", "1")
        if build.get("torch_cuda_arch_list"):
            build_env.setdefault("TORCH_CUDA_ARCH_LIST", str(build["torch_cuda_arch_list"]))
    for k in build_env:
        if not _ENV_NAME.fullmatch(k):
            raise InputError(f"'{k}' is not a usable environment variable name.", path=lk.path,
                             field="resolution.source_builds[].env",
                             hint="The lock is damaged; re-create it with 'envbuild lock'.")
    return sorted(build_env.items())


def _rows(lk: Lock) -> list[dict[str, str]]:
    """INSTALL.md's table: each artifact and how it is installed."""
    rows = []
    for a in lk.artifacts:
        how = {"wheel": "pip wheel", "sdist": "pip sdist", "git": f"git {(a.commit or '')[:12]}",
               "conda": f"conda ({a.subdir})"}.get(a.kind, a.kind)
        rows.append({"name": a.name, "version": a.version,
                     "how": "built from source" if a.build == "source" else how})
    return rows


def _context(lk: Lock, manager: str, lock_rel: str) -> dict[str, Any]:
    res = lk.resolution
    pm = get_manager(manager, field="--manager")
    sb_reason = {str(canonicalize_name(s.name)): s.reason for s in res.source_builds}
    build = res.build
    return {
        "title": f"Install {lk.name}: Python {lk.python} on {lk.platform.pip_platform or '?'}"
                 + (f", CUDA {lk.cuda}" if lk.cuda else "") + f" ({manager})",
        "generated_by": lk.generated_by or "envbuild",
        "lock_name": lk.name,
        "lock_rel": lock_rel,
        "spec_hash": lk.spec_hash or "-",
        "python": lk.python,
        "cuda": lk.cuda,
        "manager": manager,
        "manager_binary": pm.binary or "",
        "env_template": pm.env_template,
        "platform": lk.platform.to_dict(),
        "index_args": pip_index_args(lk.index_urls, lk.find_links),
        "git": [{"name": g.name, "url": pip_git_url(g.url), "commit": g.commit or ""} for g in lk.git],
        "source_builds": [{"name": a.name, "version": a.version,
                           "reason": sb_reason.get(a.name) or ""}
                          for a in lk.source_builds],
        "build_env": _build_env(lk),
        "build_nvcc": str(build["nvcc"]) if build.get("nvcc") else "",
        "build_gcc_max": str(build["gcc_max"]) if build.get("gcc_max") else "",
        # where each file sits in offline_cache/: the lock's one rule, as fetch put it there
        "conda": [{"subdir": lk.cache_path(a).split("/")[1], "filename": a.filename, "sha256": a.sha256}
                  for a in lk.conda] if pm.conda else [],
        "cached": [{"rel": lk.cache_path(a), "sha256": a.sha256} for a in lk.artifacts
                   if a.kind != "git" and a.sha256],
        # sdists and source builds are built on the target with fetch's build requirements
        "needs_build": any(a.kind == "sdist" or a.build == "source" for a in lk.artifacts),
        "imports": _imports(lk),
        "artifacts": _rows(lk),
        "warnings": list(res.warnings),
    }


def _imports(lk: Lock) -> list[list[str]]:
    """(distribution, module) pairs verify.sh imports: the packages the user asked for by name."""
    wanted = {str(canonicalize_name(n)) for n in lk.resolution.packages}
    for r in lk.spec.get("requirements") or []:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", str(r))
        if m:
            wanted.add(str(canonicalize_name(m.group(1))))
    wanted |= {a.name for a in lk.git} | {a.name for a in lk.source_builds}
    present = {a.name for a in lk.artifacts if a.kind != "conda"}
    out = []
    for name in sorted(wanted & present):
        module = _IMPORT_NAMES.get(name)
        if module is None:
            module = "cupy" if name.startswith("cupy") else name.replace("-", "_")
        out.append([name, module])
    return out


def render_texts(lk: Lock, manager: str | None = None, lock_rel: str = ".") -> dict[str, str]:
    """The scripts and INSTALL.md for ``lk`` as text (name -> text); ``lock_rel`` is where the
    scripts find the lock files, relative to themselves (an offline bundle's lockfiles/NAME/ is
    always tried next).

    Raises:
        InputError: unknown manager, or a conda-like manager for a lock without a conda part.
    """
    mgr = manager or lk.manager
    if get_manager(mgr, field="--manager").conda and not lk.conda:
        raise InputError(
            f"the lock '{lk.name}' has no conda part, so it cannot be installed with {mgr}.",
            path=lk.path, field="manager",
            hint=f"Render with '--manager venv', or re-lock with 'envbuild lock --manager {mgr}'.",
        )
    env = _environment()
    ctx = _context(lk, mgr, lock_rel)
    return {name: env.get_template(f"{name}.j2").render(**ctx) for name in (*SCRIPTS, *DOCS)}


def render(lock_dir: str | Path | Lock, out_dir: str | Path | None = None, *,
           manager: str | None = None) -> RenderResult:
    """Write install.sh, install-offline.sh, verify.sh and INSTALL.md for a lock.

    ``lock_dir`` is a lock directory or the ``Lock`` a caller already read.  ``out_dir`` defaults
    to the lock directory.  When the lock directory is inside ``out_dir`` (``plan``'s ``lock/``),
    the scripts read it there; anywhere else the lock's files are copied beside the scripts so
    the directory is self-contained.

    Raises:
        LockError: the lock cannot be read.
        InputError: unknown manager, or a conda-like manager for a lock without a conda part.
    """
    lk = lock_dir if isinstance(lock_dir, Lock) else load_lock(lock_dir)
    src = lk.directory
    out = Path(out_dir) if out_dir is not None else src
    inside = is_within_directory(out.resolve(), src.resolve())
    lock_rel = os.path.relpath(src.resolve(), out.resolve()) if inside else "."
    texts = render_texts(lk, manager, lock_rel)
    # A new directory, or one envbuild made (the lock dir is): never the user's project folder.
    claim_output_dir(out)
    written = []
    if not inside:
        for name in LOCK_TEXTS:
            if (src / name).is_file():
                atomic_write(out / name, (src / name).read_bytes())
                written.append(name)
    for name, text in texts.items():
        atomic_write(out / name, text, mode=0o755 if name.endswith(".sh") else 0o644)
        written.append(name)
    return RenderResult(lock_name=lk.name, manager=manager or lk.manager, out_dir=out,
                        files=tuple(sorted(written)), texts=texts)


def present_render(result: RenderResult, as_json: bool) -> None:
    """Print what was written (or JSON)."""
    from envbuild.output import console, print_json

    if as_json:
        print_json(result.to_dict())
        return
    console.print(f"rendered {result.lock_name} for {result.manager} into {result.out_dir}/: "
                  + ", ".join(result.files), highlight=False)
    console.print(f"next: bash {result.out_dir}/install.sh   (offline: install-offline.sh beside an "
                  "offline_cache/ from 'envbuild fetch')", highlight=False)
