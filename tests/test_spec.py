"""The envbuild.toml reader (envbuild.spec) and `envbuild init`, which writes one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
from typer.testing import CliRunner

from envbuild.cli import app, resolve_cli
from envbuild.errors import InputError, SpecError
from envbuild.init import init_spec
from envbuild.matrix import default_indexes
from envbuild.spec import GitRequirement, load_spec, parse_git, spec_from_requirements
from envbuild.target import TargetFlags

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
    assert spec.indexes["pytorch"] == default_indexes()["pytorch"]
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
    assert ei.value.path == str(p) and ei.value.field == "line 4 (dependencies.pip)"


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


# --- requirements files and environment.yml as real projects write them (issue 12) ----------------

SHA_A = "a" * 64
SHA_B = "b" * 64


def test_requirements_txt_every_form(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    write(tmp_path, "scipy>=1.10\n-r more/extra.txt\n", "base.txt")
    (tmp_path / "more").mkdir()
    write(tmp_path / "more", "pandas  # via ../base.txt\n", "extra.txt")
    write(tmp_path, "numpy<2.3\ntorch==2.6.0\n", "constraints.txt")
    text = (
        "# a real project's file\n"
        "--index-url https://mirror.example/simple/\n"
        "--extra-index-url https://download.pytorch.org/whl/cu124\n"
        "-f https://download.openmmlab.com/mmcv/dist/cu113/torch1.10/index.html\n"
        "--find-links wheels\n"
        "-r base.txt\n"
        "-c constraints.txt\n"
        "--prefer-binary\n"
        "--no-binary mmcv-full\n"
        "numpy>=1.24; python_version >= \"3.9\"\n"
        "six==1.16.0 \\\n"
        f"    --hash=sha256:{SHA_A} \\\n"
        f"    --hash=sha256:{SHA_B}\n"
        "-e git+https://github.com/o/editable.git@v1#egg=editable\n"
        "git+https://github.com/open-mmlab/mmdetection3d.git@v0.17.1#egg=mmdet3d&subdirectory=pkg/python\n"
        "pypcd @ git+https://github.com/klintan/pypcd.git@master\n"
        "git+ssh://git@github.com/o/private.git@0123abcd#egg=private\n"
        "localpkg @ git+file:///srv/repos/localpkg@main\n"
    )
    spec = load_spec(write(tmp_path, text, "requirements.txt"))
    # in file order, included files where they are included
    assert spec.requirements == ("scipy>=1.10", "pandas", 'numpy>=1.24; python_version >= "3.9"',
                                 "six==1.16.0")
    assert spec.constraints == ("numpy<2.3", "torch==2.6.0")
    assert spec.indexes["pypi"] == "https://mirror.example/simple"
    assert spec.extra_index_urls == ("https://download.pytorch.org/whl/cu124",)
    assert spec.find_links == ("https://download.openmmlab.com/mmcv/dist/cu113/torch1.10/index.html",
                               (tmp_path / "wheels").as_uri())
    assert spec.hashes == {"six": (SHA_A, SHA_B)}
    assert spec.allow_sdist == ("mmcv-full",)
    gits = {g.name: g for g in spec.git}
    assert gits["editable"] == GitRequirement("editable", "https://github.com/o/editable.git", "v1")
    assert gits["mmdet3d"] == GitRequirement("mmdet3d", "https://github.com/open-mmlab/mmdetection3d.git",
                                             "v0.17.1", "pkg/python")
    assert gits["pypcd"].ref == "master"
    assert gits["private"] == GitRequirement("private", "ssh://git@github.com/o/private.git", "0123abcd")
    assert gits["localpkg"] == GitRequirement("localpkg", "file:///srv/repos/localpkg", "main")
    # the subdirectory survives the round trip through the spec's text form (the lock's spec copy)
    assert parse_git(str(gits["mmdet3d"])) == gits["mmdet3d"]
    # a constraint of a required package reaches the resolver; the others only the lock engine
    assert spec.resolver_requirements() == [*spec.requirements, "numpy<2.3"]
    assert spec.to_dict()["constraints"] == ["numpy<2.3", "torch==2.6.0"]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("numpy\n--trusted-host example.org\n", "line 2", "pip option '--trusted-host' is not understood"),
        ("--pre\n", "line 1", "not understood"),
        ("-e .\n", "line 1", "editable local checkout"),
        ("./vendor/pkg\n", "line 1", "local path"),
        ("dist/pkg-1.0-py3-none-any.whl\n", "line 1", "local path"),
        ("hg+https://hg.example/repo#egg=r\n", "line 1", "only git"),
        ("--no-binary :all:\n", "line 1", "every package on the target"),
        ("six==1.16.0 --hash=md5:abcd\n", "line 1", "not a sha256"),
        ("six==1.16.0 --global-option=x\n", "line 1", "not understood"),
        ("numpy\n-r missing.txt\n", "line 2", "does not exist"),
        ("-r\n", "line 1", "needs a value"),
        ("-r https://x/r.txt\n", "line 1", "is a URL"),
        ("git+https://host/x.git#egg=x&foo=1\n", "line 1", "unknown URL fragment"),
        ("git+git@github.com:o/r.git\n", "line 1", "not an https://"),
        ("torch>=>2\n", "line 1", "not a valid PEP 508"),
    ],
)
def test_requirements_txt_refuses_with_line(tmp_path: Path, text: str, line: str, words: str) -> None:
    # Nothing is skipped silently: what envbuild cannot honour names the file, the line, what to write.
    p = write(tmp_path, text, "requirements.txt")
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    assert ei.value.path == str(p) and ei.value.field == line and words in ei.value.message
    assert ei.value.hint and ei.value.exit_code == 2


def test_requirements_txt_include_errors_name_the_included_file(tmp_path: Path) -> None:
    write(tmp_path, "numpy\n--trusted-host x\n", "inner.txt")
    p = write(tmp_path, "-r inner.txt\n", "requirements.txt")
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    assert ei.value.path == str(tmp_path / "inner.txt") and ei.value.field == "line 2"
    write(tmp_path, "-r requirements.txt\n", "inner.txt")
    with pytest.raises(SpecError, match="includes itself"):
        load_spec(p)


def test_not_utf8_is_input_error(tmp_path: Path) -> None:
    for name in ("requirements.txt", "environment.yml"):
        p = tmp_path / name
        p.write_bytes(b"numpy\n# caf\xe9\n" if name.endswith(".txt") else b"name: e\n# caf\xe9\n")
        with pytest.raises(SpecError, match="not UTF-8") as ei:
            load_spec(p)
        assert ei.value.field == "line 2" and ei.value.exit_code == 2


CONDA_EXPORT = """\
name: detr
channels:
  - pytorch
  - nvidia
  - conda-forge
  - defaults
dependencies:
  - _libgcc_mutex=0.1=main
  - ca-certificates=2022.07.19=h06a4308_0
  - cudatoolkit=11.3.1=h2bc3f7f_2
  - numpy=1.21.5=py38h6c91a56_3
  - python=3.8.13=h12debd9_0
  - pytorch=1.12.1=py3.8_cuda11.3_cudnn8.3.2_0
  - pytorch-mutex=1.0=cuda
  - torchvision=0.13.1=py38_cu113
  - pip=22.1.2=py38h06a4308_0
  - pip:
    - -r requirements-extra.txt
    - pycocotools==2.0.4
    - git+https://github.com/cocodataset/panopticapi.git#egg=panopticapi
prefix: /home/someone/miniconda3/envs/detr
"""


def test_conda_env_export(tmp_path: Path) -> None:
    write(tmp_path, "scipy==1.9.1\n--extra-index-url https://x.example/simple\n", "requirements-extra.txt")
    spec = load_spec(write(tmp_path, CONDA_EXPORT, "environment.yml"))
    assert spec.name == "detr" and spec.python == "3.8" and spec.manager == "conda"
    assert spec.conda_channels == ("pytorch", "nvidia", "conda-forge", "defaults")
    # torch and torchvision move to the pip side (the resolver picks their build); the build strings stay
    # on the conda packages conda solves; cudatoolkit's version is the CUDA constraint and it stays.
    assert spec.requirements == ("torch==1.12.1", "torchvision==0.13.1", "scipy==1.9.1", "pycocotools==2.0.4")
    assert spec.cuda == "==11.3.1"
    assert spec.conda_packages == ("_libgcc_mutex=0.1=main", "ca-certificates=2022.07.19=h06a4308_0",
                                   "cudatoolkit=11.3.1=h2bc3f7f_2", "numpy=1.21.5=py38h6c91a56_3",
                                   "pytorch-mutex=1.0=cuda")
    assert [g.name for g in spec.git] == ["panopticapi"]
    assert spec.extra_index_urls == ("https://x.example/simple",)


def test_environment_yml_conda_specs_become_constraints(tmp_path: Path) -> None:
    text = ("name: e\nchannels: [pytorch, conda-forge]\ndependencies:\n  - python=3.9\n"
            "  - pytorch<=1.12.1\n  - cudatoolkit=11.8\n  - conda-forge::cupy>=12\n  - pytorch-cuda=11.8\n")
    spec = load_spec(write(tmp_path, text, "environment.yml"))
    assert spec.requirements == ("torch<=1.12.1", "cupy>=12")
    assert spec.cuda == "==11.8.*,==11.8.*"
    assert spec.conda_channels == ("pytorch", "conda-forge") and spec.conda_packages == ("cudatoolkit=11.8",)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("name: e\nvariables:\n  X: 1\n", "line 2", "not a key envbuild reads"),
        ("name: e\ndependencies:\n  - pytorch>=1.8|<1.4\n", "line 3", "cannot read the conda version"),
        ("name: e\ndependencies:\n  - numpy[version='>=1.2']\n", "line 3", "not a conda package spec"),
        ("name: e\ndependencies:\n  - pip:\n    - --trusted-host x\n", "line 4 (dependencies.pip)",
         "not understood"),
        ("name: e\ndependencies:\n  - pip:\n    - -r absent.txt\n", "line 4 (dependencies.pip)",
         "does not exist"),
        ("name: e\ndependencies: numpy\n", "line 2", "expected a list"),
    ],
)
def test_environment_yml_refuses_with_line(tmp_path: Path, text: str, line: str, words: str) -> None:
    p = write(tmp_path, text, "environment.yml")
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    assert ei.value.path == str(p) and ei.value.field == line and words in ei.value.message


def test_conda_constraints_steer_the_resolution(tmp_path: Path) -> None:
    text = ("name: e\ndependencies:\n  - python=3.8\n  - pytorch<=1.12.1\n  - cudatoolkit=11.3\n"
            "  - cupy>=10\n")
    p = write(tmp_path, text, "environment.yml")
    res = resolve_cli([], TargetFlags(driver="535.54.03"), spec_path=p)
    assert res.ok, res.conflicts
    from packaging.version import Version
    assert Version(res.packages["torch"].split("+")[0]) <= Version("1.12.1")
    assert res.cuda is not None and res.cuda.startswith("11.3")
    # the same file without the conda constraints picks a newer CUDA on this driver: the constraint acted
    free_yml = write(tmp_path, "name: e\ndependencies:\n  - python=3.8\n  - pytorch\n", "free.yml")
    free = resolve_cli([], TargetFlags(driver="535.54.03"), spec_path=free_yml)
    assert free.ok and free.cuda != res.cuda


def test_cuda_constraint_that_nothing_meets_is_explained(tmp_path: Path) -> None:
    p = write(tmp_path, "name: e\ndependencies:\n  - pytorch>=2.5\n  - cudatoolkit=10.2\n", "environment.yml")
    res = resolve_cli([], TargetFlags(driver="535.54.03"), spec_path=p)
    assert not res.ok and any("CUDA ==10.2.*" in c for c in res.conflict_texts)


def test_cli_bad_requirements_file_exits_2(tmp_path: Path) -> None:
    p = write(tmp_path, "numpy\n--trusted-host x\n", "requirements.txt")
    r = CliRunner().invoke(app, ["resolve", "--spec", str(p), "--cpu", "--json"])
    assert r.exit_code == 2
    err = json.loads(r.stdout)
    assert str(p) in json.dumps(err) and "line 2" in json.dumps(err)
