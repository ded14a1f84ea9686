"""Fault recovery on a live network with the downlink workload: real namespaces, OVS, os-ken,
userspace shapers and node agents sending real images to the ground station.

Each test runs `hold()` in the main thread and injects faults beside it through the run's
control socket, as `testbed fault ...` does.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controller.model import RouteTable
from nodes import client
from nodes.errors import NodeError
from testbed.cli.lifecycle_cmd import fault_line
from testbed.cli.main import main
from testbed.lifecycle.control import request
from testbed.lifecycle.faults import DROP_KEYS, shaper_delta
from testbed.lifecycle.session import Prepared, hold, prepare, summarize
from testbed.sysrun import process_state
from testbed.workloads.downlink_files import fault_losses, sender_tallies
from testbed.workloads.pool import AGENT_PORT, read_token
from testbed.workloads.registry import workload_for

from .conftest import wait_until

DOWNLINK_MBPS = 10
"""Low enough that 27 satellites sending ~4.5 MB each keep the downlink busy for the whole run,
so the victim is sending when it is killed and still has files left after its restart."""
RESTART_AFTER_S = 4.0
CUT_FOR_S = 3.0


def _scenario(small_scenario, source: Path, duration_s: float) -> Path:
    path = small_scenario(duration=duration_s, speed=1.0)
    text = path.read_text().replace("downlink: {rate_mbps: 50", f"downlink: {{rate_mbps: "
                                                                  f"{DOWNLINK_MBPS}")
    # the scenario's default restart delay; the tests' kill-node --restart-after overrides it
    text = text.replace("nodes: {agents: on-demand}", "nodes: {agents: on-demand, satellite: "
                        "{profile: jetson-agx-xavier, restart_after_s: 300}}")
    text += ("workload:\n  kind: downlink-files\n"
             f"  options: {{source: \"{source}\", io_timeout_s: 2.0, backoff_max_s: 1.0}}\n")
    path.write_text(text)
    return path


def _nodes(prep: Prepared) -> dict[str, dict[str, Any]]:
    wait_until(prep.run_dir.status.exists, 120, "status.json")
    state = json.loads(prep.run_dir.state.read_text())
    return {n["name"]: n for n in state["plan"]["nodes"]}


def _agent(nodes: dict[str, dict[str, Any]], name: str) -> str:
    return f"{nodes[name]['mgmt_ip']}:{AGENT_PORT}"


def _received(nodes: dict[str, dict[str, Any]], token: str) -> dict[str, int]:
    """Files the ground station verified so far, per sender (its newest job's summary)."""
    try:
        addr = _agent(nodes, "gs")
        listed = client.jobs(addr, token=token)
        if not listed:
            return {}
        res = client.job_results(addr, str(listed[-1]["id"]), events=False, token=token)
    except NodeError:
        return {}
    senders = (res.get("summary") or {}).get("senders", {})  # type: ignore[union-attr]
    return {name: int(t["files_received"]) for name, t in senders.items()}


def _pid(nodes: dict[str, dict[str, Any]], name: str) -> int | None:
    try:
        return int(client.health(_agent(nodes, name), timeout_s=1.0)["pid"])  # type: ignore[arg-type]
    except NodeError:
        return None


def _paths_to_gs(live: dict[str, Any], gs_ip: str) -> dict[str, list[str]]:
    """For every node with a route to the ground station: the nodes its packets cross."""
    table = RouteTable.model_validate(live["routes"])
    names = {r.dpid: r.node for r in table.routes}
    out = {}
    for r in table.routes:
        if r.ipv4_dst == gs_ip and r.node in names.values():
            out[r.node] = [names[d] for d in table.path(r.dpid, gs_ip)]
    return out


def _serving(live: dict[str, Any]) -> str:
    link = next(n for n, v in live["links"].items() if v["kind"] == "ground" and v["up"])
    return link.replace("gs--", "").replace("--gs", "")


def _kill_and_restart(prep: Prepared, checks: dict[str, Any]) -> None:
    """Beside hold(): kill a satellite that is delivering files, watch it come back."""
    sock = prep.run_dir.path / "control.sock"
    try:
        nodes = _nodes(prep)
        token = read_token(prep.run_dir.path)
        gs_ip = nodes["gs"]["data_ip"]
        serving = _serving(request(sock, {"op": "status"}))
        # a sender with files delivered that is not the serving satellite (which would cut
        # everyone off the ground station)
        got = wait_until(lambda: {s: n for s, n in _received(nodes, token).items()
                                  if n >= 1 and s != serving}, 40, "deliveries from a satellite")
        victim = max(got, key=lambda s: got[s])
        checks["victim"] = victim
        checks["old_pid"] = old_pid = _pid(nodes, victim)
        checks["cli"] = main(["fault", "kill-node", str(prep.run_dir.path), victim,
                              "--restart-after", str(RESTART_AFTER_S)])
        t_kill = time.monotonic()
        checks["old_pid_state"] = process_state(old_pid) if old_pid else "no pid"
        checks["health_after_kill"] = _pid(nodes, victim)
        live = request(sock, {"op": "status"})
        checks["victim_links_during"] = {n: v["up"] for n, v in live["links"].items()
                                         if victim in n.split("--")}
        checks["paths_during"] = _paths_to_gs(live, gs_ip)
        checks["down_nodes"] = live["down_nodes"]
        wait_until(lambda: time.monotonic() - t_kill > RESTART_AFTER_S, RESTART_AFTER_S + 1,
                   "sleep")
        checks["new_pid"] = wait_until(lambda: _pid(nodes, victim), 30, "restarted agent")
        checks["restart_wall_s"] = time.monotonic() - t_kill
        live = request(sock, {"op": "status"})
        checks["victim_links_after"] = {n: v["up"] for n, v in live["links"].items()
                                        if victim in n.split("--")}
        checks["paths_after"] = _paths_to_gs(live, gs_ip)
        checks["received_at_restart"] = _received(nodes, token).get(victim, 0)
        checks["received_again"] = wait_until(
            lambda: _received(nodes, token).get(victim, 0) > checks["received_at_restart"], 20,
            "a delivery from the restarted satellite")
    except BaseException as exc:  # noqa: BLE001 - reported by the test in the main thread
        checks["error"] = exc


@pytest.mark.root
@pytest.mark.ovs
def test_kill_node_restarts_agent_and_reports_losses(small_scenario, shared_data: Path) -> None:
    prep = prepare(_scenario(small_scenario, shared_data / "images" / "rsvqa-lr", 32))
    checks: dict[str, Any] = {}
    prober = threading.Thread(target=_kill_and_restart, args=(prep, checks))
    prober.start()
    load = workload_for(prep)
    held = hold(prep, report=lambda m: None, workload=load)
    prober.join(timeout=60)
    assert "error" not in checks, checks.get("error")
    victim, old_pid, new_pid = checks["victim"], checks["old_pid"], checks["new_pid"]

    # killed: its agent is gone (reaped, not a zombie), its links down, routes avoid it
    assert checks["cli"] == 0
    summary = summarize(prep, held)
    kill = next(f for f in summary["faults"] if f["fault"] == "kill-node")
    assert old_pid is not None and old_pid in kill["pids_killed"]
    assert kill["sockets_destroyed"] >= 1, "the sender's connection died with the node"
    assert checks["old_pid_state"] is None and checks["health_after_kill"] is None
    assert checks["victim_links_during"] and not any(checks["victim_links_during"].values())
    assert victim in checks["down_nodes"]
    assert checks["paths_during"], "the others still reach the ground station"
    assert all(victim not in path for path in checks["paths_during"].values())
    assert victim not in checks["paths_during"]
    # back: a new agent in the node, its links up again, a route, and files delivered again
    assert new_pid != old_pid
    assert RESTART_AFTER_S <= checks["restart_wall_s"] < RESTART_AFTER_S + 30
    assert any(checks["victim_links_after"].values())
    assert victim in checks["paths_after"]
    assert checks["received_again"]

    assert held.teardown is not None and held.teardown.ok
    restart = next(f for f in summary["faults"] if f["fault"] == "restart-node")
    assert kill["restart_after_s"] == RESTART_AFTER_S
    assert restart["of"] == kill["id"] and restart["agent_pid"] == new_pid
    assert restart["workload"] == "resumed" and restart["files_resumed"] > 0
    assert restart["files_already_delivered"] >= checks["received_at_restart"] - 1
    lost = kill["lost"]
    assert lost["ended"] == "recovered"
    assert RESTART_AFTER_S <= lost["unreachable_s"] < checks["restart_wall_s"] + 1
    shaper = lost["shaper"]
    assert shaper["directions"] == 2 * len(kill["links"]) > 0
    assert all(shaper[k] >= 0 for k in (*DROP_KEYS, "queued_at_end"))
    assert shaper["dropped_total"] == sum(shaper[k] for k in DROP_KEYS)
    # consistent with the run's counters: a fault's deltas never exceed the totals at the end
    end = summary["shaper_counters"]
    dirs = [f"{link}/{d}" for link in kill["links"] for d in ("ab", "ba")]
    for k in ("dropped_queue", "dropped_loss", "dropped_tx", "received_packets"):
        assert shaper[k] <= sum(int(end[d][k]) for d in dirs)
    assert shaper["dropped_queue"] + shaper["dropped_loss"] <= shaper["received_packets"]
    assert shaper["forwarded_packets"] <= 50, "a dead node's links forward only what was on " \
        "the wire when it died"
    w = lost["workload"]
    assert w["files_delivered_before"] >= 1 and w["files_delivered_after"] >= 1
    assert w["delivery_gap_s"] is not None and w["delivery_gap_s"] >= RESTART_AFTER_S
    assert all(w[k] >= 0 for k in ("transfers_interrupted", "bytes_discarded", "files_resent",
                                   "bytes_resent", "bytes_not_delivered_by_end"))
    # the file on the wire when the agent died: the ground saw part of it, threw it away, and
    # the restarted satellite sent it again whole
    assert w["transfers_interrupted"] >= 1 and w["bytes_discarded"] > 0, kill
    assert w["files_resent"] <= w["transfers_interrupted"] + 8  # at most a window of lost acks
    assert w["senders_affected"] == [victim]
    per_sat = summary["workload"]["per_satellite"][victim]
    planned = len(list((shared_data / "images" / "rsvqa-lr").glob("*.png")))
    assert per_sat["files"] + w["files_not_delivered_by_end"] == planned
    assert per_sat["sender_before_kill"] and per_sat["sender"]
    assert kill["before_kill"]["files_delivered"] <= w["files_delivered_before"] + 8
    line = fault_line(kill)
    assert line.startswith(f"fault {kill['id']} kill-node {victim} at ")
    assert f"unreachable {lost['unreachable_s']:.1f} s" in line
    assert f"{w['transfers_interrupted']} transfers interrupted" in line


def _cut(prep: Prepared, checks: dict[str, Any]) -> None:
    """Beside hold(): cut the serving satellite's ground link for CUT_FOR_S seconds."""
    sock = prep.run_dir.path / "control.sock"
    try:
        nodes = _nodes(prep)
        token = read_token(prep.run_dir.path)
        wait_until(lambda: sum(_received(nodes, token).values()) >= 3, 40, "deliveries")
        serving = _serving(request(sock, {"op": "status"}))
        checks["serving"] = serving
        checks["reply"] = request(sock, {"op": "cut-link", "a": "gs", "b": serving,
                                         "for_s": CUT_FOR_S})
        checks["during"] = request(sock, {"op": "status"})["links"]
        wait_until(lambda: request(sock, {"op": "status"})["links"][checks["reply"]["link"]]["up"],
              CUT_FOR_S + 10, "the link restored")
        checks["received_after"] = _received(nodes, token)
        checks["controller"] = request(sock, {"op": "restart-controller"})
    except BaseException as exc:  # noqa: BLE001 - reported by the test in the main thread
        checks["error"] = exc


@pytest.mark.root
@pytest.mark.ovs
def test_cut_link_for_reports_frames_dropped(small_scenario, shared_data: Path) -> None:
    prep = prepare(_scenario(small_scenario, shared_data / "images" / "rsvqa-lr", 28))
    checks: dict[str, Any] = {}
    prober = threading.Thread(target=_cut, args=(prep, checks))
    prober.start()
    held = hold(prep, report=lambda m: None, workload=workload_for(prep))
    prober.join(timeout=60)
    assert "error" not in checks, checks.get("error")
    link = checks["reply"]["link"]
    assert not checks["during"][link]["up"]
    summary = summarize(prep, held)
    cut = next(f for f in summary["faults"] if f["fault"] == "cut-link")
    restore = next(f for f in summary["faults"] if f["fault"] == "restore-link")
    assert restore["of"] == cut["id"] and restore["up"] is True
    lost = cut["lost"]
    assert CUT_FOR_S <= lost["unreachable_s"] < CUT_FOR_S + 10
    shaper = lost["shaper"]
    assert shaper["directions"] == 2
    assert all(shaper[k] >= 0 for k in (*DROP_KEYS, "queued_at_end", "received_packets"))
    # The serving link carried the whole (saturated) downlink. Once down it forwards only the
    # few frames already on the wire (~2500 in 3 s if the cut did nothing); what reached it
    # before the routes moved away was dropped, its standing queue is still held.
    assert shaper["forwarded_packets"] <= 50, json.dumps(cut)
    assert shaper["dropped_total"] + shaper["queued_at_end"] > 0, json.dumps(cut)
    # every frame that arrived during the cut: dropped, still queued, or forwarded
    assert shaper["dropped_queue"] + shaper["dropped_loss"] + shaper["queued_at_end"] + \
        shaper["forwarded_packets"] >= shaper["received_packets"]
    end = summary["shaper_counters"]
    for k in (*DROP_KEYS[:3], "received_packets"):
        assert shaper[k] <= int(end[f"{link}/ab"][k]) + int(end[f"{link}/ba"][k])
    w = lost["workload"]
    assert w["transfers_interrupted"] >= 0 and w["bytes_discarded"] >= 0
    assert set(w["senders_affected"]) <= set(summary["workload"]["per_satellite"])
    assert "shaper dropped" in fault_line(cut)
    # the controller restart: its resync time, and the shaper's drops network-wide meanwhile
    ctl = next(f for f in summary["faults"] if f["fault"] == "restart-controller")
    assert ctl["id"] == checks["controller"]["id"] == cut["id"] + 1
    assert 0 < ctl["resync_s"] < 30 and ctl["lost"]["unreachable_s"] is None
    assert ctl["lost"]["shaper"]["directions"] == len(summary["shaper_counters"])
    assert held.teardown is not None and held.teardown.ok


# --- what was lost, from counters and per-file events (no network needed) --------------------

def _ev(file: str, status: str, start_s: float, end_s: float, nbytes: int, *,
        peer: str = "sat1", size: int = 100, error: str = "") -> dict[str, Any]:
    return {"file": file, "peer": peer, "transfer_id": f"0:{file}", "status": status,
            "size_bytes": size, "bytes": nbytes, "start_ns": int(start_s * 1e9),
            "end_ns": int(end_s * 1e9), "error": error}


def test_fault_losses_attributes_interrupted_and_resent_files_to_the_window() -> None:
    events = [
        _ev("a", "received", 0, 1, 100),
        _ev("b", "incomplete", 1, 12, 40, error="connection closed after 40 of 100 bytes"),
        _ev("b", "received", 13, 14, 100),                  # resent whole after the fault
        _ev("c", "received", 9, 10.5, 100),                 # arrived, its ack was lost
        _ev("c", "duplicate", 13, 13.5, 100),
        _ev("d", "incomplete", 15, 20, 70, error="receiver stopped after 70 of 100 bytes"),
        _ev("x", "incomplete", 1, 12, 30, peer="sat2", error="receive failed"),
    ]
    planned = [("a", 100), ("b", 100), ("c", 100), ("d", 100), ("e", 100)]
    w = fault_losses(events, "sat1", int(10e9), int(12e9), planned)
    assert (w["transfers_interrupted"], w["bytes_discarded"]) == (1, 40)
    assert (w["files_resent"], w["bytes_resent"]) == (2, 200)  # b whole, c again
    assert w["senders_affected"] == ["sat1"]
    assert (w["files_delivered_before"], w["files_delivered_after"]) == (1, 1)
    assert w["delivery_gap_s"] == 13.0
    assert (w["files_not_delivered_by_end"], w["bytes_not_delivered_by_end"]) == (2, 200)
    # every sender (a cut link): sat2's broken transfer counts too; d, cut by the run's end
    # after the fault began, does not
    every = fault_losses(events, None, int(10e9), int(12e9))
    assert every["transfers_interrupted"] == 2 and every["senders_affected"] == ["sat1", "sat2"]
    assert "files_not_delivered_by_end" not in every
    # a window before anything broke loses nothing
    assert fault_losses(events, "sat1", int(0.1e9), int(0.5e9))["transfers_interrupted"] == 0


def test_a_restarted_ground_station_counts_each_transfer_once() -> None:
    """The old receiver verified `a` but died before its ack left; the new one verifies the
    resent copy again: one file for the tallies, one file resent for the fault."""
    events = [_ev("a", "received", 9, 10.5, 100), _ev("b", "received", 2, 3, 100),
              _ev("a", "received", 13, 14, 100)]
    assert sender_tallies(events) == {"sat1": {"files_received": 2, "bytes_received": 200}}
    w = fault_losses(events, None, int(10e9), int(12e9))
    assert (w["files_resent"], w["bytes_resent"], w["transfers_interrupted"]) == (1, 100, 0)


def test_shaper_delta_sums_drops_on_the_fault_directions_only() -> None:
    before = {"l/ab": {"dropped_queue": 5, "received_packets": 10, "queued_packets": 0},
              "l/ba": {"dropped_loss": 1}, "m/ab": {"dropped_queue": 0}}
    after = {"l/ab": {"dropped_queue": 9, "dropped_tx": 2, "received_packets": 30,
                      "forwarded_packets": 3, "queued_packets": 7, "in_flight_packets": 1},
             "l/ba": {"dropped_loss": 4, "rx_kernel_drops": 1},
             "m/ab": {"dropped_queue": 100}}
    d = shaper_delta(before, after, ["l/ab", "l/ba"])
    assert (d["dropped_queue"], d["dropped_loss"], d["dropped_tx"]) == (4, 3, 2)
    assert d["dropped_total"] == 4 + 3 + 2 + 1 and d["queued_at_end"] == 8
    assert (d["received_packets"], d["forwarded_packets"], d["directions"]) == (20, 3, 2)
    assert shaper_delta(before, after)["dropped_queue"] == 104
