"""Workloads as the orchestrator drives them: start a node agent in every node (inside its
namespace and cgroup, on the management network), start the workload through the agents' API,
and collect their results at the end. Workloads register under kebab-case names.

After `testbed fault kill-node` (testbed.lifecycle.faults) the workload restarts the node's
agent in the same namespace and cgroup and resumes its part, and reports per fault what the
workload lost, from the ground station's per-file events."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodes import client
from nodes.errors import NodeError
from nodes.workloads.downlink_files import list_files
from testbed.errors import InputError, TestbedError
from testbed.lifecycle.links import trace_program
from testbed.lifecycle.network import Network
from testbed.lifecycle.session import Prepared, contact_seconds

AGENT_PORT = 9100
GROUND_PORT = 7000
AGENT_HEALTHY_S = 60.0
MIN_RESUME_S = 0.5
"""A restarted satellite with less wall time than this left in the run sends nothing."""


class WorkloadRunError(TestbedError):
    """A node agent or its workload failed (names the node)."""


def _map_nodes(fn: Callable[[str], Any], names: list[str]) -> dict[str, Any]:
    """Run fn on every node in parallel; re-raise the first failure with the node's name."""
    out: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(names)))) as pool:
        futures = {name: pool.submit(fn, name) for name in names}
        for name, fut in futures.items():
            try:
                out[name] = fut.result()
            except (NodeError, TestbedError, OSError) as exc:
                raise WorkloadRunError(f"node {name}: {exc}") from exc
    return out


@dataclass
class DownlinkFiles:
    """Every satellite sends the files of `options.source` to the (first) ground station
    whenever the network gives it a path; the ground station verifies and counts them."""

    prep: Prepared
    net: Network | None = None
    agents: dict[str, str] = field(default_factory=dict)  # node -> mgmt addr
    started_ns: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)  # nodes whose agent was killed, not restarted
    before_kill: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    ground_history: list[dict[str, Any]] = field(default_factory=list)
    """Ground events read just before the ground station was killed (its receiver's memory)."""
    ground_events: list[dict[str, Any]] = field(default_factory=list)  # filled by stop()
    sat_opts: dict[str, Any] = field(default_factory=dict)

    def _options(self) -> dict[str, Any]:
        opts = dict(self.prep.scenario.workload.options)
        if "source" not in opts:
            raise InputError("workload downlink-files needs options.source (a folder of "
                             "files, e.g. ${TESTBED_DATA}/images/rsvqa-lr)",
                             field="workload.options.source")
        opts.pop("relay_over_isl", None)  # relaying is the network's job (routes over ISLs)
        return opts

    def start(self, net: Network) -> None:
        assert net.plan is not None and net.backend is not None
        self.net = net
        plan = net.plan
        ground = [n for n in plan.nodes if n.role == "ground"]
        if not ground:
            raise InputError("workload downlink-files needs a ground station",
                             field="ground_stations")
        for n in plan.nodes:
            self._spawn_agent(n.name)
        _map_nodes(lambda name: client.wait_healthy(self.agents[name], timeout_s=60),
                   list(self.agents))
        opts = self._options()
        wall_s = self.prep.scenario.duration_s / self.prep.scenario.speed
        gs = ground[0]
        client.start_workload(self.agents[gs.name], "downlink-files",
                              {"ground_port": GROUND_PORT})
        self.sat_opts = sat_opts = {**opts, "ground_ip": gs.data_ip,
                                    "ground_port": GROUND_PORT, "duration_s": wall_s}
        sats = [n.name for n in plan.nodes if n.role == "satellite"]
        self.started_ns = time.monotonic_ns()
        _map_nodes(lambda name: client.start_workload(self.agents[name], "downlink-files",
                                                      sat_opts), sats)

    def _spawn_agent(self, name: str) -> None:
        """The node's agent, inside its namespace and cgroup (again after a kill)."""
        assert self.net is not None and self.net.plan is not None
        assert self.net.backend is not None
        n = self.net.plan.node(name)
        argv = [sys.executable, "-m", "nodes.agent", "--name", n.name, "--role", n.role,
                "--mgmt-listen", f"{n.mgmt_ip}:{AGENT_PORT}", "--data-ip", n.data_ip,
                "--results", str(self.prep.run_dir.results)]
        with (self.prep.run_dir.logs / f"agent-{n.name}.log").open("ab") as log:
            self.procs[name] = self.net.backend.spawn(n.name, argv, stdout=log, stderr=log)
        self.agents[name] = f"{n.mgmt_ip}:{AGENT_PORT}"

    # --- faults (testbed.lifecycle.faults.FaultWorkload) ------------------------------------------

    def _ground(self) -> str:
        assert self.net is not None and self.net.plan is not None
        return next(n.name for n in self.net.plan.nodes if n.role == "ground")

    def snapshot(self, node: str) -> dict[str, Any] | None:
        """The node's results just before a kill (the ground's with its events: its receiver
        keeps them only in memory); None when its agent does not answer."""
        if node not in self.agents or node in self.down:
            return None
        is_ground = node == self._ground()
        try:
            res = client.results(self.agents[node], events=is_ground, timeout_s=2.0)
        except NodeError:
            return None
        if is_ground:
            self.ground_history.extend(res.pop("events", []) or [])  # type: ignore[arg-type]
        summary = dict(res.get("summary") or {})  # type: ignore[call-overload]
        summary.pop("senders", None)  # the ground's per-sender tallies: in ground_history
        self.before_kill.setdefault(node, []).append(summary)
        return summary

    def agent_killed(self, node: str) -> None:
        """Its processes were SIGKILLed: reap the agent; stop() no longer asks it."""
        self.down.add(node)
        proc = self.procs.get(node)
        if proc is not None:
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                raise WorkloadRunError(f"node {node}: agent pid {proc.pid} still runs 5 s "
                                       "after SIGKILL") from None

    def _received_files(self, sender: str) -> set[str]:
        """File names the ground station verified from `sender` so far."""
        events = list(self.ground_history)
        res = client.results(self.agents[self._ground()], events=True, timeout_s=10.0)
        events += res.get("events") or []  # type: ignore[operator]
        return {e["file"] for e in events
                if e.get("peer") == sender and e.get("status") == "received"}

    def restart(self, node: str) -> dict[str, Any]:
        """Start the node's agent again in its namespace and cgroup and resume its part: the
        ground station listens again; a satellite sends the files the ground has not verified
        yet (with `loops` other than 1 it starts its list over; the ground counts repeated
        transfers once), until the run's end."""
        try:
            return self._restart(node)
        except NodeError as exc:
            raise WorkloadRunError(f"node {node}: restarting its agent: {exc}") from exc

    def _restart(self, node: str) -> dict[str, Any]:
        self._spawn_agent(node)
        self.restarts[node] = self.restarts.get(node, 0) + 1
        client.wait_healthy(self.agents[node], timeout_s=AGENT_HEALTHY_S)
        self.down.discard(node)
        out: dict[str, Any] = {"agent_pid": self.procs[node].pid}
        if node == self._ground():
            client.start_workload(self.agents[node], "downlink-files",
                                  {"ground_port": GROUND_PORT})
            out["workload"] = "receiver started"
            return out
        wall_s = self.prep.scenario.duration_s / self.prep.scenario.speed
        left_s = wall_s - (time.monotonic_ns() - self.started_ns) / 1e9
        if left_s < MIN_RESUME_S:
            out["workload"] = "not resumed: the run is over"
            return out
        opts = {**self.sat_opts, "duration_s": left_s}
        if int(opts.get("loops", 1)) == 1 and "/" not in str(opts.get("pattern", "")):
            files = list_files(Path(str(opts["source"])), str(opts.get("pattern", "*.png")))
            done = self._received_files(node)
            todo = [f for f in files if f.name not in done]
            out["files_resumed"], out["files_already_delivered"] = len(todo), len(files) - len(todo)
            if not todo:
                out["workload"] = "not resumed: every file was delivered"
                return out
            folder = self.prep.run_dir.results / "resume" / f"{node}-{self.restarts[node]}"
            folder.mkdir(parents=True, exist_ok=True)
            for f in todo:
                (folder / f.name).symlink_to(f.resolve())
            opts["source"] = str(folder)
        client.start_workload(self.agents[node], "downlink-files", opts)
        out["workload"] = "resumed"
        return out

    def fault_losses(self, node: str | None, t0_ns: int, t1_ns: int) -> dict[str, Any]:
        """What the workload lost to a fault over [t0_ns, t1_ns] (monotonic), for `node` (a
        killed satellite) or every sender (a cut link), from the ground's events (call after
        stop()):

        transfers_interrupted / bytes_discarded: files whose connection broke during the
        fault and the partial bytes the ground threw away; files_resent / bytes_resent: those
        of them delivered later (resent whole) plus copies sent again because their ack was
        lost; for a node also the gap between its last delivery before and its first after the
        fault, and what it had not delivered by the end of the run. A killed ground station
        counts as a fault of every sender."""
        if node == self._ground():
            node = None
        return fault_losses(self.ground_events, node, t0_ns, t1_ns, self._planned(node))

    def _planned(self, node: str | None) -> list[tuple[str, int]] | None:
        if node is None or node == self._ground() or int(self.sat_opts.get("loops", 1)) != 1:
            return None
        try:
            files = list_files(Path(str(self.sat_opts["source"])),
                               str(self.sat_opts.get("pattern", "*.png")))
        except NodeError:
            return None
        return [(f.name, f.stat().st_size) for f in files]

    def stop(self) -> dict[str, Any]:
        if not self.agents or self.net is None or self.net.plan is None:
            return {}
        try:
            return self._stop()
        finally:
            self._end_agents()

    def _end_agents(self) -> None:
        """SIGTERM every agent (each writes `<results>/<node>.json`) and reap it."""
        procs = [p for p in self.procs.values() if p.poll() is None]
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)

    def _stop(self) -> dict[str, Any]:
        assert self.net is not None and self.net.plan is not None
        plan = self.net.plan
        sats = [n.name for n in plan.nodes if n.role == "satellite"]
        ground = [n.name for n in plan.nodes if n.role == "ground"]
        live = [name for name in sats if name not in self.down]
        sat_results = _map_nodes(lambda name: client.stop_workload(self.agents[name]), live)
        gs_results = {g: client.stop_workload(self.agents[g]) for g in ground
                      if g not in self.down}
        if ground[0] in gs_results:
            events = client.results(self.agents[ground[0]], events=True).get("events") or []
        else:
            events = []
        self.ground_events = [*self.ground_history, *events]  # type: ignore[list-item]
        received = gs_results.get(ground[0], {}).get("summary", {}).get("senders", {})
        if self.ground_history:  # the ground restarted: count over both receivers
            received = sender_tallies(self.ground_events)
        speed = self.prep.scenario.speed
        capacity_bps = self._downlink_capacity_bps()
        contact = {sat: s / speed for sat, s in contact_seconds(
            self.prep.timeline, int(self.prep.scenario.duration_s * 1e9)).items()}
        per_sat: dict[str, Any] = {}
        for name in sats:
            tally = received.get(name, {})
            nbytes = int(tally.get("bytes_received", 0))
            wall = contact.get(name, 0.0)
            per_sat[name] = {
                "files": int(tally.get("files_received", 0)),
                "bytes": nbytes,
                "goodput_mbps": (nbytes * 8 / wall / 1e6) if wall > 0 else 0.0,
                "capacity_mbps": capacity_bps / 1e6,
                "sender": sat_results.get(name, {}).get("summary", {}),
            }
            if name in self.down:
                per_sat[name]["agent"] = "killed"
            if name in self.before_kill:
                per_sat[name]["sender_before_kill"] = self.before_kill[name]
        return {"kind": "downlink-files", "per_satellite": per_sat,
                "ground": {g: r.get("summary", {}) for g, r in gs_results.items()},
                "note": "goodput = bytes delivered / wall-clock contact time of the "
                        "satellite's own ground link (relayed traffic counts for the sender)"}

    def _downlink_capacity_bps(self) -> float:
        """Programmed mean downlink capacity: the trace's, or the constant rate."""
        spec = self.prep.scenario.links.ground.downlink
        program = trace_program(spec, "downlink")
        if program is not None and program.opportunities_ns is not None:
            return float(program.capacity_bps)
        return float(spec.rate_mbps * 1e6) if spec.rate_mbps else float("nan")


def sender_tallies(events: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """files/bytes received per sender from ground events, each transfer counted once (the
    events of two receivers when the ground station was restarted)."""
    seen: set[tuple[str, str]] = set()
    out: dict[str, dict[str, int]] = {}
    for e in events:
        if e.get("status") != "received" or (e["peer"], e["transfer_id"]) in seen:
            continue
        seen.add((e["peer"], e["transfer_id"]))
        tally = out.setdefault(e["peer"], {"files_received": 0, "bytes_received": 0})
        tally["files_received"] += 1
        tally["bytes_received"] += int(e["size_bytes"])
    return out


def fault_losses(events: list[dict[str, Any]], node: str | None, t0_ns: int, t1_ns: int,
                 planned: list[tuple[str, int]] | None = None) -> dict[str, Any]:
    """See DownlinkFiles.fault_losses; `planned`: (file, size) a killed sender had to send."""
    mine = [e for e in events if node is None or e.get("peer") == node]

    def interrupted(e: dict[str, Any]) -> bool:
        if e["status"] != "incomplete" or not (e["start_ns"] < t1_ns and e["end_ns"] >= t0_ns):
            return False
        # cut by the run's end: counts only when it was under way when the fault began
        return not str(e.get("error", "")).startswith("receiver stopped") or \
            e["start_ns"] < t0_ns

    def key(e: dict[str, Any]) -> tuple[str, str]:
        return e["peer"], e["transfer_id"]

    cut = [e for e in mine if interrupted(e)]
    received: dict[tuple[str, str], dict[str, Any]] = {}  # the first verified copy
    for e in sorted(mine, key=lambda e: e["end_ns"]):
        if e["status"] == "received":
            received.setdefault(key(e), e)
    resent = [e for e in cut if key(e) in received and received[key(e)]["end_ns"] > e["end_ns"]]
    resent_ids = {key(e) for e in resent}
    # verified again (a duplicate, or counted anew by a restarted ground station): its ack
    # was lost in the fault
    lost_acks = [e for e in mine if e["status"] in ("duplicate", "received")
                 and e["start_ns"] >= t0_ns and key(e) in received
                 and received[key(e)] is not e and received[key(e)]["end_ns"] < t1_ns
                 and key(e) not in resent_ids]
    out: dict[str, Any] = {
        "transfers_interrupted": len(cut),
        "bytes_discarded": sum(int(e["bytes"]) for e in cut),
        "interrupted": sorted({f"{e['peer']}:{e['file']}" for e in cut}),
        "files_resent": len(resent) + len(lost_acks),
        "bytes_resent": sum(int(e["size_bytes"]) for e in resent + lost_acks),
        "senders_affected": sorted({e["peer"] for e in cut + lost_acks}),
    }
    if node is not None:
        ends = sorted(e["end_ns"] for e in received.values())
        before = [t for t in ends if t < t0_ns]
        after = [t for t in ends if t >= t1_ns]
        out["files_delivered_before"] = len(before)
        out["files_delivered_after"] = len(after)
        out["delivery_gap_s"] = (round((after[0] - before[-1]) / 1e9, 3)
                                 if before and after else None)
        if planned is not None:
            got = {e["file"] for e in received.values()}
            missing = [(f, size) for f, size in planned if f not in got]
            out["files_not_delivered_by_end"] = len(missing)
            out["bytes_not_delivered_by_end"] = sum(size for _, size in missing)
    return out


WORKLOADS: dict[str, Callable[[Prepared], Any]] = {"downlink-files": DownlinkFiles}


def workload_for(prep: Prepared) -> Any:
    """The orchestrator side of the scenario's workload; error lists the valid kinds."""
    kind = prep.scenario.workload.kind
    try:
        return WORKLOADS[kind](prep)
    except KeyError:
        raise InputError(f"unknown workload kind '{kind}'; choose: none, "
                         + ", ".join(sorted(WORKLOADS)), field="workload.kind") from None
