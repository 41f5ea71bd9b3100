"""envbuild: plan, lock, fetch, pack and diagnose CUDA deep-learning environments."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
