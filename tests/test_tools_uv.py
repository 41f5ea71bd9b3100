"""uv and pip-tools adapters against a local index: output parsing, conflicts, failures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pypi_fixture import Index, make_wheel, serving

from envbuild.errors import ConflictError, FetchError, ToolError
from envbuild.tools import piptools
from envbuild.tools.uv import CompileOptions, compile_pylock, compile_requirements, parse_compiled

HOST = f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_compile_parse_and_conflict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")  # the dead-index case below fails at once
    idx = Index(tmp_path / "www")
    d = idx.file("x").parent
    idx.add("simple", [
        make_wheel(d, "six", "1.16.0", tag="py2.py3-none-any"),
        make_wheel(d, "addict", "2.4.0", requires=["six>=1.16"]),
        make_wheel(d, "wcwidth", "0.2.6", tag="py3-none-win_amd64"),
        make_wheel(d, "wcwidth", "0.2.6", tag="py3-none-manylinux_2_17_x86_64"),
    ])
    with serving(idx) as url:
        opts = CompileOptions(requirements=("addict", "wcwidth"), python_version="3.8",
                              python_platform="x86_64-manylinux_2_17", index_url=f"{url}/simple")
        _, pins = compile_requirements(opts)
        assert [(p.name, p.version) for p in pins] == [("addict", "2.4.0"), ("six", "1.16.0"),
                                                       ("wcwidth", "0.2.6")]
        assert pins[1].via == ("addict",)
        assert len(pins[2].hashes) == 2  # requirements format: every platform's file
        _, pylock = compile_pylock(opts)
        wc = next(p for p in pylock if p.name == "wcwidth")
        # pylock format: only the target's file, with its URL.
        assert [f.filename for f in wc.files] == ["wcwidth-0.2.6-py3-none-manylinux_2_17_x86_64.whl"]
        assert wc.files[0].url.startswith(url) and len(wc.files[0].sha256) == 64

        bad = CompileOptions(requirements=("addict", "six<1.16"), python_version="3.8",
                             index_url=f"{url}/simple")
        with pytest.raises(ConflictError) as info:
            compile_requirements(bad)
        assert "six" in info.value.message and info.value.conflicts
        with pytest.raises(ConflictError):
            piptools.compile_requirements(CompileOptions(requirements=("addict", "six<1.16"),
                                                         index_url=f"{url}/simple"))
        _, pt = piptools.compile_requirements(CompileOptions(requirements=("addict",),
                                                             index_url=f"{url}/simple"))
        assert [(p.name, p.version) for p in pt] == [("addict", "2.4.0"), ("six", "1.16.0")]
    # A dead index is a fetch failure (exit 3) with uv's message, not a conflict.
    with pytest.raises(FetchError) as err:
        compile_requirements(CompileOptions(requirements=("six",), index_url="http://127.0.0.1:9/simple"))
    assert err.value.exit_code == 3 and "127.0.0.1:9" in err.value.message
    # A requirement uv cannot build is a tool failure (exit 4).
    with pytest.raises(ToolError) as err2:
        compile_requirements(CompileOptions(requirements=("broken @ file:///nonexistent/broken",)))
    assert err2.value.exit_code == 4 and not isinstance(err2.value, ConflictError)
    assert piptools.host_python() == HOST


def test_parse_compiled_rejects_non_pins() -> None:
    text = ("-e ./local\nnumpy==1.24.4 \\\n    --hash=sha256:aa \\\n    --hash=md5:bb\n"
            "    # via\n    #   -r in\n    #   scipy\n")
    [p] = parse_compiled(text)
    assert (p.name, p.version, p.hashes, p.via) == ("numpy", "1.24.4", ("aa",), ("-r in", "scipy"))
    with pytest.raises(ToolError, match="unexpected line"):
        parse_compiled("numpy>=1\n")
