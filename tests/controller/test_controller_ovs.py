"""The controller against real Open vSwitch (userspace datapath) with real packets.

Four nodes in a ring (node i = dpid i+1, host 10.128.0.(i+1) on port 1, link to node j on port
10+j). Paths are checked with ovs-ofctl flow counters and the kernel's veth counters, both
independent of the controller's own account; losses are counted by ping (replies delayed by a
busy daemon still count), next to a control ping across a bridge without controller.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from controller import api
from controller.flows import cookie_for
from controller.model import ControllerStatus
from tests.controller.ctl_fabric import Ring, ping_during, process_alive, run

pytestmark = [pytest.mark.root, pytest.mark.ovs]

IP = ["10.128.0.1", "10.128.0.2", "10.128.0.3", "10.128.0.4"]
VIA_1 = {(0, 3): 5000.0, (2, 3): 5000.0}  # 0 -> 1 -> 2 is the short way
VIA_3 = {(0, 1): 5000.0, (1, 2): 5000.0}  # 0 -> 3 -> 2 is the short way


def _counters(ring: Ring) -> dict[str, int]:
    f = ring.fabric
    return {
        "flow1": f.flow_packets(1, IP[2]),
        "flow3": f.flow_packets(3, IP[2]),
        "veth0to1": f.veth_tx_packets(0, 1),
        "veth0to3": f.veth_tx_packets(0, 3),
    }


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before}


def test_two_hop_ping_and_weights_steer_the_path(ring4: Ring) -> None:
    fabric = ring4.fabric
    assert fabric.ping(0, 2, count=5, interval_s=0.02) == (5, 5)

    for weights, on, off in ((VIA_1, "1", "3"), (VIA_3, "3", "1")):
        ring4.push(weights_us=weights)
        path = api.get_routes(ring4.endpoint).path(1, IP[2])
        assert path == ([1, 2, 3] if on == "1" else [1, 4, 3])
        before = _counters(ring4)
        assert fabric.ping(0, 2, count=20, interval_s=0.01) == (20, 20)
        delta = _delta(before, _counters(ring4))
        assert delta[f"flow{on}"] >= 20 and delta[f"flow{off}"] == 0, delta
        assert delta[f"veth0to{on}"] >= 20 and delta[f"veth0to{off}"] == 0, delta

    # the controller's flow count equals what the switch holds (ovs-ofctl, independently)
    status = api.get_status(ring4.endpoint)
    for i in range(4):
        sw = status.switch(i + 1)
        assert sw.connected and sw.synced_generation == ring4.generation
        assert sw.flows == len(fabric.dump_flows(i)) == 5  # 4 routes + table-miss


def test_link_down_reroutes(ring4: Ring) -> None:
    fabric = ring4.fabric
    assert api.get_routes(ring4.endpoint).path(1, IP[1]) == [1, 2]
    events: list[str] = []

    def cut_then_reroute(t0: float) -> None:
        fabric.set_link_state(0, 1, "up")  # a retried attempt starts from the intact ring
        ring4.push()
        time.sleep(0.5)
        events.append(f"cut at {time.time() - t0:.2f} s")
        fabric.set_link_state(0, 1, "down")  # unplanned: packets are lost until the push
        time.sleep(0.2)
        events.append(f"reroute at {time.time() - t0:.2f} s")
        ring4.push(down={(0, 1)})

    result, _, t0 = ping_during(
        fabric, cut_then_reroute, measured=(0, 1), count=300, interval_s=0.01, linger_s=2.0
    )
    print(f"\nunplanned {', '.join(events[-2:])}: {result.describe(t0)}")
    assert 10 <= result.lost < 100, "the cut must cost packets, then traffic recovers"

    assert api.get_routes(ring4.endpoint).path(1, IP[1]) == [1, 4, 3, 2]
    before = fabric.flow_packets(3, IP[1])
    assert fabric.ping(0, 1, count=10, interval_s=0.01) == (10, 10)
    assert fabric.flow_packets(3, IP[1]) - before >= 10
    # no flow of node 0 still points at the dead link (port 11)
    assert [f for f in fabric.dump_flows(0) if f.get("actions") == "output:11"] == []


def test_planned_swaps_lose_no_packet(ring4: Ring) -> None:
    fabric = ring4.fabric
    ring4.push(weights_us=VIA_1)
    before = _counters(ring4)

    def swap_back_and_forth(t0: float) -> list[float]:
        swap_at = []
        time.sleep(0.3)
        for k in range(6):
            swap_at.append(time.time() - t0)
            ring4.push(weights_us=VIA_3 if k % 2 == 0 else VIA_1, label=f"swap-{k}")
            assert api.get_status(ring4.endpoint).last_apply.flow_mods > 0
            time.sleep(0.4)
        return swap_at

    result, swap_at, t0 = ping_during(
        fabric, swap_back_and_forth, measured=(0, 2), count=400, interval_s=0.01
    )
    delta = _delta(before, _counters(ring4))
    swaps = ", ".join(f"{t:.2f}" for t in swap_at)
    print(f"\nplanned swaps at [{swaps}] s: {result.describe(t0)}; counters {delta}")
    assert result.sent == 400 and result.lost == 0, f"swaps at [{swaps}] s: {result.describe(t0)}"
    assert delta["flow1"] > 50 and delta["flow3"] > 50, "traffic really alternated paths"


def test_controller_sigkill_and_restart_resyncs_without_flushing(ring4: Ring) -> None:
    fabric, ctl = ring4.fabric, ring4.ctl
    bridge0 = fabric.nodes[0].bridge
    stale = f"cookie={cookie_for(0):#x},priority=100,ip,nw_dst=10.128.9.9,actions=output:11"

    def kill_and_restart(t0: float) -> tuple[float, float, ControllerStatus]:
        time.sleep(0.3)
        pid = ctl.pid
        killed_at = time.time()
        ctl.kill()
        assert pid is not None and not process_alive(pid)
        # a leftover of an interrupted apply: an older generation's flow for a gone destination
        run(["ovs-ofctl", "-O", "OpenFlow13", "add-flow", bridge0, stale])
        time.sleep(0.5)
        ctl.start()
        status = api.wait_applied(ctl.endpoint, ring4.generation, timeout_s=20.0)
        return killed_at, time.time(), status

    result, (killed_at, resynced_at, status), t0 = ping_during(
        fabric, kill_and_restart, measured=(0, 2), count=400, interval_s=0.01
    )
    window = f"killed at {killed_at - t0:.2f} s, all resynced at {resynced_at - t0:.2f} s"
    print(f"\ncontroller SIGKILL + restart ({window}): {result.describe(t0)}")
    assert status.complete and status.generation_applied == ring4.generation
    assert all(sw.resyncs == 1 for sw in status.switches)
    flows = fabric.dump_flows(0)
    assert not [f for f in flows if f.get("nw_dst") == "10.128.9.9"], "stale flow removed"
    assert len(flows) == 5
    # not flushed: the route flows are older than the restart
    durations = _durations(bridge0)
    assert min(durations) > time.time() - killed_at - 0.2, durations
    assert result.lost == 0, f"no controller needed to forward; {window}: {result.describe(t0)}"
    # the restarted controller still changes routes
    ring4.push(weights_us=VIA_3)
    assert fabric.ping(0, 2, count=5, interval_s=0.01) == (5, 5)
    assert api.get_routes(ctl.endpoint).path(1, IP[2]) == [1, 4, 3]


def _durations(bridge: str) -> list[float]:
    argv = ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge, "ip"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [
        float(part.split("=")[1].rstrip("s,"))
        for line in out.splitlines()
        for part in line.split()
        if part.startswith("duration=")
    ]
