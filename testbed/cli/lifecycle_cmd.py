"""`testbed up | run | down | status | fault`: bring a scenario's network up and take it down."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from testbed.cli.console import CliConsole
from testbed.errors import SystemRequirementError, TestbedError
from testbed.lifecycle.control import request
from testbed.lifecycle.live_view import (
    LiveStatus,
    LiveView,
    ground_tallies,
    render_status,
    routes_to_ground,
)
from testbed.lifecycle.run_dir import RunDir
from testbed.lifecycle.session import (
    Held,
    Prepared,
    down,
    down_all,
    hold,
    leftover_runs,
    prepare,
    resolve_run_dir,
    summarize,
)
from testbed.observability.observers import observability_observers
from testbed.observability.report import write_report
from testbed.workloads.registry import workload_for

console = CliConsole()
fault_app = typer.Typer(help="Inject faults into a running testbed (started by up or run).",
                        no_args_is_help=True)


def _need_root() -> None:
    if os.geteuid() != 0:
        raise SystemRequirementError("bringing a network up needs root (namespaces, Open "
                                     "vSwitch, cgroups): run as root, e.g. with sudo")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<14}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=console, transient=False)


def _held_run(scenario: Path, *, speed: float | None, duration_s: float | None,
              workload: bool, keep: bool) -> tuple[Prepared, Held]:
    _need_root()
    bar = _progress()
    view = LiveView(console, above=bar)  # a terminal: one Live shows the bars and the table
    with (contextlib.nullcontext() if view.tty else bar), view:
        tasks: dict[str, Any] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total)
            bar.update(tasks[step], completed=done, total=total)

        prep = prepare(scenario, speed=speed, duration_s=duration_s, progress=progress)
        if prep.leftovers is not None and (prep.leftovers.removed or prep.leftovers.failed):
            console.print(f"removed leftovers of an earlier run: {prep.leftovers.summary()}")
        console.print(f"run directory: {prep.run_dir.path}", highlight=False)
        load = workload_for(prep) if workload else None
        view.attach(LiveStatus(prep.run_dir, prep.timeline,
                               tallies=ground_tallies(load) if load is not None else None))
        # metrics exporter, the run's Prometheus (started now: its first scrape before the
        # clock starts), annotations
        observers = observability_observers(prep)
        held = hold(prep, progress=progress, report=console.print, workload=load, keep=keep,
                    observers=observers)
    return prep, held


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['scenario']}: per satellite")
    for col in ("satellite", "contact s", "files", "MB delivered", "goodput Mbit/s",
                "capacity Mbit/s", "limited by"):
        table.add_column(col, justify="left" if col == "satellite" else "right")
    per_sat = (summary.get("workload") or {}).get("per_satellite", {})
    for sat, contact in summary["contact_s"].items():
        w = per_sat.get(sat, {})
        table.add_row(sat, f"{contact:.1f}", str(w.get("files", "-")),
                      f"{w['bytes'] / 1e6:.2f}" if "bytes" in w else "-",
                      f"{w['goodput_mbps']:.2f}" if "goodput_mbps" in w else "-",
                      f"{w['capacity_mbps']:.2f}" if "capacity_mbps" in w else "-",
                      str(w.get("limited_by", "-")))
    console.print(table)
    note = (summary.get("workload") or {}).get("note")
    if note:
        console.print(f"note: {note}", highlight=False)
    if summary.get("speed_caveat"):
        console.print(f"[yellow]note:[/yellow] {summary['speed_caveat']}", highlight=False)
    late = summary["lateness_ms"]
    console.print(f"events applied: {summary['events_applied']} at "
                  f"{summary['instants_applied']} instants; lateness p50 {late['p50']:.2f} ms, "
                  f"p99 {late['p99']:.2f} ms, max {late['max']:.2f} ms", highlight=False)
    routes = summary.get("route_changes")
    if routes and routes.get("install_ms"):
        inst, down = routes["install_ms"], routes.get("down_after_ms")
        line = (f"route changes: {routes['submitted']} ({routes['superseded']} superseded); "
                f"routes in effect p50 {inst['p50']:.1f} ms, p99 {inst['p99']:.1f} ms after "
                "their instant")
        if down:
            line += (f"; make-before-break downs {routes['make_before_break_downs']}, "
                     f"p99 {down['p99']:.1f} ms after the instant")
        console.print(line, highlight=False)
        for err in routes.get("errors", []):
            console.print(f"[red]route change failed:[/red] {err}")
    for fault in summary.get("faults") or []:
        if "lost" in fault:
            console.print(fault_line(fault), highlight=False)
    if summary.get("teardown"):
        console.print(f"teardown: {summary['teardown']}", highlight=False)


def fault_line(fault: dict[str, Any]) -> str:
    """One line per fault for the end of `testbed run`: what it hit and what was lost."""
    what = fault.get("link") or fault.get("node") or ""
    head = f"fault {fault['id']} {fault['fault']} {what}".rstrip() + \
        f" at {fault.get('at_scenario_s', 0):.1f} s"
    lost = fault.get("lost")
    if not isinstance(lost, dict):
        return f"{head}: not over"
    if "error" in lost:
        return f"{head}: {lost['error']}"
    parts = []
    if fault.get("resync_s") is not None:
        parts.append(f"controller resync {fault['resync_s']:.2f} s")
    if lost.get("unreachable_s") is not None:
        parts.append(f"unreachable {lost['unreachable_s']:.1f} s ({lost.get('ended', '')})")
    sh = lost.get("shaper") or {}
    if sh:
        parts.append(f"shaper dropped {sh['dropped_total']} frames (queue {sh['dropped_queue']},"
                     f" loss {sh['dropped_loss']}, tx {sh['dropped_tx']}), "
                     f"{sh['queued_at_end']} still queued")
    w = lost.get("workload") or {}
    if "error" in w:
        parts.append(f"workload: {w['error']}")
    elif w:
        line = (f"{w['transfers_interrupted']} transfers interrupted "
                f"({w['bytes_discarded'] / 1e3:.0f} kB discarded), {w['files_resent']} files "
                f"resent ({w['bytes_resent'] / 1e3:.0f} kB)")
        if w.get("files_not_delivered_by_end") is not None:
            line += (f", {w['files_not_delivered_by_end']} files "
                     f"({w['bytes_not_delivered_by_end'] / 1e3:.0f} kB) not delivered by the end")
        parts.append(line)
    return f"{head}: " + "; ".join(parts)


def up(
    scenario: Path = typer.Argument(..., help="Scenario YAML file."),
    speed: float = typer.Option(None, help="Override the scenario's speed (scenario s per "
                                "wall s)."),
    duration_s: float = typer.Option(None, "--duration-s", help="Override the duration."),
    keep: bool = typer.Option(False, help="Leave the network in place at the end (remove it "
                              "later with `testbed down`)."),
) -> None:
    """Bring SCENARIO's network up and play its timeline until it ends or Ctrl-C.

    Creates a namespace (+ cgroup) per node, an Open vSwitch bridge per node, shaped links, the
    controller; then applies every link change at its instant. `testbed status` and `testbed
    fault` work from another terminal meanwhile. Everything is removed at the end (also on
    Ctrl-C); after a crash or SIGKILL run `testbed down`. Running up again first removes what an
    earlier run of the same scenario left.

    Example: testbed up experiments/spaceverse-shanghai.yaml --speed 60
    """
    prep, held = _held_run(scenario, speed=speed, duration_s=duration_s, workload=False,
                           keep=keep)
    summary = summarize(prep, held)
    prep.run_dir.write_json(prep.run_dir.summary, summary)
    _print_summary(summary)


def run(
    scenario: Path = typer.Argument(..., help="Scenario YAML file."),
    speed: float = typer.Option(None, help="Override the scenario's speed."),
    duration_s: float = typer.Option(None, "--duration-s", help="Override the duration."),
) -> None:
    """Run SCENARIO end to end: up, the workload on every node, a summary, down.

    The summary gives per satellite contact time, files and bytes delivered, goodput against
    the programmed capacity, and the run clock's event lateness. Results, the manifest and the
    applied-event record stay in the run directory (outputs.dir/<scenario name>).

    Example: testbed run experiments/spaceverse-shanghai.yaml
    """
    prep, held = _held_run(scenario, speed=speed, duration_s=duration_s, workload=True,
                           keep=False)
    summary = summarize(prep, held)
    prep.run_dir.write_json(prep.run_dir.summary, summary)
    _print_summary(summary)
    try:
        report = write_report(prep.run_dir.path)
        console.print(f"report: {report}", highlight=False)
    except (TestbedError, OSError) as exc:
        console.print(f"report not written: {exc}", highlight=False)
    if held.teardown is not None and not held.teardown.ok:
        raise SystemRequirementError("teardown left resources behind: " +
                                     held.teardown.summary())


def down_cmd(
    target: Path = typer.Argument(..., help="Run directory, or the scenario file of the run."),
) -> None:
    """Remove everything a run created (namespaces, bridges, ports, qdiscs, cgroups,
    processes), from its ledger; also after `up` was killed with SIGKILL. Safe to repeat."""
    _need_root()
    report = down(resolve_run_dir(target))
    console.print(report.summary(), highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def clean_all(
    roots: list[Path] = typer.Argument(None, help="Folders holding run directories "
                                       "(default: runs)."),
) -> None:
    """Tear down every run under ROOTS whose ledger is still there (crashed, killed or still
    going), from its ledger, like `down` on each. Exit status 1 if anything could not be
    removed. `make clean` calls it before deleting runs/."""
    reports = {path: report for root in (roots or [Path("runs")])
               for path, report in _down_all(root).items()}
    for path, report in reports.items():
        console.print(f"{path}: {report.summary()}", highlight=False)
    if not reports:
        console.print("no run directories with a ledger", highlight=False)
    if not all(r.ok for r in reports.values()):
        raise typer.Exit(1)


def _down_all(root: Path) -> dict[Path, Any]:
    if leftover_runs(root):
        _need_root()
    return down_all(root)


def status(
    target: Path = typer.Argument(..., help="Run directory, or the scenario file of the run."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a run: addressing plan, links up, current ground contacts, routes."""
    run_dir: RunDir = resolve_run_dir(target)
    state = run_dir.read_json(run_dir.state)
    live: dict[str, Any] | None
    try:
        live = request(run_dir.path / "control.sock", {"op": "status"}, timeout_s=10)
    except Exception:  # noqa: BLE001 - a run that is not live is shown from its files
        live = None
    if as_json:
        typer.echo(json.dumps({"state": state, "live": live}, indent=2, default=str))
        return
    plan = state["plan"]
    table = Table(title=f"nodes of {run_dir.path.name} (prefix {plan['prefix']})")
    for col in ("node", "role", "namespace", "data ip", "mgmt ip", "bridge"):
        table.add_column(col)
    for n in plan["nodes"]:
        table.add_row(n["name"], n["role"], n["netns"], n["data_ip"], n["mgmt_ip"], n["bridge"])
    console.print(table)
    if live is None:
        console.print("not running (no control socket answered)")
        return
    links = live["links"]
    ground = [k for k, v in links.items() if v["kind"] == "ground" and v["up"]]
    view = _live_table(run_dir, plan, live)
    if view is not None:
        console.print(view)
    else:
        console.print(f"scenario time {live['scenario_t_s']:.1f} s, generation "
                  f"{live['generation']}, links up {sum(v['up'] for v in links.values())}/"
                      f"{len(links)}, ground contacts: {', '.join(ground) or 'none'}",
                      highlight=False)
    routes = live.get("routes", {}).get("routes", [])
    console.print(f"routes installed: {len(routes)}", highlight=False)


def _live_table(run_dir: RunDir, plan: dict[str, Any], live: dict[str, Any]) -> Any:
    """The table `testbed run` shows, from status.json, with each satellite's route to the
    (first) ground station from the live reply; None when status.json is not there yet."""
    try:
        status = json.loads(run_dir.status.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    status["scenario_t_s"] = live.get("scenario_t_s", status.get("scenario_t_s", 0.0))
    gs_ip = next((n["data_ip"] for n in plan["nodes"] if n["role"] == "ground"), None)
    return render_status(status, routes=routes_to_ground(live, gs_ip) if gs_ip else None)


def _fault(target: Path, payload: dict[str, Any]) -> None:
    run_dir = resolve_run_dir(target)
    reply = request(run_dir.path / "control.sock", payload)
    console.print(reply, highlight=False)


@fault_app.command("kill-node")
def kill_node(target: Path = typer.Argument(..., help="Run directory or scenario file."),
              name: str = typer.Argument(..., help="Node to fail."),
              restart_after_s: float = typer.Option(
                  None, "--restart-after", help="Bring the node back after this many s "
                  "(default: the scenario's nodes.<role>.restart_after_s).")) -> None:
    """Fail NODE: SIGKILL its agent and everything in its namespace and cgroup, take its links
    down and route around it; with --restart-after, restore its links, restart its agent and
    resume its workload. The run's summary reports what was lost."""
    _fault(target, {"op": "kill-node", "name": name, "restart_after_s": restart_after_s})


@fault_app.command("cut-link")
def cut_link(target: Path = typer.Argument(..., help="Run directory or scenario file."),
             a: str = typer.Argument(...), b: str = typer.Argument(...),
             for_s: float = typer.Option(None, "--for", help="Restore after this many s.")
             ) -> None:
    """Cut the link between nodes A and B (optionally only for a while)."""
    _fault(target, {"op": "cut-link", "a": a, "b": b, "for_s": for_s})


@fault_app.command("restart-controller")
def restart_controller(target: Path = typer.Argument(..., help="Run directory or scenario "
                                                     "file.")) -> None:
    """Kill the SDN controller and start it again; reports how long flows took to resync."""
    _fault(target, {"op": "restart-controller"})


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(run)
    app.command("down")(down_cmd)
    app.command("clean-all")(clean_all)
    app.command()(status)
    app.add_typer(fault_app, name="fault")
