"""The envbuild.toml reader (envbuild.spec) and `envbuild init`, which writes one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
from typer.testing import CliRunner

from envbuild.cli import app
from envbuild.errors import InputError, SpecError
from envbuild.init import init_spec
from envbuild.spec import DEFAULT_INDEXES, GitRequirement, load_spec, parse_git, spec_from_requirements

GOOD = """\
[project]
name = "echofusion"
python = "3.7"
manager = "conda"
requirements = ["mmcv-full==1.4.0", "mmdet==2.19.0", "cupy", "numpy<1.20"]
git = ["pypcd @ git+https://github.com/klintan/pypcd.git@master"]

[conda]
channels = ["conda-forge", "nvidia"]
packages = ["libgl"]

[target]
profile = "targets/server.json"

[indexes]
pypi = "https://mirror.example/simple/"
"""


def write(tmp_path: Path, text: str, name: str = "envbuild.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_spec_loads(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.name == "echofusion" and spec.python == "3.7" and spec.manager == "conda"
    assert spec.requirements == ("mmcv-full==1.4.0", "mmdet==2.19.0", "cupy", "numpy<1.20")
    assert spec.git == (GitRequirement("pypcd", "https://github.com/klintan/pypcd.git", "master"),)
    assert spec.conda_channels == ("conda-forge", "nvidia") and spec.conda_packages == ("libgl",)
    # The profile path is relative to the spec file; index URLs lose their trailing slash.
    assert spec.target_profile == str(tmp_path / "targets/server.json")
    assert spec.indexes["pypi"] == "https://mirror.example/simple"
    assert spec.indexes["pytorch"] == DEFAULT_INDEXES["pytorch"]
    assert spec.path == str(tmp_path / "envbuild.toml")


def test_defaults(tmp_path: Path) -> None:
    d = tmp_path / "My Project"
    d.mkdir()
    spec = load_spec(write(d, "[project]\n"))
    assert spec.name == "My-Project"  # default name from the directory, made usable
    assert spec.manager == "venv" and spec.python is None and spec.requirements == ()
    assert spec.conda_channels == ("conda-forge",)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("[project]\nfoo = 1\n", "project.foo", "unknown key 'foo'"),
        ("[projekt]\n", "projekt", "unknown key"),
        ("[conda]\nchanel = []\n", "conda.chanel", "unknown key"),
        ("[indexes]\nconda = 'https://x'\n", "indexes.conda", "unknown key"),
        ("[project]\nmanager = 'pip'\n", "project.manager", "unknown manager 'pip'"),
        ("[project]\npython = '3'\n", "project.python", "not a Python version"),
        ("[project]\npython = 3.10\n", "project.python", "must be quoted"),
        ("[project]\nrequirements = ['numpy', 'torch>=>2']\n", "project.requirements[1]",
         "not a valid PEP 508"),
        ("[project]\nrequirements = 'numpy'\n", "project.requirements", "list of strings"),
        ("[project]\ngit = ['pypcd @ https://github.com/klintan/pypcd.git']\n", "project.git[0]",
         "not a git requirement"),
        ("[project]\nname = 'my env'\n", "project.name", "not a usable name"),
        ("[indexes]\npypi = 'ftp://x'\n", "indexes.pypi", "http(s)://"),
        ("conda = 'x'\n", "conda", "expected a table"),
        ("project = 3\n", "project", "expected a table"),
    ],
)
def test_bad_spec_names_file_and_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    exc = ei.value
    assert exc.path == str(p) and exc.field == field
    assert words in exc.message
    rendered = exc.render()
    assert str(p) in rendered and field in rendered
    assert exc.exit_code == 2


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not valid TOML") as ei:
        load_spec(write(tmp_path, "[project\n"))
    assert ei.value.path == str(tmp_path / "envbuild.toml")
    with pytest.raises(SpecError, match="cannot read") as ei2:
        load_spec(tmp_path / "absent.toml")
    assert "envbuild init" in (ei2.value.hint or "")


@pytest.mark.parametrize(
    ("text", "name", "url", "ref"),
    [
        ("pkg @ git+file:///tmp/repo@v1.0", "pkg", "file:///tmp/repo", "v1.0"),
        ("pypcd @ git+https://github.com/klintan/pypcd.git@master", "pypcd",
         "https://github.com/klintan/pypcd.git", "master"),
        ("pypcd @ git+https://github.com/klintan/pypcd.git", "pypcd",
         "https://github.com/klintan/pypcd.git", None),
        # pip's bare form (SCENARIOS B): the name comes from the repository.
        ("git+https://github.com/klintan/pypcd.git@master", "pypcd", "https://github.com/klintan/pypcd.git",
         "master"),
        ("git+https://github.com/klintan/pypcd.git", "pypcd", "https://github.com/klintan/pypcd.git", None),
        ("git+https://host/x/repo.git@v2#egg=other", "other", "https://host/x/repo.git", "v2"),
        # user@host in the URL is not a ref.
        ("r @ git+ssh://git@github.com/o/r.git", "r", "ssh://git@github.com/o/r.git", None),
        ("r @ git+ssh://git@github.com/o/r.git@0123abc", "r", "ssh://git@github.com/o/r.git", "0123abc"),
        ("m @ git+file:///tmp/repo@", "m", "file:///tmp/repo", None),
    ],
)
def test_parse_git(text: str, name: str, url: str, ref: str | None) -> None:
    g = parse_git(text)
    assert (g.name, g.url, g.ref) == (name, url, ref)
    # str() round-trips through the parser.
    assert parse_git(str(g)) == g


@pytest.mark.parametrize("text", ["pypcd", "pypcd @ https://x/y.git", "@ git+https://x/y.git", "git+"])
def test_parse_git_rejects(text: str) -> None:
    with pytest.raises(SpecError, match="not a git requirement"):
        parse_git(text, path="f", field="project.git[0]")


def test_requirements_txt(tmp_path: Path) -> None:
    p = write(tmp_path, "# pinned\n--extra-index-url https://x/simple\nnumpy<1.20  # mmdet3d\n"
              "mmcv-full==1.4.0\n\ngit+https://github.com/klintan/pypcd.git@master\n", "requirements.txt")
    spec = load_spec(p)
    assert spec.requirements == ("numpy<1.20", "mmcv-full==1.4.0")
    assert [str(g) for g in spec.git] == ["pypcd @ git+https://github.com/klintan/pypcd.git@master"]
    assert spec.path == str(p) and spec.name == tmp_path.name


def test_requirements_txt_bad_line_names_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "numpy\ntorch>=>2\n", "requirements.txt")
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    assert ei.value.path == str(p) and ei.value.field == "line 2"


ENV_YML = """\
name: echofusion
channels:
  - pytorch
  - conda-forge
dependencies:
  - python=3.7
  - cudatoolkit=11.3
  - pip
  - pip:
    - mmcv-full==1.4.0  # from the OpenMMLab index
    - "mmdet==2.19.0"
"""


def test_environment_yml(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, ENV_YML, "environment.yml"))
    assert spec.name == "echofusion" and spec.python == "3.7" and spec.manager == "conda"
    assert spec.conda_channels == ("pytorch", "conda-forge")
    assert spec.conda_packages == ("cudatoolkit=11.3",)
    assert spec.requirements == ("mmcv-full==1.4.0", "mmdet==2.19.0")


def test_environment_yml_flush_list_style(tmp_path: Path) -> None:
    # Lists written without indentation under their key, pip entries two spaces in.
    text = "name: e\ndependencies:\n- python>=3.8\n- numpy=1.19\n- pip:\n  - cupy-cuda113\n"
    spec = load_spec(write(tmp_path, text, "environment.yaml"))
    assert spec.python == "3.8" and spec.conda_packages == ("numpy=1.19",)
    assert spec.requirements == ("cupy-cuda113",)


def test_environment_yml_bad_pip_requirement_names_file(tmp_path: Path) -> None:
    p = write(tmp_path, "name: e\ndependencies:\n  - pip:\n    - torch>=>2\n", "environment.yml")
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    assert ei.value.path == str(p) and ei.value.field == "dependencies.pip"


def test_digest_is_stable_and_sensitive(tmp_path: Path) -> None:
    a = load_spec(write(tmp_path, GOOD))
    b_dir = tmp_path / "elsewhere"
    b_dir.mkdir()
    # Same content at another path (target profile written absolute so it resolves the same).
    b = load_spec(write(b_dir, GOOD.replace('"targets/server.json"', f'"{tmp_path}/targets/server.json"')))
    assert a.digest() == b.digest() and len(a.digest()) == 64
    assert a.digest() == load_spec(tmp_path / "envbuild.toml").digest()
    c = load_spec(write(b_dir, GOOD.replace("numpy<1.20", "numpy<1.21")))
    assert c.digest() != a.digest()


def test_spec_from_requirements() -> None:
    s = spec_from_requirements(["numpy", "pkg @ git+file:///tmp/repo@v1.0"], python="3.11")
    assert s.requirements == ("numpy",) and s.git[0].ref == "v1.0" and s.python == "3.11"
    with pytest.raises(SpecError) as ei:
        spec_from_requirements(["numpy"], manager="pip")
    assert ei.value.field == "--manager"
    with pytest.raises(SpecError) as ei2:
        spec_from_requirements(["torch>=>2"])
    assert ei2.value.field == "REQ"


# --------------------------------------------------------------------------- envbuild init


def test_init_writes_a_loadable_commented_spec(tmp_path: Path) -> None:
    path, spec = init_spec(tmp_path)
    assert path == tmp_path / "envbuild.toml"
    text = path.read_text()
    # Every key of the format appears, commented where it is optional.
    for key in ("[project]", "name =", "python =", "manager =", "requirements =", "git =", "[conda]",
                "channels =", "packages =", "[target]", "profile =", "[indexes]", "pypi =", "pytorch =",
                "openmmlab ="):
        assert key in text, key
    assert load_spec(path) == spec and spec.name == tmp_path.name
    # Uncommenting every example still gives a valid spec.
    uncommented = "\n".join(line.replace("# ", "", 1) if line.startswith(("# [", "# channels", "# packages",
                                                                             "# profile", "# pypi",
                                                                             "# pytorch", "# openmmlab",
                                                                             "# python"))
                            else line.replace('    # "', '    "', 1) for line in text.splitlines())
    (tmp_path / "full").mkdir()
    full = load_spec(write(tmp_path / "full", uncommented))
    assert "mmcv-full==1.4.0" in full.requirements and full.git[0].name == "pypcd"
    assert full.target_profile is not None and full.conda_packages == ("libgl",)
    assert tomllib.loads(uncommented)["project"]["python"] == "3.10"


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    init_spec(tmp_path / "envbuild.toml", name="a")
    with pytest.raises(InputError) as ei:
        init_spec(tmp_path / "envbuild.toml", name="b")
    assert ei.value.exit_code == 2 and "--force" in (ei.value.hint or "")
    assert load_spec(tmp_path / "envbuild.toml").name == "a"
    _, spec = init_spec(tmp_path / "envbuild.toml", name="b", python="3.7", manager="micromamba", force=True)
    assert (spec.name, spec.python, spec.manager) == ("b", "3.7", "micromamba")


def test_init_bad_values_name_the_flag(tmp_path: Path) -> None:
    for kwargs, flag in (({"python": "3"}, "--python"), ({"manager": "pip"}, "--manager"),
                         ({"name": "a b"}, "--name")):
        with pytest.raises(InputError) as ei:
            init_spec(tmp_path, **kwargs)  # type: ignore[arg-type]
        assert ei.value.field == flag
    assert not (tmp_path / "envbuild.toml").exists()  # nothing half-written


runner = CliRunner()


def test_cli_init(tmp_path: Path) -> None:
    target = tmp_path / "proj"
    res = runner.invoke(app, ["init", str(target), "--json", "--python", "3.11"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["ok"] is True and out["path"] == str(target / "envbuild.toml")
    assert out["spec"]["python"] == "3.11" and out["spec"]["name"] == "proj"
    again = runner.invoke(app, ["init", str(target)])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(app, ["init", str(target), "--force", "--manager", "pip", "--json"])
    assert bad.exit_code == 2 and json.loads(bad.stdout)["field"] == "--manager"
    assert load_spec(target / "envbuild.toml").python == "3.11"  # the failed --force left it intact
