from __future__ import annotations

from envbuild.cli import main

if __name__ == "__main__":
    main()
