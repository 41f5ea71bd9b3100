"""One adapter per external tool (uv, pip-tools, rattler, git, conda-pack)."""
