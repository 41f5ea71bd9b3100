"""pip-tools adapter: ``pip-compile --generate-hashes``, the compatible (slow) fallback engine.

pip-compile resolves for the interpreter it runs in: it cannot lock for another Python or
platform, so ``lock`` refuses it when the target differs from this machine.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path

from envbuild.errors import ConflictError
from envbuild.tools._run import ToolFailed, run, split_credentials
from envbuild.tools.uv import CompileOptions, Pinned, parse_compiled

__all__ = ["compile_requirements", "host_python"]


def host_python() -> str:
    """``X.Y`` of the interpreter pip-compile runs in (the only one it can lock for)."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _encoded(url: str) -> str:
    """``url`` with its user and password percent-encoded, so an unencoded ``@``, quote or space in
    the password neither splits the space-separated PIP_* list nor changes the host pip contacts."""
    from urllib.parse import quote, urlsplit, urlunsplit

    clean, user, password = split_credentials(url)
    if user is None:
        return url
    parts = urlsplit(clean)
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "")
    return urlunsplit(parts._replace(netloc=f"{auth}@{parts.netloc}"))


def compile_requirements(opts: CompileOptions, *, cache_dir: str | None = None, previous: str | None = None,
                         timeout: float = 3600) -> tuple[str, list[Pinned]]:
    """Run pip-compile in this interpreter; return (raw output, pins with every file's hash).

    ``previous`` is an earlier requirements.txt whose pins pip-compile keeps where it can.

    Raises:
        ConflictError: pip's resolver found no consistent set.
        ToolError: pip-compile failed otherwise.
    """
    with tempfile.TemporaryDirectory(prefix="envbuild-piptools-") as tmp:
        req_in = Path(tmp) / "requirements.in"
        req_in.write_text("\n".join(opts.requirements) + "\n")
        out = Path(tmp) / "requirements.txt"
        if previous:
            out.write_text(previous)
        cmd = [sys.executable, "-m", "piptools", "compile", str(req_in), "--output-file", str(out),
               "--generate-hashes", "--no-header", "--quiet", "--resolver", "backtracking",
               "--strip-extras", "--allow-unsafe", "--no-emit-index-url", "--no-emit-find-links"]
        if opts.constraints:
            cons = Path(tmp) / "constraints.txt"
            cons.write_text("\n".join(opts.constraints) + "\n")
            cmd += ["--constraint", str(cons)]
        # Index URLs go through the environment, not argv: their credentials are never visible in ps.
        env = {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               "PIP_TIMEOUT": "10", "PIP_RETRIES": "2"}
        if opts.index_url:
            env["PIP_INDEX_URL"] = _encoded(opts.index_url)
        if opts.extra_index_urls:
            env["PIP_EXTRA_INDEX_URL"] = " ".join(_encoded(u) for u in opts.extra_index_urls)
        if opts.find_links:
            env["PIP_FIND_LINKS"] = " ".join(_encoded(u) for u in opts.find_links)
        if opts.only_binary:
            # wheels only, as the uv engine locks (a newer sdist-only release is not what the target
            # installs); the packages named in no_binary are built from source knowingly
            pip_args = ["--only-binary=:all:", *(f"--no-binary={n}" for n in opts.no_binary)]
            cmd += ["--pip-args", shlex.join(pip_args)]
        if cache_dir:
            cmd += ["--cache-dir", cache_dir]
        if opts.refresh:
            cmd += ["--rebuild"]
        # The same inputs as uv: no pip.conf and no PIP_* variables of the user.
        if "PIP_CERT" in os.environ:
            env["PIP_CERT"] = os.environ["PIP_CERT"]
        try:
            run(cmd, env=env, drop_env=("PIP_",), timeout=timeout, tool="pip-compile", cwd=tmp)
        except ToolFailed as exc:
            if "ResolutionImpossible" in exc.stderr or "Could not find a version" in exc.stderr:
                lines = [ln.strip() for ln in exc.stderr.splitlines() if ln.strip()][-15:]
                raise ConflictError(
                    "pip-compile found no set of versions that satisfies the requirements: "
                    + " ".join(lines[-6:]),
                    conflicts=lines, hint="Relax a pin, or try '--engine uv' for a clearer explanation.",
                ) from None
            raise
        text = out.read_text()
    return text, parse_compiled(text)
