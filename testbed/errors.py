"""The testbed's error hierarchy: every error a user can cause is a subclass of TestbedError.

Messages name the object, the bad value and what was expected; the CLI prints them without a
traceback and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class TestbedError(Exception):
    """Base of every error the testbed raises on purpose."""

    __test__ = False  # not a pytest test class despite the name


class InputError(TestbedError):
    """A file the user gave is wrong: names the file, the line (1-based) and the field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.message = message
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
        if field:
            where = f"{where}: {field}" if where else field
        super().__init__(f"{where}: {message}" if where else message)


class ScenarioError(InputError):
    """A scenario file does not validate."""


class TleError(InputError):
    """A TLE file is malformed (length, checksum, missing line)."""


class SelectionError(TestbedError):
    """A constellation selection matched no satellite, or asks for more than exist."""


class SystemRequirementError(TestbedError):
    """Something the host must provide is missing (root, a binary, a kernel feature)."""
