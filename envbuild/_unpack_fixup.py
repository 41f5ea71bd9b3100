# Shipped inside every envbuild archive as bin/envbuild-unpack and run on the TARGET after
# extraction by the Slurm script on each node without envbuild; `envbuild unpack` runs the same
# functions in-process (never the archive's copy, and never the archive's conda-unpack).
# Stdlib only and Python 3.6-compatible (type comments, no walrus), because it may run with the
# unpacked env's own interpreter or whatever `python3` a compute node has.
#
# It reads envbuild-manifest.json at the prefix root, section "fixup":
#   kind          "conda" | "venv"
#   old_prefix    the prefix the env was packed from
#   home          venv only: pyvenv.cfg's `home` (the base interpreter's directory)
#   python_links  venv only: {"bin/python": "/abs/base/python3.11", ...} (recreated as symlinks;
#                 they point outside the env, so the archive cannot carry them)
#   text_files    venv only: text files naming old_prefix (rewritten to the new prefix)
#   shebangs      conda only: scripts conda-pack turned into "#!/usr/bin/env NAME"; they get the
#                 absolute new interpreter back so they run without activating the env
# and, for conda envs, the prefix records of conda-pack's bin/conda-unpack, read as DATA
# (ast.literal_eval of its `_prefix_records` list), never run.
#
# Every path in these lists comes from the archive: each must be a relative path inside the
# prefix (validate() checks them all before anything is changed), and files are opened with
# O_NOFOLLOW | O_NONBLOCK and used only when they are regular files (a FIFO never blocks).
import ast
import json
import os
import re
import stat
import sys
import typing  # noqa: F401 - used by the type comments (Python 3.6 syntax)

_MAX_SHEBANG = 127  # Linux < 5.1 truncates longer "#!" lines
_PYTHON = re.compile(r"^(python|pypy)[0-9.]*t?$")  # python3.11, python3.13t, pypy3.10
MANIFEST = "envbuild-manifest.json"


class FixupError(ValueError):
    """A fix-up field of the archive that cannot be used: ``field`` names it, ``value`` is what it held."""

    def __init__(self, field, value, why):
        # type: (str, object, str) -> None
        ValueError.__init__(self, f"{field}: {value!r}: {why}")
        self.field = field
        self.value = value
        self.why = why


def _check_rel(field, rel):
    # type: (str, object) -> str
    if not isinstance(rel, str) or not rel:
        raise FixupError(field, rel, "expected a non-empty relative path (a string)")
    if "\0" in rel or "\n" in rel:
        raise FixupError(field, rel, "a path with a NUL or newline character")
    if rel.startswith("/"):
        raise FixupError(field, rel, "an absolute path; fix-up paths must be inside the destination")
    if ".." in rel.split("/"):
        raise FixupError(field, rel, "a path with '..'; fix-up paths must stay inside the destination")
    return rel


def _check_list(fx, key):
    # type: (dict[str, typing.Any], str) -> list[str]
    value = fx.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise FixupError("fixup." + key, value, "expected a list of relative paths")
    return [_check_rel(f"fixup.{key}[{i}]", rel) for i, rel in enumerate(value)]


def _check_link(rel, target):
    # type: (object, object) -> None
    """One python_links entry: a relative path inside, to an interpreter or a target inside."""
    rel = _check_rel("fixup.python_links", rel)
    field = f"fixup.python_links[{rel!r}]"
    if not isinstance(target, str) or not target or "\0" in target or "\n" in target:
        raise FixupError(field, target, "expected a link target (a string)")
    if target.startswith("/"):
        if _PYTHON.match(rel.split("/")[-1]) and not _PYTHON.match(target.split("/")[-1]):
            # unpack's checks run bin/python: its link may only name an interpreter.
            raise FixupError(field, target, "an interpreter link whose target is not named python*/pypy*")
        return  # an absolute target is the base interpreter
    # A relative target must stay inside.
    depth = 0
    for part in (rel.split("/")[:-1] + target.split("/")):
        if part == "..":
            depth -= 1
        elif part not in ("", "."):
            depth += 1
        if depth < 0:
            raise FixupError(field, target, "a relative link target that leaves the destination")


def validate(manifest):
    # type: (object) -> dict[str, typing.Any]
    """The manifest's fix-up section with every path checked; raise FixupError otherwise."""
    if not isinstance(manifest, dict):
        raise FixupError("(manifest)", type(manifest).__name__, "expected a JSON object")
    fx = manifest.get("fixup") or {}
    if not isinstance(fx, dict):
        raise FixupError("fixup", fx, "expected an object")
    for key in ("kind", "old_prefix", "home"):
        v = fx.get(key)
        if v is not None and (not isinstance(v, str) or "\0" in v or "\n" in v):
            raise FixupError("fixup." + key, v, "expected a string")
    old = fx.get("old_prefix")
    if old and not old.startswith("/"):
        raise FixupError("fixup.old_prefix", old, "expected an absolute path")
    links = fx.get("python_links") or {}
    if not isinstance(links, dict):
        raise FixupError("fixup.python_links", links, "expected an object {relative path: target}")
    for rel, target in links.items():
        _check_link(rel, target)
    out = dict(fx)
    out["python_links"] = dict(links)
    out["text_files"] = _check_list(fx, "text_files")
    out["shebangs"] = _check_list(fx, "shebangs")
    return out


def conda_records(script):
    # type: (str) -> list[tuple[str, str, str]]
    """conda-unpack's ``_prefix_records`` [(path, placeholder, 'text'|'binary')], read as data."""
    tree = ast.parse(script)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_prefix_records" for t in node.targets):
            records = ast.literal_eval(node.value)
            break
    else:
        raise FixupError("bin/conda-unpack", "_prefix_records", "no prefix records in the script")
    if not isinstance(records, list):
        raise FixupError("bin/conda-unpack: _prefix_records", type(records).__name__, "expected a list")
    out = []
    for i, rec in enumerate(records):
        field = f"bin/conda-unpack: _prefix_records[{i}]"
        if not (isinstance(rec, tuple) and len(rec) == 3 and isinstance(rec[1], str) and rec[1]
                and rec[2] in ("text", "binary")):
            raise FixupError(field, rec, "expected (path, placeholder, 'text' or 'binary')")
        out.append((_check_rel(field, rec[0]), rec[1], rec[2]))
    return out


def _default_resolve(prefix):
    # type: (str) -> object
    real = os.path.realpath(prefix)

    def resolve(field, rel):
        # type: (str, str) -> str
        path = os.path.realpath(os.path.join(prefix, _check_rel(field, rel)))
        if os.path.commonpath([real, path]) != real:
            raise FixupError(field, rel, "resolves outside the destination")
        return path
    return resolve


def read_regular(path):
    # type: (str) -> object
    """The bytes of ``path`` if it is a regular file (not a link, FIFO or device), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return fh.read()


def _replace(path, data):
    # type: (str, bytes) -> None
    mode = os.stat(path).st_mode
    tmp = path + ".envbuild-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, stat.S_IMODE(mode))
    os.replace(tmp, path)


def _rewrite_text(path, old, new):
    # type: (str, bytes, bytes) -> bool
    data = read_regular(path)
    if not isinstance(data, bytes) or old not in data:
        return False
    _replace(path, data.replace(old, new))
    return True


def _binary_replace(data, placeholder, new):
    # type: (bytes, bytes, bytes) -> bytes
    # conda's own rule: each C string holding the placeholder keeps its length, padded with NULs.
    def sub(match):
        # type: (typing.Match[bytes]) -> bytes
        whole = match.group()
        n = whole.count(placeholder)
        padding = (len(placeholder) - len(new)) * n
        if padding < 0:
            raise ValueError("negative padding")
        return whole.replace(placeholder, new) + b"\0" * padding
    return re.sub(re.escape(placeholder) + b"([^\0]*?)\0", sub, data)


def conda_fixup(prefix, records, resolve=None):
    # type: (str, list[tuple[str, str, str]], object) -> dict[str, object]
    """What conda-unpack does (prefix placeholders -> ``prefix``), from its records, in-process."""
    prefix = os.path.abspath(prefix)
    resolve = resolve or _default_resolve(prefix)
    new = prefix.encode()
    done = []  # type: list[str]
    for i, (rel, placeholder, mode) in enumerate(records):
        field = f"bin/conda-unpack: _prefix_records[{i}]"
        path = resolve(field, rel)  # type: ignore[operator]
        data = read_regular(path)
        if not isinstance(data, bytes):
            continue
        old = placeholder.encode()
        if mode == "text":
            changed = data.replace(old, new)
        else:
            try:
                changed = _binary_replace(data, old, new)
            except ValueError:
                raise FixupError(field, rel, f"the destination path ({len(new)} bytes) is longer than "
                                 f"the placeholder compiled into this binary ({len(old)} bytes); unpack "
                                 "to a shorter path") from None
        if changed != data:
            _replace(path, changed)
            done.append(rel)
    return {"prefix_records": len(records), "rewritten": done}


def _absolute_shebang(path, prefix):
    # type: (str, str) -> bool
    data = read_regular(path)
    if not isinstance(data, bytes):
        return False
    first, sep, rest = data.partition(b"\n")
    if not first.startswith(b"#!/usr/bin/env "):
        return False
    parts = first[len(b"#!/usr/bin/env "):].split(b" ", 1)
    name = parts[0].decode("utf-8", "replace")
    if "/" in name:
        return False
    exe = os.path.join(prefix, "bin", name)
    if not os.path.exists(exe):
        return False
    line = b"#!" + exe.encode() + (b" " + parts[1] if len(parts) > 1 else b"")
    # The kernel splits "#!" lines at whitespace, so such a prefix keeps the /usr/bin/env form.
    if len(line) > _MAX_SHEBANG or any(c in exe for c in " \t"):
        return False
    _replace(path, line + sep + rest)
    return True


def fixup(prefix, manifest=None, resolve=None):
    # type: (str, object, object) -> dict[str, list[str]]
    """Apply the manifest's fix-up section to an extracted env at ``prefix``; return what changed.

    ``manifest`` is the one already read (envbuild passes it, so the file on disk is never
    re-read); ``resolve(field, rel)`` maps a relative path to the file to change, refusing one
    outside ``prefix``.  Raises FixupError for any field that is not a path inside ``prefix``.
    """
    prefix = os.path.abspath(prefix)
    if manifest is None:
        data = read_regular(os.path.join(prefix, MANIFEST))
        if not isinstance(data, bytes):
            raise FixupError(MANIFEST, prefix, "no manifest file at the prefix")
        manifest = json.loads(data.decode("utf-8"))
    fx = validate(manifest)
    resolve = resolve or _default_resolve(prefix)
    old = (fx.get("old_prefix") or "").encode()
    done = {"links": [], "text_files": [], "shebangs": []}  # type: dict[str, list[str]]
    for rel, target in sorted(fx["python_links"].items()):
        field = "fixup.python_links"
        # The link itself is never followed (a squashfs image already carries it, pointing at the
        # base interpreter outside): only its directory must resolve inside, and nothing is
        # written through an existing link.
        parent, base = os.path.split(rel)
        path = os.path.join(resolve(field, parent) if parent else prefix, base)  # type: ignore[operator]
        if not os.path.isdir(os.path.dirname(path)):
            raise FixupError(field, rel, "its directory is not in the archive")
        if not os.path.lexists(path):
            os.symlink(target, path)
            done["links"].append(rel)
    if old and old != prefix.encode():
        for i, rel in enumerate(fx["text_files"]):
            path = resolve(f"fixup.text_files[{i}]", rel)  # type: ignore[operator]
            if _rewrite_text(path, old, prefix.encode()):
                done["text_files"].append(rel)
    for i, rel in enumerate(fx["shebangs"]):
        path = resolve(f"fixup.shebangs[{i}]", rel)  # type: ignore[operator]
        if _absolute_shebang(path, prefix):
            done["shebangs"].append(rel)
    return done


def main(prefix):
    # type: (str) -> dict[str, typing.Any]
    """The standalone fix-up: conda-unpack's records (read, not run), then the manifest's section.

    Running it after the archive's own conda-unpack changes nothing more (no placeholder is left).
    """
    result = {}  # type: dict[str, typing.Any]
    script = read_regular(os.path.join(prefix, "bin", "conda-unpack"))
    if isinstance(script, bytes):
        result.update(conda_fixup(prefix, conda_records(script.decode("utf-8", "replace"))))
    result.update(fixup(prefix))
    return result


if __name__ == "__main__":
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = sys.argv[1] if len(sys.argv) > 1 else here
    try:
        result = main(target)
    except FixupError as exc:
        sys.stderr.write(f"envbuild-unpack: refused: {exc}\n")
        sys.exit(2)
    sys.stdout.write(json.dumps(result) + "\n")
