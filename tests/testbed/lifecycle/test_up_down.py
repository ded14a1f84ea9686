"""Whole-network tests: real namespaces, OVS, os-ken, userspace shapers and ping."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testbed.cli.main import main
from testbed.lifecycle.network import run_prefix
from testbed.lifecycle.session import hold, prepare, summarize
from testbed.scenario import load_scenario

from .conftest import leftovers

pytestmark = [pytest.mark.root, pytest.mark.ovs]


def ping(netns: str, ip: str, count: int = 5, interval_s: float = 0.2) -> list[float]:
    out = subprocess.run(["ip", "netns", "exec", netns, "ping", "-n", "-c", str(count), "-i",
                          str(interval_s), "-W", "2", ip], capture_output=True, text=True,
                         timeout=60).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.1)


def _route(live: dict, node: str, dst_ip: str) -> dict:
    return next(r for r in live["routes"]["routes"]
                if r["node"] == node and r["ipv4_dst"] == dst_ip)


def _probe_running_network(prep, checks: dict[str, object]) -> None:
    """Runs beside hold(): pings one and two ISLs away, and to the ground station."""
    from testbed.lifecycle.control import request

    try:
        wait_for(prep.run_dir.status, 60)
        state = json.loads(prep.run_dir.state.read_text())
        nodes = {n["name"]: n for n in state["plan"]["nodes"]}
        a, near, far = nodes["walker-p0-s0"], nodes["walker-p0-s1"], nodes["walker-p0-s2"]
        checks["near_rtts"] = ping(a["netns"], near["data_ip"], count=8)
        checks["rtts"] = ping(a["netns"], far["data_ip"], count=8)
        live = request(prep.run_dir.path / "control.sock", {"op": "status"})
        checks["near_route"] = _route(live, a["name"], near["data_ip"])
        checks["route"] = _route(live, a["name"], far["data_ip"])
        serving = [name.replace("gs--", "").replace("--gs", "")
                   for name, v in live["links"].items() if v["kind"] == "ground" and v["up"]]
        checks["serving"] = serving
        if serving:
            checks["gs_rtts"] = ping(nodes[serving[0]]["netns"], nodes["gs"]["data_ip"], count=3)
    except BaseException as exc:  # noqa: BLE001 - reported by the test in the main thread
        checks["error"] = exc


def test_multi_hop_ping_follows_programmed_delays_and_nothing_is_left(small_scenario) -> None:
    path = small_scenario(duration=25, speed=1.0)
    prep = prepare(path)
    prefix = run_prefix(prep.scenario.name)
    checks: dict[str, object] = {}
    prober = threading.Thread(target=_probe_running_network, args=(prep, checks))
    prober.start()
    held = hold(prep, report=lambda m: None)
    prober.join(timeout=60)
    assert "error" not in checks, checks.get("error")
    rtts, route = checks["rtts"], checks["route"]
    near_rtts, near_route = checks["near_rtts"], checks["near_route"]
    assert len(rtts) >= 6 and len(near_rtts) >= 6, "ping across ISLs lost packets"
    assert near_route["hops"] == 1 and route["hops"] == 2
    # Programmed round trips: the sums of the shaped ISL delays on the controller's paths.
    near_ms, far_ms = 2 * near_route["delay_us"] / 1000, 2 * route["delay_us"] / 1000
    assert min(near_rtts) >= near_ms - 0.5 and min(rtts) >= far_ms - 0.5, "delay not applied"
    # On top of the shaped delay, every OVS bridge a frame crosses costs time in the userspace
    # datapath (its main thread polls every port; ~0.3-2 ms here with ~140 ports). One ISL
    # away a round trip crosses 4 bridges, two ISLs away 6: measure the cost per crossing on
    # the near path and predict the far one. A wrong route would be off by a whole ISL
    # (~16 ms each way); a shaper or clock fault by the programmed delay.
    per_crossing_ms = (min(near_rtts) - near_ms) / 4
    assert min(rtts) == pytest.approx(far_ms + 6 * per_crossing_ms, abs=3.0)
    assert checks["serving"], "the scenario has a ground contact at its start"
    assert checks["gs_rtts"], "no path from the serving satellite to the ground station"
    assert not held.interrupted and held.teardown is not None and held.teardown.ok
    summary = summarize(prep, held)
    assert summary["events_applied"] > 0 and summary["lateness_ms"]["p99"] < 50
    assert leftovers(prefix) == {"netns": [], "links": [], "bridges": []}


def test_down_after_sigkill_of_up_leaves_nothing(small_scenario) -> None:
    path = small_scenario(duration=600, speed=1.0)
    scenario = load_scenario(path)
    prefix = run_prefix(scenario.name)
    run_dir = Path(scenario.outputs.dir) / scenario.name
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli.main", "up", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(run_dir / "status.json", 90)
        assert leftovers(prefix)["netns"], "the run created namespaces"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    # the shaper worker and controller survive a SIGKILL of their parent's group? down
    # removes them from the ledger either way
    assert main(["down", str(run_dir)]) == 0
    assert leftovers(prefix) == {"netns": [], "links": [], "bridges": []}
    ledger = [json.loads(x) for x in (run_dir / "ledger.jsonl").read_text().splitlines()]
    pids = [e["details"]["pid"] for e in ledger if e["kind"] == "process"]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert main(["down", str(run_dir)]) == 0  # idempotent


def test_bad_scenario_creates_nothing(small_scenario, tmp_path: Path) -> None:
    path = small_scenario()
    path.write_text(path.read_text().replace("lat_deg: 31.23", "lat_deg: 95"))
    assert main(["up", str(path)]) == 2
    assert not (tmp_path / "runs").exists()


def _faults(prep, checks: dict[str, object]) -> None:
    """Beside hold(): cut the serving ground link, restart the controller, kill a node."""
    from testbed.lifecycle.control import request

    sock = prep.run_dir.path / "control.sock"
    try:
        wait_for(prep.run_dir.status, 60)
        state = json.loads(prep.run_dir.state.read_text())
        nodes = {n["name"]: n for n in state["plan"]["nodes"]}
        live = request(sock, {"op": "status"})
        link = next(name for name, v in live["links"].items()
                    if v["kind"] == "ground" and v["up"])
        sat = link.replace("gs--", "").replace("--gs", "")
        gs_ip = nodes["gs"]["data_ip"]
        # the first echo of a fresh path can be lost to neighbour discovery: warm it first
        ping(nodes[sat]["netns"], gs_ip, count=1)
        checks["before"] = ping(nodes[sat]["netns"], gs_ip, count=3)
        request(sock, {"op": "cut-link", "a": "gs", "b": sat, "for_s": 4})
        checks["during_cut"] = ping(nodes[sat]["netns"], gs_ip, count=3, interval_s=0.2)
        time.sleep(5)
        checks["after_restore"] = ping(nodes[sat]["netns"], gs_ip, count=3)
        reply = request(sock, {"op": "restart-controller"})
        checks["resync_s"] = reply["resync_s"]
        checks["after_restart"] = ping(nodes["walker-p0-s0"]["netns"],
                                       nodes["walker-p0-s2"]["data_ip"], count=3)
        request(sock, {"op": "kill-node", "name": "walker-p0-s1"})
        route = next(r for r in request(sock, {"op": "status"})["routes"]["routes"]
                     if r["node"] == "walker-p0-s0"
                     and r["ipv4_dst"] == nodes["walker-p0-s2"]["data_ip"])
        checks["detour_hops"] = route["hops"]
        checks["after_kill"] = ping(nodes["walker-p0-s0"]["netns"],
                                    nodes["walker-p0-s2"]["data_ip"], count=3)
    except BaseException as exc:  # noqa: BLE001 - reported by the test in the main thread
        checks["error"] = exc


def test_faults_cut_link_restart_controller_kill_node(small_scenario) -> None:
    prep = prepare(small_scenario(duration=45, speed=1.0))
    checks: dict[str, object] = {}
    prober = threading.Thread(target=_faults, args=(prep, checks))
    prober.start()
    held = hold(prep, report=lambda m: None)
    prober.join(timeout=90)
    assert "error" not in checks, checks.get("error")
    assert len(checks["before"]) >= 2, "the serving ground link carries traffic before the cut"
    assert checks["during_cut"] == [], "a cut ground link carries nothing"
    assert len(checks["after_restore"]) >= 2, "the link carries traffic again after --for"
    assert checks["resync_s"] < 30 and len(checks["after_restart"]) >= 2
    # walker-p0-s1 sat between p0-s0 and p0-s2 in the ring: the route goes around the ring
    assert checks["detour_hops"] > 2 and len(checks["after_kill"]) >= 2
    assert [f["fault"] for f in held.faults][:3] == ["cut-link", "restore-link",
                                                     "restart-controller"]
    assert held.teardown is not None and held.teardown.ok


def test_unknown_profile_fails_before_anything_is_created(small_scenario, tmp_path) -> None:
    path = small_scenario()
    path.write_text(path.read_text() + "nodes: {satellite: {profile: jetson-nano-x}}\n")
    assert main(["up", str(path)]) == 2
    assert not (tmp_path / "runs").exists()
