"""`testbed validate` and `testbed topo`: check a scenario; show and export its topology."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from testbed.cli.console import CliConsole
from testbed.constellation import resolve_constellation
from testbed.errors import InputError
from testbed.scenario import load_scenario
from testbed.scenario.checks import validate_scenario
from testbed.topo import TopologyReport, contact_windows_records, topology_report

console = CliConsole()
err_console = CliConsole(stderr=True)


def _fmt_time(t: np.datetime64) -> str:
    return str(t.astype("datetime64[ms]")).replace("T", " ")


def _show_warnings(caught: list[warnings.WarningMessage], out: CliConsole = console) -> None:
    for w in caught:
        out.print(f"[yellow]warning:[/] {w.message}", highlight=False)


def validate(scenario: Path = typer.Argument(..., help="Scenario YAML file.")) -> None:
    """Validate SCENARIO and list the satellites it selects; creates nothing.

    Checks what `up` and `run` check before they create anything: the schema, the workload
    kind, the device profiles, every trace file (parsed), the constellation selection.
    Errors name the file, the line and the field, e.g.

      experiments/x.yaml:8: ground_stations.0.lat_deg: Input should be less than or equal to 90
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = validate_scenario(scenario)
        resolved = resolve_constellation(s)
    _show_warnings(caught)
    console.print(f"[green]ok[/] {scenario}: scenario '{s.name}', "
                  f"{len(resolved.satellites)} of {resolved.source_count} satellites from "
                  f"{resolved.source}, {len(s.ground_stations)} ground station(s), "
                  f"{s.duration_s:g} s from {s.epoch:%Y-%m-%dT%H:%M:%SZ}", highlight=False)


def _windows_table(report: TopologyReport, limit: int) -> Table:
    names = dict(zip((s.name for s in report.constellation.satellites),
                     (n.name for n in report.timeline.nodes), strict=False))
    day = str(report.scenario.epoch.date())
    table = Table(title=f"Contact windows ({len(report.windows)}), UTC from {day}; "
                  "* = clipped by the scenario window")
    for col in ("station", "satellite", "rise", "culmination", "set", "duration s",
                "max elev °"):
        table.add_column(col, justify="right" if col[0] in "dm" else "left")
    for w in report.windows[:limit]:
        flag = "*" if w.clipped_start or w.clipped_end else ""
        table.add_row(w.station, names.get(w.satellite, w.satellite) + flag,
                      _fmt_time(w.rise_time)[11:], _fmt_time(w.culmination_time)[11:],
                      _fmt_time(w.set_time)[11:], f"{w.duration_s:.2f}",
                      f"{w.max_elevation_deg:.1f}")
    if len(report.windows) > limit:
        table.caption = f"{len(report.windows) - limit} more not shown (--limit)"
    return table


def _links_table(report: TopologyReport) -> Table:
    table = Table(title="Links")
    for col in ("quantity", "min", "median", "max", "unit"):
        table.add_column(col, justify="left" if col in ("quantity", "unit") else "right")
    table.add_row("ISLs (+Grid)", "", str(report.isl_count), "", "links")
    table.add_row("ISL time up", "", f"{100 * report.isl_up_fraction:.1f}", "", "%")
    for st in report.isl_stats:
        table.add_row(st.name, f"{st.minimum:.2f}", f"{st.median:.2f}", f"{st.maximum:.2f}",
                      st.unit)
    for gs, cov in report.coverage_fraction.items():
        table.add_row(f"{gs}: time covered", "", f"{100 * cov:.1f}", "", "%")
        table.add_row(f"{gs}: handovers", "", str(report.handovers[gs]), "", "")
    counts: dict[str, int] = {}
    for e in report.timeline.events:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    table.add_row("timeline events", "", str(len(report.timeline.events)), "",
                  ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return table


def topo(
    scenario: Path = typer.Argument(..., help="Scenario YAML file."),
    plot: Path | None = typer.Option(None, "--plot", help="Write ground tracks to this PNG "
                                     "and the contact Gantt chart beside it (-contacts.png)."),
    export: Path | None = typer.Option(None, "--export", help="Write the topology timeline: "
                                       "FILE.jsonl (JSON lines) or FILE.parquet."),
    limit: int = typer.Option(50, help="Show at most this many contact windows."),
    as_json: bool = typer.Option(False, "--json", help="Print every contact window as JSON "
                                 "on stdout (nothing else goes there; --limit does not apply)."),
) -> None:
    """Compute SCENARIO's topology: contact windows, ISL statistics, the event timeline.

    Example: testbed topo experiments/spaceverse-shanghai.yaml --plot topo.png
    --export timeline.jsonl

    With --json, stdout is one JSON object: {"scenario", "epoch_utc", "duration_s",
    "windows": [{"satellite", "satellite_source_name", "station", "rise_utc",
    "culmination_utc", "set_utc", "duration_s", "max_elevation_deg", "clipped_start",
    "clipped_end"}]}; messages go to stderr.
    """
    out = err_console if as_json else console
    if export is not None and export.suffix not in (".jsonl", ".parquet"):
        raise InputError(f"unknown export format '{export.suffix}', expected .jsonl or "
                         ".parquet", path=export)
    s = load_scenario(scenario)
    with warnings.catch_warnings(record=True) as caught, Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=out, transient=True,
    ) as bar:
        warnings.simplefilter("always")
        tasks: dict[str, int] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total)
            bar.update(tasks[step], completed=done, total=total)

        report = topology_report(s, progress)
    _show_warnings(caught, out)
    if as_json:
        typer.echo(json.dumps({
            "scenario": s.name, "epoch_utc": f"{s.epoch:%Y-%m-%dT%H:%M:%SZ}",
            "duration_s": s.duration_s, "windows": contact_windows_records(report)}))
    else:
        _print_tables(report, limit)
    if export is not None:
        if export.suffix == ".jsonl":
            report.timeline.to_jsonl(export)
        else:
            report.timeline.to_parquet(export)
        out.print(f"timeline written to {export}", highlight=False)
    if plot is not None:
        from testbed.topo_plot import plot_topology

        for written in plot_topology(report, plot):
            out.print(f"plot written to {written}", highlight=False)


def _print_tables(report: TopologyReport, limit: int) -> None:
    s = report.scenario
    console.print(f"scenario '{s.name}': {len(report.constellation.satellites)} satellites "
                  f"({report.constellation.source}), {len(s.ground_stations)} ground "
                  f"station(s), {s.duration_s:g} s, step {s.timeline.step_s:g} s",
                  highlight=False)
    console.print(_windows_table(report, limit))
    console.print(_links_table(report))


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(topo)
