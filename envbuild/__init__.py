"""envbuild: plan, lock, fetch, pack and diagnose CUDA deep-learning environments."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["__version__", "cache_home"]

__version__ = "0.1.0"


def cache_home() -> Path:
    """envbuild's user cache: $ENVBUILD_CACHE_DIR, else $XDG_CACHE_HOME/envbuild (~/.cache/envbuild).

    Here, not in a stage: the console script's early uv start reads it before anything else loads.
    """
    base = os.environ.get("ENVBUILD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "envbuild")
    return Path(base)
