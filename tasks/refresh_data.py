"""Regenerate the PyPI-derived (and, where reachable, index-derived) facts of envbuild/data/*.json.

The same harvester as `envbuild data update` (envbuild/harvest.py), applied to the bundled files:
curated fields are kept, harvested ones are rewritten with their source, sha256 and checked date.
Release files are cached by sha256 in the user knowledge cache, so a re-run downloads only new
releases.  Run from the repository root, then review the diff:

    .venv/bin/python tasks/refresh_data.py [SOURCE ...]   # default: every source
    git diff --stat envbuild/data
"""

from __future__ import annotations

import sys

from envbuild.harvest import SOURCES, present_update, regenerate_bundled
from envbuild.output import progress


def main(argv: list[str]) -> int:
    only = argv or None
    if only and any(s not in SOURCES for s in only):
        print(f"sources: {', '.join(SOURCES)}", file=sys.stderr)
        return 2
    from envbuild.harvest import _Bar

    with progress() as prog:
        rep = regenerate_bundled(only, progress=_Bar(prog=prog))
    present_update(rep, as_json=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
