"""Read a scenario file into a validated Scenario, with errors that point into the file.

Relative paths in the file are taken relative to the file's folder; `${VAR}` is expanded
(`${TESTBED_DATA}` defaults to the shared data folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from testbed.errors import ScenarioError
from testbed.scenario.model import Scenario
from testbed.scenario.yamlsource import Loc, SourceMap, load_yaml_with_lines


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at `loc` (for listing valid keys)."""
    model: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return model if fields is not None else None
        annotation = fields[part].annotation
        model = _unwrap(annotation)
        if model is None:
            return None
    return model


def _unwrap(annotation: Any) -> Any:
    """First BaseModel inside Optional[...] / list[...] / Annotated[...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap(arg)
        if found is not None:
            return found
    return None


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    if kind == "extra_forbidden":
        owner = _model_at(loc[:-1])
        valid = sorted(owner.model_fields) if owner is not None else []
        hint = f"; valid keys here: {', '.join(valid)}" if valid else ""
        return f"unknown key '{loc[-1]}'{hint}"
    if kind == "missing":
        return "required field is missing"
    msg = str(error["msg"])
    msg = msg.removeprefix("Value error, ")
    if kind in {"value_error", "assertion_error"}:
        return msg
    return f"{msg} (got {error.get('input')!r})"


def _clean_loc(loc: Loc) -> Loc:
    # pydantic adds tags such as 'function-after[...]' to loc for validators on unions
    return tuple(p for p in loc if not (isinstance(p, str) and "[" in p))


def _resolve_paths(obj: BaseModel, base: Path) -> None:
    """Make every relative Path field absolute against the scenario file's folder."""
    for name in type(obj).model_fields:
        value = getattr(obj, name)
        if isinstance(value, Path) and not value.is_absolute():
            object.__setattr__(obj, name, (base / value).resolve())
        elif isinstance(value, BaseModel):
            _resolve_paths(value, base)
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, BaseModel):
                    _resolve_paths(item, base)
        elif isinstance(value, dict):
            for item in value.values():
                if isinstance(item, BaseModel):
                    _resolve_paths(item, base)


def validation_error_to_scenario_error(exc: ValidationError, source: SourceMap) -> ScenarioError:
    """All of pydantic's errors, each as `file:line: field: message`, in one ScenarioError."""
    lines: list[str] = []
    first_line: int | None = None
    first_field: str | None = None
    for error in exc.errors():
        loc = _clean_loc(tuple(error["loc"]))
        line = source.line_of(loc)
        field = ".".join(str(p) for p in loc) or "(top level)"
        if first_line is None:
            first_line, first_field = line, field
        where = f"{source.path}:{line}" if line else str(source.path)
        lines.append(f"{where}: {field}: {_describe(error)}")
    err = ScenarioError("\n".join(lines))
    err.path, err.line, err.field = str(source.path), first_line, first_field
    return err


def load_scenario(path: str | Path) -> Scenario:
    """Parse and validate a scenario file against the schema. Raises ScenarioError naming
    file, line and field. `validate_scenario` (checks.py) also checks names and traces."""
    return load_scenario_with_source(path)[0]


def load_scenario_with_source(path: str | Path) -> tuple[Scenario, SourceMap]:
    """`load_scenario`, and the map from fields to the file's lines (for later checks)."""
    path = Path(path)
    data, source = load_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise ScenarioError("the top level must be a mapping of keys", path=path, line=1)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise validation_error_to_scenario_error(exc, source) from None
    _resolve_paths(scenario, path.resolve().parent)
    return scenario, source
