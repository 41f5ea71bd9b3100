"""Shared fixtures: isolate every test from the developer's pip/uv/conda settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]

_DROP_PREFIXES = ("PIP_", "UV_", "CONDA_", "MAMBA_", "PIXI_")


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(_DROP_PREFIXES) or key in ("PYTHONPATH", "VIRTUAL_ENV", "CUDA_HOME", "CUDA_PATH"):
            monkeypatch.delenv(key, raising=False)
    # This machine's /etc/pip.conf points at local mirrors and caps torch: tests must not see it.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    # One uv cache for the session keeps network tests fast yet away from the user's cache.
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "uv-cache"))
    monkeypatch.setenv("ENVBUILD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "envbuild-cache"))
    # Tests read the bundled data, never a knowledge cache left by `envbuild data update` on this machine.
    monkeypatch.setenv("ENVBUILD_DATA_DIR", str(tmp_path_factory.getbasetemp() / "envbuild-data"))
    yield


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def profiles_dir() -> Path:
    return DATA / "profiles"
