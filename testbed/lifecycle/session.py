"""up / run / down / status: the lifecycle the CLI exposes, built from the lifecycle modules.

`hold()` owns everything it starts through try/finally (SIGTERM takes the same path as
Ctrl-C), so a finished or interrupted run leaves nothing behind; after SIGKILL, `down()`
removes what the ledger lists.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netem.errors import UnsupportedError
from netem.player import MonotonicClock
from netem.probe import probe_capabilities
from testbed.constellation import resolve_constellation
from testbed.errors import InputError, TestbedError
from testbed.ledger import Ledger, TeardownReport, retire_ledger, teardown
from testbed.lifecycle.clock import AppliedInstant, RunClock
from testbed.lifecycle.control import ControlServer
from testbed.lifecycle.faults import FAULT_OPS, FaultInjector
from testbed.lifecycle.live_view import base_status, merge_view
from testbed.lifecycle.network import Network, choose_mgmt_subnet
from testbed.lifecycle.observers import (
    Observers,
    ProgressObserver,
    RunObserver,
    StatusFileObserver,
)
from testbed.lifecycle.routes import percentiles
from testbed.lifecycle.run_dir import RunDir
from testbed.manifest import build_manifest, write_manifest
from testbed.scenario import Scenario, load_scenario
from testbed.scenario.checks import validate_scenario
from testbed.sysrun import Runner
from testbed.timeline.build import build_timeline
from testbed.timeline.model import Timeline
from testbed.workloads.pool import DATA_PORT, EAGER_MAX_NODES, AgentPool

Progress = Callable[[str, int, int], None]

CLOCK_RT_PRIORITY = 5
"""SCHED_FIFO priority of the run clock's thread: above the controller and OVS, below the
userspace shaper's worker (10), whose frames must not wait for the clock."""
Report = Callable[[str], None]


def run_dir_for(scenario: Scenario) -> RunDir:
    return RunDir(Path(scenario.outputs.dir) / scenario.name)


def resolve_run_dir(target: Path) -> RunDir:
    """A run directory, or the run directory of a scenario file."""
    if target.is_dir():
        return RunDir(target)
    if target.suffix in (".yaml", ".yml") and target.is_file():
        return run_dir_for(load_scenario(target))
    raise InputError("expected a run directory or a scenario file", path=target)


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM/SIGHUP end a run like Ctrl-C, through the same finally blocks."""
    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can own signal handlers; its caller handles them
        return
    old = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def down(run_dir: RunDir) -> TeardownReport:
    """Remove every resource in the run's ledger (idempotent)."""
    if not run_dir.ledger.exists():
        return TeardownReport()
    with Ledger(run_dir.ledger) as ledger:
        report = teardown(ledger, Runner())
    return report


def leftover_runs(root: Path) -> list[RunDir]:
    """Every run directory under `root` (at any depth) that still has a ledger.jsonl."""
    if not root.is_dir():
        return []
    return [RunDir(p.parent) for p in sorted(root.rglob("ledger.jsonl"))]


def down_all(root: Path) -> dict[Path, TeardownReport]:
    """`down` every run under `root` that still has a ledger (also runs still going); the
    report of each, by run directory. Idempotent: a second call finds everything gone."""
    return {run_dir.path: down(run_dir) for run_dir in leftover_runs(root)}


@dataclass
class Prepared:
    scenario_path: Path
    scenario: Scenario
    timeline: Timeline
    run_dir: RunDir
    leftovers: TeardownReport | None
    inventory: object = None
    """The lab inventory named by `backend.inventory` (libvirt and remote backends), loaded
    and checked by `prepare`."""
    mgmt_subnet: str | None = None
    """The management subnet of this run (`backend.mgmt_subnet`, `auto` resolved against the
    host's addresses by `prepare`): the network and the metrics scraper use the same one."""


def prepare(scenario_path: Path, *, speed: float | None = None,
            duration_s: float | None = None, progress: Progress | None = None) -> Prepared:
    """Validate, compute the timeline, and make the run directory (manifest first).

    Bad scenarios fail here, before anything is created (`validate_scenario`: the same checks
    as `testbed validate`). A run of the same scenario that was
    left behind (crash, SIGKILL) is removed first and its ledger kept as
    ledger.<unix time>.removed.jsonl, so `up` is idempotent; then every other file of an
    earlier run is removed, so the new run's append-only files start empty.
    """
    scenario = validate_scenario(scenario_path)
    update: dict[str, Any] = {}
    if speed is not None:
        update["speed"] = speed
    if duration_s is not None:
        update["duration_s"] = duration_s
    if update:
        scenario = Scenario.model_validate({**scenario.model_dump(), **update})
    inventory = _load_inventory(scenario, scenario_path)
    _probe_kernel_now()
    constellation = resolve_constellation(scenario)
    timeline, _ = build_timeline(scenario, constellation, progress)
    run_dir = run_dir_for(scenario)
    leftovers = retire_ledger(run_dir.ledger, Runner())
    run_dir.start_fresh()
    write_manifest(run_dir.manifest, build_manifest(
        scenario, scenario_path, run_name=scenario.name,
        extra={"timeline_events": len(timeline.events)}))
    write_outputs(scenario, timeline, run_dir, progress)
    mgmt_subnet = choose_mgmt_subnet(scenario)  # after the leftover run's bridge is gone
    return Prepared(scenario_path, scenario, timeline, run_dir, leftovers, inventory,
                    mgmt_subnet)


def _probe_kernel_now() -> None:
    """Probe the kernel's qdiscs (which shaper ISLs get) before any thread of the run exists:
    the probe's netlink helper forks, and a fork beside running threads (the metrics exporter,
    Prometheus' watcher) can deadlock. The result is cached for the process."""
    try:
        probe_capabilities()
    except UnsupportedError:
        pass  # not root: `up` says so with its own error


def _load_inventory(scenario: Scenario, scenario_path: Path) -> object:
    """The lab inventory `backend.inventory` names (relative to the scenario file; checked by
    `validate_scenario` already), or None."""
    path = scenario.backend.inventory
    if path is None:
        return None
    from testbed.inventory import load_inventory

    return load_inventory(path if path.is_absolute() else scenario_path.parent / path)


def write_outputs(scenario: Scenario, timeline: Timeline, run_dir: RunDir,
                  progress: Progress | None = None) -> list[Path]:
    """What `outputs` asks for before the run: the timeline as JSON lines and/or Parquet, and
    with `plots` the ground tracks and contact Gantt (`plots/topology*.png`)."""
    written: list[Path] = []
    if "jsonl" in scenario.outputs.timeline:
        written.append(timeline.to_jsonl(run_dir.timeline))
    if "parquet" in scenario.outputs.timeline:
        written.append(timeline.to_parquet(run_dir.timeline.with_suffix(".parquet")))
    if scenario.outputs.plots:
        from testbed.topo import topology_report
        from testbed.topo_plot import plot_topology

        folder = run_dir.path / "plots"
        folder.mkdir(exist_ok=True)
        written += plot_topology(topology_report(scenario, progress), folder / "topology.png")
    return written


@dataclass
class Held:
    """What a finished hold() reports."""

    instants: list[AppliedInstant]
    workload: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    teardown: TeardownReport | None = None
    played_ns: int = 0  # scenario time reached (the whole duration unless interrupted)
    route_changes: dict[str, Any] | None = None  # RoutePusher.summary()


def _lateness_ms(instants: list[AppliedInstant]) -> dict[str, float]:
    nan = float("nan")
    return percentiles([i.lateness_ns / 1e6 for i in instants]) or \
        {"p50": nan, "p99": nan, "max": nan}


def hold(prep: Prepared, *, progress: Progress | None = None, report: Report = print,
         workload: Any = None, keep: bool = False,
         observers: Sequence[RunObserver] = (), serve: bool = False) -> Held:
    """Bring the network up, start the node agents, play the timeline (and the workload), then
    tear down.

    `workload`: a testbed.workloads.OrchestratorWorkload or None. `observers` are told about
    the run as it happens (plus the status file and progress observers made here). `serve`:
    start every node's agent with `up` even above `nodes.agents: auto`'s limit.
    """
    scenario, run_dir = prep.scenario, prep.run_dir
    held = Held(instants=[])
    control: ControlServer | None = None
    faults: FaultInjector | None = None
    pool: AgentPool | None = None
    with _sigterm_as_interrupt(), Ledger(run_dir.ledger) as ledger:
        net: Network | None = None
        clock: RunClock | None = None
        observe = Observers([*observers], report)
        if progress is not None:
            observe.observers.append(ProgressObserver(progress, scenario.duration_s))
        try:
            net = Network.up(scenario, prep.timeline, run_dir, Runner(), ledger,
                             progress=progress, inventory=prep.inventory,
                             mgmt_subnet=prep.mgmt_subnet)
            live_net = net
            observe.observers.append(StatusFileObserver(
                lambda rec: run_dir.write_json(run_dir.status,
                                               _live_status(live_net, rec, held.faults))))
            pool = AgentPool(net, run_dir=run_dir.path, results_dir=run_dir.results,
                             logs_dir=run_dir.logs)
            eager = agents_eager(scenario, len(net.plan.nodes)) or serve
            if eager:
                if progress is not None:
                    progress("agents", 0, len(net.plan.nodes))
                pool.ensure([n.name for n in net.plan.nodes])
                if progress is not None:
                    progress("agents", len(net.plan.nodes), len(net.plan.nodes))
            start_ns = time.monotonic_ns() + 200_000_000
            net.start_clock(start_ns)
            pool.set_context(node_context_fn(net, prep.timeline, start_ns, scenario.speed))
            faults = FaultInjector(net, held.faults, workload=workload,
                                   on_fault=observe.on_fault)

            def handle(req: dict[str, Any]) -> dict[str, Any]:
                return _control(live_net, clock, req, faults, pool)

            control = ControlServer(run_dir.path / "control.sock", handle)
            if workload is not None:
                workload.start(net, pool)
            clock = RunClock(prep.timeline.events, faults.apply_events, MonotonicClock(),
                             speed=scenario.speed, record_path=run_dir.events_applied,
                             rt_priority=CLOCK_RT_PRIORITY)
            observe.on_up(net)
            held.instants = clock.run(start_ns, int(scenario.duration_s * 1e9),
                                      observe.on_instant)
            held.played_ns = clock.scenario_now_ns
        except KeyboardInterrupt:
            held.interrupted = True
            if clock is not None:
                held.instants = clock.applied
                held.played_ns = clock.scenario_now_ns
            report("interrupted: tearing down")
        finally:
            try:
                if faults is not None:
                    faults.close()  # pending restores cancelled; open faults end here
                if workload is not None and pool is not None:
                    held.workload = workload.stop()
                if faults is not None:
                    faults.finish()  # the workload's losses per fault
                held.counters = net.counters() if net is not None else {}
                observe.on_end(held)
            except (TestbedError, OSError) as exc:
                report(f"collecting results failed: {exc}")
            finally:
                if control is not None:
                    control.close()
                try:
                    if pool is not None:
                        pool.stop()
                    if net is not None:
                        net.stop_processes()
                finally:
                    if net is not None:
                        held.route_changes = net.pusher.summary()
                    if not keep:
                        held.teardown = teardown(ledger, Runner())
    return held


def agents_eager(scenario: Scenario, node_count: int) -> bool:
    """Whether `up` starts every node's agent (see `nodes.agents` in the scenario README)."""
    mode = scenario.nodes.agents
    return mode == "eager" or (mode == "auto" and node_count <= EAGER_MAX_NODES)


def node_context_fn(net: Network, timeline: Timeline, start_ns: int, speed: float
                    ) -> Callable[[str], dict[str, Any]]:
    """The context each agent gets: peers' data addresses, its contact windows (scenario
    seconds), the run's start on the wall clock and its speed."""
    start_unix_s = time.time() + (start_ns - time.monotonic_ns()) / 1e9
    peers = {n.name: n.data_ip for n in net.plan.nodes}
    windows = contact_windows(timeline)

    def context(node: str) -> dict[str, Any]:
        return {"node": node, "peers": peers, "data_port": DATA_PORT,
                "scenario_start_unix_s": start_unix_s, "speed": speed,
                "contacts": windows.get(node, [])}
    return context


def contact_windows(tl: Timeline) -> dict[str, list[dict[str, Any]]]:
    """Per node, its ground-link windows in scenario seconds: a satellite's with each station,
    a station's with each satellite (`peer` names the other end)."""
    stations = {n.name for n in tl.nodes if n.kind == "ground"}
    out: dict[str, list[dict[str, Any]]] = {n.name: [] for n in tl.nodes}
    opened: dict[str, int] = {}
    for e in tl.events:
        if e.link_kind != "ground" or e.kind not in ("up", "down"):
            continue
        if e.kind == "up":
            opened.setdefault(e.link, e.t_ns)
            continue
        t0 = opened.pop(e.link, None)
        if t0 is None:
            continue
        sat, gs = (e.b, e.a) if e.a in stations else (e.a, e.b)
        out[sat].append({"peer": gs, "start_s": t0 / 1e9, "end_s": e.t_ns / 1e9})
        out[gs].append({"peer": sat, "start_s": t0 / 1e9, "end_s": e.t_ns / 1e9})
    for link, t0 in opened.items():
        a, b = link.split("--")
        sat, gs = (b, a) if a in stations else (a, b)
        out[sat].append({"peer": gs, "start_s": t0 / 1e9, "end_s": tl.duration_s})
        out[gs].append({"peer": sat, "start_s": t0 / 1e9, "end_s": tl.duration_s})
    for windows in out.values():
        windows.sort(key=lambda w: w["start_s"])
    return out


def _live_status(net: Network, rec: AppliedInstant,
                 faults: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """status.json as the clock writes it (about once a second, on its own thread: only cheap
    reads of the link book); the keys the live view adds meanwhile are kept (`live_view`)."""
    assert net.book is not None
    ground = [r.link.name for r in net.book.records.values() if r.kind == "ground" and r.up]
    status = {"scenario_t_s": rec.scenario_t_ns / 1e9, "generation": net.generation,
              "links_up": sum(r.up for r in net.book.records.values()),
              "links_total": len(net.book.records), "ground_links_up": ground,
              "down_nodes": sorted(net.down_nodes), "updated_utc": time.time(),
              "duration_s": net.scenario.duration_s, **base_status(net.book.records)}
    if faults is not None:
        status["faults"] = [dict(f) for f in faults]
    return merge_view(net.run_dir.status, status)


def _control(net: Network, clock: RunClock | None, req: dict[str, Any],
             faults: FaultInjector | None, pool: AgentPool | None = None) -> dict[str, Any]:
    op = req.get("op")
    if op == "job" and pool is not None:
        node, kind = str(req.get("node")), str(req.get("kind"))
        net.plan.node(node)  # unknown names raise, listing valid ones
        reply = pool.submit(node, kind, req.get("options") or {})
        return {"node": node, "addr": pool.addr(node), **reply}
    if op == "status":
        assert net.book is not None
        routes = net.route_table()
        return {"scenario_t_s": (clock.scenario_now_ns / 1e9) if clock else 0.0,
                "generation": net.generation,
                "links": {name: {"up": r.up, "kind": r.kind, "delay_us": r.delay_us,
                                 "rate_bps": r.rate_bps}
                          for name, r in net.book.records.items()},
                "down_nodes": sorted(net.down_nodes), "routes": routes}
    if op in FAULT_OPS and faults is not None:
        return faults.handle(req)
    raise TestbedError(f"unknown control op {op!r}; choose: status, job, cut-link, "
                       "kill-node, restart-controller")


def contact_seconds(tl: Timeline, end_ns: int) -> dict[str, float]:
    """Scenario seconds each satellite had its own ground link, up to `end_ns`."""
    stations = {n.name for n in tl.nodes if n.kind == "ground"}
    total = {n.name: 0.0 for n in tl.nodes if n.kind == "satellite"}
    opened: dict[str, tuple[str, int]] = {}
    for e in tl.events:
        if e.t_ns > end_ns:
            break
        if e.link_kind != "ground" or e.kind not in ("up", "down"):
            continue
        sat = e.b if e.a in stations else e.a
        if e.kind == "up":
            opened[e.link] = (sat, e.t_ns)
        elif e.link in opened:
            s, t0 = opened.pop(e.link)
            total[s] += (e.t_ns - t0) / 1e9
    for s, t0 in opened.values():
        total[s] += (end_ns - t0) / 1e9
    return total


def speed_caveat(speed: float) -> str | None:
    """What a speed other than 1 does to the results, or None at speed 1.

    The clock compresses scenario time, but links keep their real rates and delays, so a
    contact of T scenario seconds lasts T / speed wall seconds and carries 1 / speed of the
    data it really would.
    """
    if math.isclose(speed, 1.0):
        return None
    return (f"speed {speed:g}: each contact lasted 1/{speed:g} of its real time while links kept "
            f"their real rates, so it carried {1 / speed:.3g}x the data it really would; "
            "results that depend on data volume or latency per contact need speed 1")


def summarize(prep: Prepared, held: Held) -> dict[str, Any]:
    """Per satellite: contact time, files and bytes delivered, goodput vs capacity;
    event lateness p50/p99; what was removed. `data_per_contact_ratio` (1 / speed) and
    `speed_caveat` say how much less data each contact carried than it really would."""
    speed = prep.scenario.speed
    return {
        "scenario": prep.scenario.name,
        "duration_s": prep.scenario.duration_s,
        "played_s": held.played_ns / 1e9,
        "speed": speed,
        "data_per_contact_ratio": 1.0 / speed,
        "speed_caveat": speed_caveat(speed),
        "interrupted": held.interrupted,
        "instants_applied": len(held.instants),
        "events_applied": sum(i.events for i in held.instants),
        "lateness_ms": _lateness_ms(held.instants),
        "route_changes": held.route_changes,
        "contact_s": contact_seconds(prep.timeline, held.played_ns),
        "workload": held.workload,
        "faults": held.faults,
        "shaper_counters": held.counters,
        "teardown": held.teardown.summary() if held.teardown else None,
    }
