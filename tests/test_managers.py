"""The manager registry (envbuild/managers.py) is the one list of package managers: the spec,
the lock file, render and probe all take their names from it, and a manager added to it renders
install scripts that call its own binary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_render import seed_conda_lock  # noqa: F401  (the module-scoped conda lock fixture)

from envbuild import managers
from envbuild import probe as P
from envbuild.errors import InputError, SpecError
from envbuild.lockfile import LOCK_FILE, load_lock
from envbuild.managers import REGISTRY, PackageManager, get_manager
from envbuild.render import TEMPLATE_DIR, render
from envbuild.spec import load_spec, spec_from_requirements


def test_every_entry_has_its_template_and_probe_looks_for_every_conda_binary() -> None:
    for m in REGISTRY:
        assert (TEMPLATE_DIR / m.env_template).is_file(), m
        assert m.kind in ("conda", "venv") and (m.binary is None) == (m.kind == "venv"), m
    # probe.py runs standalone, so it holds a copy: it must look for exactly the registry's binaries.
    assert sorted(P.CONDA_BINARIES) == sorted(managers.conda_binaries())


def test_spec_accepts_the_registry_names_and_names_them_for_a_typo(tmp_path: Path) -> None:
    for m in REGISTRY:
        assert spec_from_requirements(["six"], manager=m.name).manager == m.name
    toml = tmp_path / "envbuild.toml"
    toml.write_text('[project]\nname = "t"\nmanager = "pip"\nrequirements = ["six"]\n')
    with pytest.raises(SpecError) as e:
        load_spec(toml)
    assert e.value.path == str(toml) and e.value.field == "project.manager"
    assert all(m.name in str(e.value.hint) for m in REGISTRY)
    with pytest.raises(InputError, match="unknown manager 'pip'"):
        get_manager("pip", field="--manager")


def test_the_lock_file_takes_the_registry_names(seed_conda_lock: Path, tmp_path: Path) -> None:  # noqa: F811
    data = json.loads((seed_conda_lock / LOCK_FILE).read_text())
    for m in REGISTRY:
        (tmp_path / m.name).mkdir()
        (tmp_path / m.name / LOCK_FILE).write_text(json.dumps({**data, "manager": m.name}))
        assert load_lock(tmp_path / m.name).manager == m.name
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / LOCK_FILE).write_text(json.dumps({**data, "manager": "pip"}))
    with pytest.raises(InputError, match="micromamba or venv"):
        load_lock(tmp_path / "bad")


def test_a_new_registry_entry_renders_with_its_own_binary(
        seed_conda_lock: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    extra = PackageManager("condalike", "conda", "condalike-bin", "_env_conda.sh.j2")
    monkeypatch.setattr(managers, "REGISTRY", (*REGISTRY, extra))
    render(seed_conda_lock, tmp_path / "new", manager="condalike")
    install = (tmp_path / "new" / "install.sh").read_text()
    offline = (tmp_path / "new" / "install-offline.sh").read_text()
    assert "CONDA_TOOL=condalike-bin" in install and '--file "$LOCK/conda.txt"' in install
    assert "CONDA_TOOL=condalike-bin" in offline and '"$CONDA_TOOL" create --yes --offline' in offline
    # the kinds that exist keep their own environment step
    render(seed_conda_lock, tmp_path / "venv", manager="venv")
    venv = (tmp_path / "venv" / "install.sh").read_text()
    assert '-m venv "$PREFIX"' in venv and "CONDA_TOOL" not in venv
