"""What a run needs beyond the schema: registered names and readable traces.

Owns `validate_scenario(path)`: the schema (`load_scenario`) plus every check that needs a
registry or a file: the workload kind (the node workload registry, or "none"), the device
profiles (built-in or defined under `nodes.profiles`), and each ground-link trace (parsed with
netem.traces and turned into the program the link will play, exactly as the run does).
`testbed validate`, `up` and `run` all call it, so whatever validate accepts, a run accepts,
and a bad file fails before anything is created. Creates nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from netem.errors import NetemError
from netem.traces import read_trace
from testbed.errors import ScenarioError
from testbed.lifecycle.links import trace_program
from testbed.profiles import PROFILES
from testbed.scenario.loader import load_scenario_with_source
from testbed.scenario.model import LinkDirectionSpec, Scenario
from testbed.scenario.yamlsource import Loc, SourceMap


def valid_workload_kinds() -> list[str]:
    """Workload kinds a scenario may name: those the orchestrator drives (each also known to
    the node side, a test checks), and "none"."""
    from testbed.workloads.registry import workload_kinds

    return workload_kinds()


def _workload_problems(scenario: Scenario) -> Iterator[tuple[Loc, str]]:
    kind = scenario.workload.kind
    valid = valid_workload_kinds()
    if kind not in valid:
        yield ("workload", "kind"), f"unknown workload kind '{kind}'; choose: {', '.join(valid)}"


def _profile_problems(scenario: Scenario) -> Iterator[tuple[Loc, str]]:
    custom = scenario.nodes.profiles
    valid = sorted({*PROFILES, *custom})
    for role in ("satellite", "ground"):
        name = getattr(scenario.nodes, role).profile
        if name not in PROFILES and name not in custom:
            yield (("nodes", role, "profile"),
                   f"unknown device profile '{name}'; choose: {', '.join(valid)} "
                   "(or define it under nodes.profiles)")


def _direction_problems(spec: LinkDirectionSpec, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Each trace file parses, records what the link takes from it, and makes a program."""
    files = [("trace", spec.trace, spec.trace_format, ("opportunities_ms", "rate_bps"),
              "capacity"),
             ("delay_trace", spec.delay_trace, None, ("delay_us",), "delay")]
    for key, path, fmt, wanted, what in files:
        if path is None:
            continue
        try:
            series = read_trace(path, fmt).down
        except NetemError as exc:  # its message names the file (and the line) when it can
            named = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
            yield loc + (key,), f"not a usable trace: {named}"
            return
        if series is None or all(getattr(series, q) is None for q in wanted):
            recorded = ", ".join(series.quantities) if series is not None else "nothing"
            yield (loc + (key,),
                   f"{path} records no {what} for the link (it records: {recorded or 'nothing'})")
            return
    try:
        trace_program(spec, ".".join(map(str, loc)))
    except NetemError as exc:
        yield loc, f"its traces cannot be played: {exc}"


def _trace_problems(scenario: Scenario) -> Iterator[tuple[Loc, str]]:
    ground = scenario.links.ground
    for direction in ("downlink", "uplink"):
        yield from _direction_problems(getattr(ground, direction),
                                       ("links", "ground", direction))


def _inventory_problems(scenario: Scenario, source: SourceMap) -> Iterator[tuple[Loc, str]]:
    """The lab inventory the remote backend needs, and that it parses (its own errors name
    its file and line)."""
    from testbed.errors import InputError

    spec = scenario.backend
    if spec.inventory is None:
        if "remote" in (spec.kind, spec.ground):
            yield (("backend", "inventory"), "backend remote needs the lab inventory (hosts, "
                   "users, keys): set backend.inventory to its file (see "
                   "experiments/lab/inventory.example.yaml)")
        return
    from testbed.inventory import load_inventory

    path = spec.inventory if spec.inventory.is_absolute() else \
        Path(source.path).parent / spec.inventory
    try:
        load_inventory(path)
    except InputError as exc:
        yield ("backend", "inventory"), f"inventory {exc}"


def check_runnable(scenario: Scenario, source: SourceMap) -> None:
    """Raise one ScenarioError listing every problem as `file:line: field: message`."""
    problems = [*_workload_problems(scenario), *_profile_problems(scenario),
                *_trace_problems(scenario), *_inventory_problems(scenario, source)]
    if not problems:
        return
    lines = []
    for loc, message in problems:
        line = source.line_of(loc)
        where = f"{source.path}:{line}" if line else str(source.path)
        lines.append(f"{where}: {'.'.join(map(str, loc))}: {message}")
    err = ScenarioError("\n".join(lines))
    first_loc = problems[0][0]
    err.path, err.line, err.field = (str(source.path), source.line_of(first_loc),
                                     ".".join(map(str, first_loc)))
    raise err


def validate_scenario(path: str | Path) -> Scenario:
    """The scenario at `path`, checked for everything a run needs; ScenarioError otherwise.

    Example: `validate_scenario("experiments/spaceverse-shanghai.yaml").name`
    """
    scenario, source = load_scenario_with_source(path)
    check_runnable(scenario, source)
    return scenario
