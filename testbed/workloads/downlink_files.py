"""downlink-files, orchestrator side: every satellite sends a folder of files to a ground
station whenever the network gives it a path; every ground station verifies and counts them.

Receivers run on every ground station; a satellite sends to its `ground` option (default: the
first station), so a second station never breaks the run (with one station's data path, the
other stations receive nothing and say so). After `testbed fault kill-node` the workload starts
the node's agent again and resumes its part, and reports per fault what the workload lost, from
the ground station's per-file events. Goodput is reported over the time the satellite's
transfers were active, with what limited the delivery.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nodes import client
from nodes.errors import NodeError
from nodes.workloads.downlink_files import list_files
from testbed.errors import InputError, TestbedError
from testbed.lifecycle.session import contact_seconds
from testbed.workloads.base import OrchestratorWorkload
from testbed.workloads.pool import map_nodes

GROUND_PORT = 7000
MIN_RESUME_S = 0.5
"""A restarted satellite with less wall time than this left in the run sends nothing."""
ACTIVE_CONTACT_SHARE = 0.9
"""Transfers active for this share of the contact time or more: the contact limited delivery."""


class WorkloadRunError(TestbedError):
    """A node agent or its workload failed (names the node)."""


class DownlinkFiles(OrchestratorWorkload):
    """Every satellite sends the files of `options.source` to a ground station whenever the
    network gives it a path; the ground stations verify and count them."""

    kind = "downlink-files"

    def __init__(self, prep: Any) -> None:
        super().__init__(prep)
        self.started_ns = 0
        self.down: set[str] = set()  # nodes whose agent was killed, not restarted
        self.before_kill: dict[str, list[dict[str, Any]]] = {}
        self.restarts: dict[str, int] = {}
        self.ground_history: list[dict[str, Any]] = []
        """Ground events read just before the ground station was killed (its receiver's
        memory)."""
        self.ground_events: list[dict[str, Any]] = []  # filled by stop()
        self.sat_opts: dict[str, Any] = {}
        self.jobs: dict[str, str] = {}  # node -> job id
        self.station: str | None = None
        self._options()  # bad options fail before anything is created

    def addr(self, node: str) -> str:
        assert self.pool is not None
        return self.pool.addr(node)

    @property
    def token(self) -> str | None:
        return self.pool.token if self.pool is not None else None

    def _options(self) -> dict[str, Any]:
        opts = dict(self.prep.scenario.workload.options)
        if "source" not in opts:
            raise InputError("workload downlink-files needs options.source (a folder of "
                             "files, e.g. ${TESTBED_DATA}/images/rsvqa-lr)",
                             field="workload.options.source")
        opts.pop("ground", None)
        return opts

    def _station(self) -> str:
        """The ground station satellites send to: `options.ground`, default the first."""
        stations = [gs.name for gs in self.prep.scenario.ground_stations]
        wanted = self.prep.scenario.workload.options.get("ground")
        if wanted is None:
            if not stations:
                raise InputError("workload downlink-files needs a ground station",
                                 field="ground_stations")
            return stations[0]
        if wanted not in stations:
            raise InputError(f"options.ground={wanted!r} is not a ground station; choose: "
                             + ", ".join(stations), field="workload.options.ground")
        return str(wanted)

    def _submit(self, node: str, options: dict[str, Any]) -> None:
        assert self.pool is not None
        reply = self.pool.submit(node, self.kind, options)
        self.jobs[node] = str(reply["id"])

    def _start(self) -> None:
        plan = self.net.plan
        ground = [n.name for n in plan.nodes if n.role == "ground"]
        self.station = gs = self._station()
        assert self.pool is not None
        self.pool.ensure([n.name for n in plan.nodes])
        map_nodes(lambda name: self._submit(name, {"ground_port": GROUND_PORT}), ground)
        opts = self._options()
        wall_s = self.prep.scenario.duration_s / self.prep.scenario.speed
        self.sat_opts = sat_opts = {**opts, "ground_ip": plan.node(gs).data_ip,
                                    "ground_port": GROUND_PORT, "duration_s": wall_s}
        sats = [n.name for n in plan.nodes if n.role == "satellite"]
        self.started_ns = time.monotonic_ns()
        map_nodes(lambda name: self._submit(name, sat_opts), sats)

    # --- faults (testbed.lifecycle.faults.FaultWorkload) ------------------------------------------

    def _ground(self) -> str:
        return self.station or self._station()

    def snapshot(self, node: str) -> dict[str, Any] | None:
        """The node's results just before a kill (the ground's with its events: its receiver
        keeps them only in memory); None when its agent does not answer."""
        if node not in self.jobs or node in self.down:
            return None
        is_ground = node == self._ground()
        try:
            res = client.job_results(self.addr(node), self.jobs[node], events=is_ground,
                                     timeout_s=2.0, token=self.token)
        except NodeError:
            return None
        if is_ground:
            self.ground_history.extend(res.pop("events", []) or [])  # type: ignore[arg-type]
        summary = dict(res.get("summary") or {})  # type: ignore[call-overload]
        summary.pop("senders", None)  # the ground's per-sender tallies: in ground_history
        self.before_kill.setdefault(node, []).append(summary)
        return summary

    def agent_killed(self, node: str) -> None:
        """Its processes were killed with the node: stop() no longer asks it."""
        self.down.add(node)
        super().agent_killed(node)

    def _received_files(self, sender: str) -> set[str]:
        """File names the ground station verified from `sender` so far."""
        events = list(self.ground_history)
        gs = self._ground()
        res = client.job_results(self.addr(gs), self.jobs[gs], events=True, timeout_s=10.0,
                                 token=self.token)
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
        assert self.pool is not None
        self.pool.ensure([node])
        self.restarts[node] = self.restarts.get(node, 0) + 1
        self.down.discard(node)
        out: dict[str, Any] = {"agent_pid": self.pool.procs[node].pid}
        if self.net.plan.node(node).role == "ground":
            self._submit(node, {"ground_port": GROUND_PORT})
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
        self._submit(node, opts)
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
        if node is None or node == self._ground():
            return None
        return self._planned_files()

    def _planned_files(self) -> list[tuple[str, int]] | None:
        """(name, size) of every file one satellite sends once (None with `loops` != 1 or an
        unreadable source)."""
        if int(self.sat_opts.get("loops", 1)) != 1:
            return None
        try:
            files = list_files(Path(str(self.sat_opts["source"])),
                               str(self.sat_opts.get("pattern", "*.png")))
        except (NodeError, KeyError):
            return None
        return [(f.name, f.stat().st_size) for f in files]

    def stop(self) -> dict[str, Any]:
        if not self.jobs or self.net is None:
            return {}
        return self._stop()

    def _stop_job(self, node: str) -> dict[str, Any]:
        """Stop the node's job (a satellite's may have ended by itself) and read its results
        without events."""
        addr, job_id = self.addr(node), self.jobs[node]
        try:
            client.cancel_job(addr, job_id, token=self.token)
        except client.AgentApiError as exc:
            if exc.status != 409:  # 409: it had ended already
                raise
        return client.job_results(addr, job_id, events=False, token=self.token)

    def _stop(self) -> dict[str, Any]:
        plan = self.net.plan
        sats = [n.name for n in plan.nodes if n.role == "satellite"]
        ground = [n.name for n in plan.nodes if n.role == "ground"]
        gs = self._ground()
        live = [name for name in sats if name not in self.down and name in self.jobs]
        sat_results = map_nodes(self._stop_job, live)
        gs_results = map_nodes(self._stop_job,
                               [g for g in ground if g not in self.down and g in self.jobs])
        if gs in gs_results:
            events = client.job_results(self.addr(gs), self.jobs[gs], events=True,
                                        token=self.token).get("events") or []
        else:
            events = []
        self.ground_events = [*self.ground_history, *events]  # type: ignore[list-item]
        received = sender_tallies(self.ground_events)
        capacity_bps = self._downlink_capacity_bps()
        files = self._planned_files()
        planned = len(files) if files is not None else None
        speed = self.prep.scenario.speed
        contact = {sat: s / speed for sat, s in contact_seconds(
            self.prep.timeline, int(self.prep.scenario.duration_s * 1e9)).items()}
        active = active_seconds(self.ground_events)
        per_sat: dict[str, Any] = {}
        for name in sats:
            tally = received.get(name, {})
            nbytes = int(tally.get("bytes_received", 0))
            files = int(tally.get("files_received", 0))
            active_s = active.get(name, 0.0)
            contact_s = contact.get(name, 0.0)
            per_sat[name] = {
                "files": files,
                "bytes": nbytes,
                "active_s": round(active_s, 3),
                "contact_wall_s": round(contact_s, 3),
                "goodput_mbps": (nbytes * 8 / active_s / 1e6) if active_s > 0 else 0.0,
                "capacity_mbps": capacity_bps / 1e6,
                "limited_by": limited_by(files, planned, active_s, contact_s),
                "sender": sat_results.get(name, {}).get("summary", {}),
            }
            if name in self.down:
                per_sat[name]["agent"] = "killed"
            if name in self.before_kill:
                per_sat[name]["sender_before_kill"] = self.before_kill[name]
        return {"kind": self.kind, "station": gs, "per_satellite": per_sat,
                "ground": {g: r.get("summary", {}) for g, r in gs_results.items()},
                "note": "goodput = bytes delivered / time the satellite's transfers were "
                        "active (first byte to last ack, overlapping transfers counted once); "
                        f"satellites send to {gs}"}

    def _downlink_capacity_bps(self) -> float:
        """Programmed mean downlink capacity: the trace's (as the network plays it), or the
        constant rate."""
        program = self.net.ground_programs.get("downlink") if self.net is not None else None
        if program is not None and program.opportunities_ns is not None:
            return float(program.capacity_bps)
        rate_mbps = self.prep.scenario.links.ground.downlink.rate_mbps
        return float(rate_mbps * 1e6) if rate_mbps else float("nan")


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


def active_seconds(events: list[dict[str, Any]]) -> dict[str, float]:
    """Per sender, seconds during which at least one of its transfers was under way (the union
    of [start_ns, end_ns] of its received files)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for e in events:
        if e.get("status") == "received" and "start_ns" in e and "end_ns" in e:
            spans.setdefault(str(e["peer"]), []).append((int(e["start_ns"]), int(e["end_ns"])))
    out: dict[str, float] = {}
    for peer, intervals in spans.items():
        total, cur_start, cur_end = 0, None, None
        for a, b in sorted(intervals):
            if cur_end is None or a > cur_end:
                if cur_end is not None:
                    total += cur_end - cur_start  # type: ignore[operator]
                cur_start, cur_end = a, b
            else:
                cur_end = max(cur_end, b)
        if cur_end is not None:
            total += cur_end - cur_start  # type: ignore[operator]
        out[peer] = total / 1e9
    return out


def limited_by(files: int, planned: int | None, active_s: float, contact_s: float) -> str:
    """Why a satellite delivered what it did: it ran out of files, its contacts ended, or the
    link was the bottleneck while it had both."""
    if planned is not None and files >= planned:
        return f"files: all {planned} delivered"
    if contact_s <= 0:
        return "contact: no ground contact"
    if active_s >= ACTIVE_CONTACT_SHARE * contact_s:
        return "contact time: transfers ran for the whole contact"
    return "link or route: transfers were active for part of the contact only"
