"""One error root for envbuild; the CLI maps each class to an exit code.

Library code raises these and never calls ``sys.exit``.  A message is one
paragraph that names the input (file and field when there is one) and says what
to do.  Anything that is not an ``EnvbuildError`` is a bug: the CLI reports it as
one paragraph with ``EXIT_INTERNAL`` and writes the traceback to a log file.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_INPUT",
    "EXIT_INTERNAL",
    "EXIT_NO_CAUSE",
    "ConflictError",
    "DataError",
    "EnvbuildError",
    "FetchError",
    "HashMismatch",
    "InputError",
    "PackError",
    "ProfileError",
    "SpecError",
    "ToolError",
    "UnsafeArchive",
]

EXIT_CONFLICT = 1
EXIT_INPUT = 2
EXIT_FETCH = 3
EXIT_TOOL = 4
EXIT_PACK = 5
# sysexits.h EX_SOFTWARE: an internal error (a bug), kept apart from every documented failure.
EXIT_INTERNAL = 70
EXIT_NO_CAUSE = 6  # doctor --log: no rule recognised the log (not "healthy": envbuild does not know)


class EnvbuildError(Exception):
    """Base of every error envbuild reports to a user."""

    exit_code: int = 1

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.field = field
        self.hint = hint

    def render(self) -> str:
        """The one-paragraph text shown to a user."""
        where = ""
        if self.path and self.field:
            where = f"{self.path}: field '{self.field}': "
        elif self.path:
            where = f"{self.path}: "
        elif self.field:
            where = f"'{self.field}': "
        text = where + self.message
        if self.hint:
            text += " " + self.hint
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "path": self.path,
            "field": self.field,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }


class InputError(EnvbuildError):
    """Bad input from the user: a requirement, a flag, a file."""

    exit_code = EXIT_INPUT


class SpecError(InputError):
    """An envbuild.toml (or requirements / environment file) that cannot be used."""


class ProfileError(InputError):
    """A machine profile that is malformed or names something unknown."""


class DataError(EnvbuildError):
    """The bundled compatibility data is inconsistent (a bug in envbuild/data)."""

    exit_code = EXIT_TOOL


class ConflictError(EnvbuildError):
    """No consistent set exists; ``conflicts`` holds the plain-word explanations."""

    exit_code = EXIT_CONFLICT

    def __init__(self, message: str, conflicts: list[str] | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.conflicts = list(conflicts or [])

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "conflicts": list(self.conflicts)}


class FetchError(EnvbuildError):
    """A download, a cache or a bundle is unusable."""

    exit_code = EXIT_FETCH


class HashMismatch(FetchError):
    """A file's sha256 differs from the one the lock recorded."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"sha256 mismatch: expected {expected}, got {actual}.",
            path=path,
            hint="The file was altered or truncated; delete it and run 'envbuild fetch' again.",
        )
        self.expected = expected
        self.actual = actual


class ToolError(EnvbuildError):
    """An external tool (uv, pip, git, conda-pack, rattler, nvcc) is missing or failed."""

    exit_code = EXIT_TOOL


class PackError(EnvbuildError):
    """An environment cannot be packed or unpacked."""

    exit_code = EXIT_PACK


class UnsafeArchive(PackError):
    """An archive member would land outside the destination."""
