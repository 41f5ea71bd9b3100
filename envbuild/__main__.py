"""``envbuild`` and ``python -m envbuild``: a re-lock's uv run starts first, then the CLI is imported."""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Console-script entry point (``envbuild.cli.main`` after the early start)."""
    argv = sys.argv[1:]
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "lock" and not {"-h", "--help", "--version"} & set(argv):
        # Before typer and the lock stage are imported (~0.4 s): see envbuild.tools.uv._Early.
        from envbuild.tools.uv import start_early

        start_early([os.getcwd(), *argv])
    from envbuild.cli import main as cli_main

    try:
        cli_main()
    finally:
        # The interpreter's last collections walk every object the imports made (~20-25 ms of a
        # command's exit here); frozen, they are skipped. atexit handlers and closing still run.
        import gc

        gc.freeze()


if __name__ == "__main__":
    main()
