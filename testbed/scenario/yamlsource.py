"""YAML loading that remembers where every key and value came from (file and 1-based line).

Validation errors are reported against the user's file, so the loader keeps a map from a path of
keys/indices (as pydantic reports it in `loc`) to the line of that item.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed.errors import ScenarioError
from testbed.paths import data_dir

Loc = tuple[str | int, ...]
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class SourceMap:
    """Lines of the items of one YAML document, keyed by their path."""

    path: Path
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """Line of `loc`, or of its nearest ancestor that has one."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None


def _expand(value: str, loc: Loc, source: SourceMap, line: int) -> str:
    """Replace ${VAR}; TESTBED_DATA defaults to the shared data folder."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in os.environ:
            return os.environ[name]
        if name == "TESTBED_DATA":
            return str(data_dir())
        raise ScenarioError(
            f"environment variable ${{{name}}} is not set",
            path=source.path, line=line, field=".".join(map(str, loc)),
        )

    return _VAR.sub(sub, value)


def _construct(node: yaml.Node, loc: Loc, source: SourceMap) -> Any:
    line = node.start_mark.line + 1
    source.lines.setdefault(loc, line)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key_node, yaml.ScalarNode):
                raise ScenarioError("mapping keys must be plain strings",
                                    path=source.path, line=key_node.start_mark.line + 1)
            if key in out:
                raise ScenarioError(f"duplicate key '{key}'", path=source.path,
                                    line=key_node.start_mark.line + 1,
                                    field=".".join(map(str, loc + (key,))))
            source.lines[loc + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, loc + (key,), source)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, loc + (i,), source) for i, item in enumerate(node.value)]
    value = yaml.SafeLoader.construct_object(_LOADER_PROXY, node)  # type: ignore[arg-type]
    if isinstance(value, str):
        value = _expand(value, loc, source, line)
    return value


class _ScalarLoader(yaml.SafeLoader):
    """A SafeLoader used only to resolve scalar nodes to Python values."""

    def __init__(self) -> None:  # no stream: we construct nodes composed elsewhere
        yaml.SafeLoader.__init__(self, "")


_LOADER_PROXY = _ScalarLoader()


def load_yaml_with_lines(path: str | Path) -> tuple[Any, SourceMap]:
    """Parse a YAML file; return its data and a SourceMap. Syntax errors name the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError("file not found", path=path) from None
    except OSError as exc:
        raise ScenarioError(f"cannot read: {exc.strerror}", path=path) from None
    source = SourceMap(path=path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        hint = ""
        lines = text.splitlines()
        if line is not None and line <= len(lines) and "${" in lines[line - 1]:
            hint = " (inside {...} or [...], quote values that contain ${VAR}: \"${VAR}/x\")"
        raise ScenarioError(f"YAML syntax: {exc.problem}{hint}", path=path, line=line) from None
    if node is None:
        raise ScenarioError("the file is empty", path=path)
    return _construct(node, (), source), source
