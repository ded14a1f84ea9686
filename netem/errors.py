"""netem's error hierarchy (netem must not import testbed, so it has its own base)."""

from __future__ import annotations

from pathlib import Path


class NetemError(Exception):
    """Base of every error netem raises on purpose."""


class TraceFormatError(NetemError):
    """A trace file is malformed: names the file, the 1-based line and the problem."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.message = message
        where = self.path or ""
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class LinkStateError(NetemError, ValueError):
    """A link state has an out-of-range value (names the link, field, value, expectation)."""


class UnsupportedError(NetemError):
    """The kernel or host cannot do what was asked (e.g. netem on a kernel without it)."""
