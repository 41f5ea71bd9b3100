# Shipped inside every envbuild archive as bin/envbuild-unpack and run on the TARGET after
# extraction (by `envbuild unpack`, or by the Slurm script on each node without envbuild).
# Stdlib only and Python 3.6-compatible (type comments, no walrus), because it may run with the
# unpacked env's own interpreter or whatever `python3` a compute node has.
#
# It reads envbuild-manifest.json at the prefix root, section "fixup":
#   kind          "conda" | "venv"
#   old_prefix    the prefix the env was packed from
#   python_links  venv only: {"bin/python": "/abs/base/python3.11", ...} (recreated as symlinks;
#                 they point outside the env, so the archive cannot carry them)
#   text_files    venv only: text files naming old_prefix (rewritten to the new prefix)
#   shebangs      conda only: scripts conda-pack turned into "#!/usr/bin/env NAME"; they get the
#                 absolute new interpreter back so they run without activating the env
import json
import os
import sys

_MAX_SHEBANG = 127  # Linux < 5.1 truncates longer "#!" lines


def _rewrite_text(path, old, new):
    # type: (str, bytes, bytes) -> bool
    with open(path, "rb") as fh:
        data = fh.read()
    if old not in data:
        return False
    mode = os.stat(path).st_mode
    tmp = path + ".envbuild-tmp"
    with open(tmp, "wb") as fh:
        fh.write(data.replace(old, new))
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def _absolute_shebang(path, prefix):
    # type: (str, str) -> bool
    with open(path, "rb") as fh:
        data = fh.read()
    first, sep, rest = data.partition(b"\n")
    if not first.startswith(b"#!/usr/bin/env "):
        return False
    parts = first[len(b"#!/usr/bin/env "):].split(b" ", 1)
    exe = os.path.join(prefix, "bin", parts[0].decode("utf-8", "replace"))
    if not os.path.exists(exe):
        return False
    line = b"#!" + exe.encode() + (b" " + parts[1] if len(parts) > 1 else b"")
    # The kernel splits "#!" lines at whitespace, so such a prefix keeps the /usr/bin/env form.
    if len(line) > _MAX_SHEBANG or any(c in exe for c in " \t"):
        return False
    mode = os.stat(path).st_mode
    tmp = path + ".envbuild-tmp"
    with open(tmp, "wb") as fh:
        fh.write(line + sep + rest)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def fixup(prefix):
    # type: (str) -> dict[str, list[str]]
    """Apply the manifest's fix-up section to an extracted env at ``prefix``; return what changed."""
    prefix = os.path.abspath(prefix)
    with open(os.path.join(prefix, "envbuild-manifest.json"), encoding="utf-8") as fh:
        fx = json.load(fh).get("fixup") or {}
    old = (fx.get("old_prefix") or "").encode()
    done = {"links": [], "text_files": [], "shebangs": []}  # type: dict[str, list[str]]
    for rel, target in sorted((fx.get("python_links") or {}).items()):
        path = os.path.join(prefix, rel)
        if not os.path.lexists(path):
            os.symlink(target, path)
            done["links"].append(rel)
    if old and old != prefix.encode():
        for rel in fx.get("text_files") or []:
            path = os.path.join(prefix, rel)
            if os.path.isfile(path) and not os.path.islink(path) and _rewrite_text(
                    path, old, prefix.encode()):
                done["text_files"].append(rel)
    for rel in fx.get("shebangs") or []:
        path = os.path.join(prefix, rel)
        if os.path.isfile(path) and not os.path.islink(path) and _absolute_shebang(path, prefix):
            done["shebangs"].append(rel)
    return done


if __name__ == "__main__":
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = sys.argv[1] if len(sys.argv) > 1 else here
    result = fixup(target)
    sys.stdout.write(json.dumps(result) + "\n")
