"""Typed reading of a workload's JSON options: every bad or unknown key is a loud error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodes.errors import WorkloadOptionsError

_REQUIRED: Any = object()


class Options:
    """Reads options one by one; `finish()` rejects keys nobody read (typos), listing the valid.

    Example:
        opts = Options("downlink-files", {"ground_port": 7000})
        port = opts.integer("ground_port", 7000, low=1, high=65535)
        opts.finish()
    """

    def __init__(self, kind: str, raw: Mapping[str, object] | None):
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise WorkloadOptionsError(f"workload {kind}: options {raw!r}, expected a JSON object")
        self.kind = kind
        self._raw = dict(raw)
        self._known: set[str] = set()

    def _get(self, name: str, default: object) -> object:
        self._known.add(name)
        if name in self._raw and self._raw[name] is not None:
            return self._raw[name]
        if default is _REQUIRED:
            raise WorkloadOptionsError(f"workload {self.kind}: option {name!r} is required")
        return default

    def _bad(self, name: str, value: object, expected: str) -> WorkloadOptionsError:
        return WorkloadOptionsError(f"workload {self.kind}: option {name}={value!r}, "
                                    f"expected {expected}")

    def ignore(self, *names: str) -> None:
        """Marks options that this role accepts but does not use (another role's options)."""
        self._known.update(names)

    def value(self, name: str, default: object = _REQUIRED) -> Any:
        """Any JSON value (lists, objects); the caller checks its shape."""
        return self._get(name, default)

    def text(self, name: str, default: object = _REQUIRED) -> Any:
        value = self._get(name, default)
        if value is not None and (not isinstance(value, str) or not value):
            raise self._bad(name, value, "a non-empty string")
        return value

    def integer(self, name: str, default: object = _REQUIRED, *, low: int | None = None,
            high: int | None = None) -> Any:
        value = self._get(name, default)
        if value is None:
            return None
        if type(value) is not int:
            raise self._bad(name, value, "an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self._bad(name, value, f"an integer in [{low}, {high}]")
        return value

    def number(self, name: str, default: object = _REQUIRED, *, positive: bool = True) -> Any:
        value = self._get(name, default)
        if value is None:
            return None
        if type(value) not in (int, float):
            raise self._bad(name, value, "a number")
        if positive and not value > 0:
            raise self._bad(name, value, "a number > 0")
        return float(value)

    def flag(self, name: str, default: object = _REQUIRED) -> Any:
        value = self._get(name, default)
        if value is not None and not isinstance(value, bool):
            raise self._bad(name, value, "true or false")
        return value

    def names(self, name: str, default: object = _REQUIRED) -> Any:
        """A non-empty list of distinct non-empty strings (e.g. node names)."""
        value = self._get(name, default)
        if value is None:
            return None
        if (not isinstance(value, list) or not value
                or not all(isinstance(v, str) and v for v in value)
                or len(set(value)) != len(value)):
            raise self._bad(name, value, "a non-empty list of distinct names")
        return list(value)

    def int_list(self, name: str, width: int, default: object = _REQUIRED) -> Any:
        """A list of exactly `width` integers (e.g. [top, left, size])."""
        value = self._get(name, default)
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != width or \
                not all(type(v) is int for v in value):
            raise self._bad(name, value, f"a list of {width} integers")
        return list(value)

    def int_rows(self, name: str, width: int, default: object = _REQUIRED) -> Any:
        """A list of lists of `width` integers each (e.g. [[top, left], ...])."""
        value = self._get(name, default)
        if value is None:
            return None
        if not isinstance(value, list) or not all(
                isinstance(row, list) and len(row) == width
                and all(type(v) is int for v in row) for row in value):
            raise self._bad(name, value, f"a list of [{', '.join(['int'] * width)}] rows")
        return [list(row) for row in value]

    def finish(self) -> None:
        unknown = sorted(set(self._raw) - self._known)
        if unknown:
            raise WorkloadOptionsError(f"workload {self.kind}: unknown option(s) "
                                       f"{', '.join(unknown)}; valid: "
                                       f"{', '.join(sorted(self._known))}")
