"""Fault injection into a running network, and what each fault cost.

Owns the fault records of a run (the list `hold()` reports as `Held.faults`), holding faulted
links down against the timeline, killing a node's processes, and the timers that end a fault
(`cut-link --for`, `kill-node --restart-after`). It does not own links or routes (`Network`
changes them) nor the node agents (the workload restarts them; see `FaultWorkload`).

Each fault gets one record, filled in place: when it starts (`at_utc`, `at_scenario_s`), and
once it is over, `lost`: the seconds the link or node was unreachable, the frames the shaper
dropped on the affected directions meanwhile (deltas of `Network.counters()`), the frames
still queued there at the end, and (at the end of the run, when the ground station's events
are known) what the workload lost. Recovery steps get records of their own (`restore-link`,
`restart-node`) that name the fault they end (`of`).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from testbed.errors import TestbedError
from testbed.lifecycle.links import direction_keys
from testbed.lifecycle.network import Network
from testbed.timeline.model import LinkEvent

FAULT_OPS = ("cut-link", "kill-node", "restart-controller")
DROP_KEYS = ("dropped_queue", "dropped_loss", "dropped_tx", "rx_kernel_drops")
"""How long a SIGKILLed process may take to disappear before the kill counts as failed."""
RESTORE_JOIN_S = 90.0
"""How long closing waits for a restore already under way (agent start, route install)."""


class FaultError(TestbedError):
    """A fault could not be injected or undone (names the node or link)."""


class FaultWorkload(Protocol):
    """What the injector needs from a workload (testbed.lifecycle.workload.DownlinkFiles)."""

    def snapshot(self, node: str) -> dict[str, Any] | None:
        """The node's own results just before it is killed (None: no agent answered)."""

    def agent_killed(self, node: str) -> None:
        """The node's processes were SIGKILLed: reap them, stop talking to its agent."""

    def restart(self, node: str) -> dict[str, Any]:
        """Start the node's agent again and resume its workload; returns agent_pid etc."""

    def fault_losses(self, node: str | None, t0_ns: int, t1_ns: int) -> dict[str, Any]:
        """What the workload lost in [t0_ns, t1_ns] (monotonic), for `node` or all senders."""


def shaper_delta(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]],
                 directions: Sequence[str] | None = None) -> dict[str, int]:
    """Frames the shaper dropped between two `counters()` readings, summed over `directions`
    (all when None), plus the frames still queued or on the line at the second reading."""
    keys = list(after) if directions is None else [d for d in directions if d in after]
    out = {k: 0 for k in (*DROP_KEYS, "received_packets", "forwarded_packets")}
    queued = 0
    for d in keys:
        b, a = before.get(d, {}), after[d]
        for k in out:
            out[k] += max(0, int(a.get(k, 0)) - int(b.get(k, 0)))
        queued += int(a.get("queued_packets", 0)) + int(a.get("in_flight_packets", 0))
    out["dropped_total"] = sum(out[k] for k in DROP_KEYS)
    out["queued_at_end"] = queued
    out["directions"] = len(keys)
    return out


@dataclass
class _Open:
    """A fault not over yet: its record, the links it holds down, the counters at its start."""

    record: dict[str, Any]
    links: list[str]
    directions: list[str]
    before: dict[str, dict[str, Any]]
    t0_ns: int
    node: str | None = None
    t1_ns: int | None = None
    timer: threading.Thread | None = None


@dataclass
class FaultInjector:
    """Injects faults into `net` and records them in `log` (shared with the run's summary).

    Use `apply_events` in place of `Network.apply_events` for the run clock, so a link a fault
    holds down stays down when the timeline raises it (its delay and rate still follow the
    timeline); when the fault ends the link returns to the timeline's current state.

    Example:
        faults = FaultInjector(net, held.faults, workload=load)
        clock = RunClock(events, faults.apply_events, ...)
        faults.handle({"op": "kill-node", "name": "sat3", "restart_after_s": 5})
        ...; faults.close(); load.stop(); faults.finish()
    """

    net: Network
    log: list[dict[str, Any]]
    workload: FaultWorkload | None = None
    on_fault: Callable[[dict[str, Any]], None] | None = None
    """Told every fault and recovery record as it is made (the run's observers)."""
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _held: dict[str, int] = field(default_factory=dict)  # link -> faults holding it down
    _timeline_up: dict[str, bool] = field(default_factory=dict)
    _open: list[_Open] = field(default_factory=list)
    _closed: list[_Open] = field(default_factory=list)
    _closing: threading.Event = field(default_factory=threading.Event)
    _killed: set[str] = field(default_factory=set)

    # --- the clock's side -----------------------------------------------------------------------

    def apply_events(self, events: Sequence[LinkEvent], scheduled_ns: int | None = None
                     ) -> dict[str, int]:
        """`Network.apply_events`, but an `up` of a link held down by a fault only updates its
        values (it comes up when the fault ends, if the timeline still has it up)."""
        with self._lock:
            out = []
            for e in events:
                if e.kind in ("up", "down"):
                    self._timeline_up[e.link] = e.kind == "up"
                if e.kind == "up" and self._held.get(e.link):
                    e = replace(e, kind="update")
                out.append(e)
            return self.net.apply_events(out, scheduled_ns=scheduled_ns)

    # --- control requests -----------------------------------------------------------------------

    def handle(self, req: Mapping[str, Any]) -> dict[str, Any]:
        """One `testbed fault ...` request; returns the fault's record (as it stands now)."""
        op = req.get("op")
        if op == "cut-link":
            return self.cut_link(str(req["a"]), str(req["b"]), for_s=req.get("for_s"))
        if op == "kill-node":
            return self.kill_node(str(req["name"]), restart_after_s=req.get("restart_after_s"))
        if op == "restart-controller":
            return self.restart_controller()
        raise FaultError(f"unknown fault {op!r}; choose: {', '.join(FAULT_OPS)}")

    def _now(self) -> tuple[int, dict[str, Any]]:
        t_ns = time.monotonic_ns()
        start = self.net.start_ns or t_ns
        return t_ns, {"at_utc": time.time(), "at_scenario_s":
                      round(max(0, t_ns - start) * self.net.scenario.speed / 1e9, 3)}

    def _record(self, fault: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            rec = {"id": next(self._ids), "fault": fault, **fields}
            self.log.append(rec)
        if self.on_fault is not None:
            self.on_fault(rec)
        return rec

    def _hold(self, links: Sequence[str]) -> None:
        with self._lock:
            for name in links:
                self._held[name] = self._held.get(name, 0) + 1

    def _release(self, links: Sequence[str]) -> list[str]:
        """Stop holding `links`; returns those no fault holds any more that the timeline has up."""
        with self._lock:
            free = []
            for name in links:
                self._held[name] -= 1
                if self._held[name] <= 0:
                    del self._held[name]
                    if self._timeline_up.get(name, False):
                        free.append(name)
            return free

    def _counters(self) -> dict[str, dict[str, Any]]:
        return self.net.counters()  # type: ignore[return-value]

    def link_name(self, a: str, b: str) -> str:
        assert self.net.book is not None
        for name in (f"{a}--{b}", f"{b}--{a}"):
            if name in self.net.book.records:
                return name
        raise FaultError(f"no link between {a!r} and {b!r} in this run")

    def _directions(self, links: Sequence[str]) -> list[str]:
        assert self.net.book is not None
        return [d for name in links for d in direction_keys(self.net.book.records[name].link)]

    def _schedule(self, fault: _Open, after_s: float, end: Any) -> None:
        def wait_then_end() -> None:
            if self._closing.wait(after_s):
                return  # the run ends first: close() ends the fault
            try:
                end(fault)
            except (TestbedError, OSError) as exc:  # no caller on this thread: on the record
                with self._lock:
                    fault.record["recovery_error"] = f"{type(exc).__name__}: {exc}"

        fault.timer = threading.Thread(target=wait_then_end, name=f"fault-{fault.record['id']}",
                                       daemon=True)
        fault.timer.start()

    def cut_link(self, a: str, b: str, *, for_s: float | None = None) -> dict[str, Any]:
        """Take the link between a and b down at once (routes go around it); restore it to the
        timeline's state after `for_s` wall seconds (never when None)."""
        if for_s is not None and not float(for_s) > 0:
            raise FaultError(f"cut-link {a} {b}: for_s={for_s}, expected > 0")
        name = self.link_name(a, b)
        before = self._counters()
        t0_ns, when = self._now()
        self._hold([name])
        self.net.cut_link(name, up=False)
        rec = self._record("cut-link", link=name, for_s=for_s, **when, lost=None)
        fault = _Open(rec, [name], self._directions([name]), before, t0_ns)
        with self._lock:
            self._open.append(fault)
        if for_s:
            self._schedule(fault, float(for_s), self._restore_link)
        return dict(rec)

    def _restore_link(self, fault: _Open) -> None:
        name = fault.links[0]
        self._end(fault)
        with self._lock:
            up = self._release([name])
            if up:
                self.net.set_links(up, up=True)
        self.net.reroute(label=f"fault: restore {name}")
        self._recovered(fault)
        _, when = self._now()
        self._append({"fault": "restore-link", "of": fault.record["id"], "link": name,
                      "up": bool(up), **when})

    def kill_node(self, name: str, *, restart_after_s: float | None = None) -> dict[str, Any]:
        """SIGKILL everything in the node's namespace and cgroup, take its links down and route
        around it; after `restart_after_s` wall seconds (default: the scenario's
        `nodes.<role>.restart_after_s`; never when neither is set) bring it back."""
        assert self.net.plan is not None
        node = self.net.plan.node(name)  # raises for unknown names, listing valid ones
        if name in self._killed:
            raise FaultError(f"kill-node {name}: the node is already down")
        if restart_after_s is None:
            role = self.net.scenario.nodes.satellite if node.role == "satellite" else \
                self.net.scenario.nodes.ground
            restart_after_s = role.restart_after_s
        if restart_after_s is not None and not float(restart_after_s) > 0:
            raise FaultError(f"kill-node {name}: restart_after_s={restart_after_s}, expected > 0")
        links = self.net.node_links(name)
        snapshot = self.workload.snapshot(name) if self.workload is not None else None
        before = self._counters()
        t0_ns, when = self._now()
        self._hold(links)
        self.net.set_links(links, up=False)  # the node falls silent at once; routes follow
        killed = self.net.backend_of(name).kill(name)
        pids, sockets = killed.pids_killed, killed.sockets_destroyed
        problems = list(killed.problems)
        self._killed.add(name)
        if self.workload is not None:
            self.workload.agent_killed(name)
        self.net.kill_node(name)
        rec = self._record("kill-node", node=name, restart_after_s=restart_after_s,
                           pids_killed=pids, sockets_destroyed=sockets, links=links, **when,
                           before_kill=snapshot, lost=None)
        fault = _Open(rec, links, self._directions(links), before, t0_ns, node=name)
        with self._lock:
            self._open.append(fault)
        if restart_after_s:
            self._schedule(fault, float(restart_after_s), self._restart_node)
        if problems:
            rec["problems"] = problems
            raise FaultError(f"kill-node {name}: " + "; ".join(problems) +
                             " (its links are down and routes avoid it)")
        return dict(rec)

    def _restart_node(self, fault: _Open) -> None:
        name = fault.node
        assert name is not None
        self._end(fault)
        with self._lock:
            up = self._release(fault.links)
            if up:
                self.net.set_links(up, up=True)
        self.net.revive_node(name)
        self._recovered(fault)
        self._killed.discard(name)
        t0 = time.monotonic()
        entry: dict[str, Any] = {"fault": "restart-node", "of": fault.record["id"], "node": name,
                                 "links_up": up}
        if self.workload is not None:
            try:
                entry.update(self.workload.restart(name))
            except (TestbedError, OSError) as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["agent_restart_s"] = round(time.monotonic() - t0, 3)
        self._append({**entry, **self._now()[1]})

    def restart_controller(self) -> dict[str, Any]:
        """Kill and restart the SDN controller; the record gives how long flows took to resync
        and what the shaper dropped network-wide meanwhile."""
        before = self._counters()
        t0_ns, when = self._now()
        resync_s = self.net.restart_controller()
        rec = self._record("restart-controller", resync_s=resync_s, **when, lost=None)
        fault = _Open(rec, [], [], before, t0_ns)
        self._end(fault, all_directions=True)
        return dict(rec)

    def _append(self, rec: dict[str, Any]) -> None:
        with self._lock:
            self.log.append(rec)
        if self.on_fault is not None:
            self.on_fault(rec)

    def _recovered(self, fault: _Open) -> None:
        """Routes through the restored links are in effect: the outage ends here."""
        fault.t1_ns = time.monotonic_ns()
        lost = fault.record["lost"]
        lost["unreachable_s"] = round((fault.t1_ns - fault.t0_ns) / 1e9, 3)

    def _end(self, fault: _Open, *, all_directions: bool = False, run_end: bool = False) -> None:
        """The fault is over: what the shaper lost on its directions goes into its record
        (read before the links come back, so frames still queued are counted)."""
        after = self._counters()
        fault.t1_ns = time.monotonic_ns()
        lost = {"unreachable_s": round((fault.t1_ns - fault.t0_ns) / 1e9, 3),
                "ended": "run end" if run_end else "recovered",
                "shaper": shaper_delta(fault.before, after,
                                       None if all_directions else fault.directions)}
        if fault.record["fault"] == "restart-controller":
            lost["unreachable_s"] = None  # nothing was cut; see resync_s
        with self._lock:
            fault.record["lost"] = lost
            if fault in self._open:
                self._open.remove(fault)
            self._closed.append(fault)

    # --- end of the run -------------------------------------------------------------------------

    def close(self) -> None:
        """Cancel pending restores (a restore under way finishes first); faults still open
        end now. Call before the workload stops and before the network goes."""
        self._closing.set()
        with self._lock:
            timers = [f.timer for f in self._open + self._closed if f.timer is not None]
        for t in timers:
            if t is not threading.current_thread():
                t.join(RESTORE_JOIN_S)
        with self._lock:
            still = list(self._open)
        for fault in still:
            try:
                self._end(fault, run_end=True)
            except (TestbedError, OSError) as exc:
                fault.record["lost"] = {"error": f"{type(exc).__name__}: {exc}"}

    def finish(self) -> list[dict[str, Any]]:
        """After the workload stopped: each fault's workload losses go into its record."""
        if self.workload is None:
            return self.log
        for fault in self._closed:
            lost = fault.record.get("lost")
            if not isinstance(lost, dict) or fault.t1_ns is None or "shaper" not in lost:
                continue
            try:
                lost["workload"] = self.workload.fault_losses(fault.node, fault.t0_ns,
                                                              fault.t1_ns)
            except (TestbedError, OSError) as exc:
                lost["workload"] = {"error": f"{type(exc).__name__}: {exc}"}
        return self.log
