"""Static routing mode on real resources: kernel routes in namespaces, MAC flows on OVS bridges.

A ring a-b-c-d-a of plain veth links whose d--a link is slow, so a reaches d over three hops
(b and c forward) until a link or a node goes down. Packets, TTLs, `ip route`, netlink route
notifications and the kernels' ICMP counters are the evidence; nothing is mocked.
"""

from __future__ import annotations

import random
import re
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyroute2 import IPBatch

from controller.model import RouteEntry, RouteTable, Snapshot
from testbed.backends import NetnsBackend
from testbed.fabric import AddressPlan, FabricConfig, LinkSpec, NodeSpec, OvsFabric
from testbed.fabric.netlink import in_netns
from testbed.ledger import Ledger, teardown
from testbed.lifecycle.snapshot import TopologyState, snapshot_from_state
from testbed.lifecycle.static_routing import (
    KernelRoute,
    RouteTemplates,
    StaticRouting,
    StaticRoutingError,
    _encode_route,
)
from testbed.sysrun import Runner
from tests.conftest import require_binary, require_root
from tests.testbed.lifecycle.conftest import leftovers

RING = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")]
DELAY_US = {"a--b": 1000, "b--c": 1000, "c--d": 1000, "d--a": 5000}
RTMGRP_IPV4_ROUTE = 0x40
RTM_NEWROUTE = 24
RTA_DST = 1


def ring_plan(prefix: str) -> AddressPlan:
    mgmt = f"172.{random.randint(16, 29)}.{random.randint(0, 255)}.0/24"
    # shaper "kernel": one plain veth pair per link, no shaper process in the way
    return AddressPlan.build(prefix, [NodeSpec(x) for x in "abcd"],
                             [LinkSpec(a, b, shaper="kernel") for a, b in RING],
                             mgmt_subnet=mgmt)


def snap(plan: AddressPlan, generation: int, *, down: tuple[str, ...] = (),
         down_nodes: tuple[str, ...] = (), delay_us: dict[str, int] | None = None) -> Snapshot:
    delays = DELAY_US | (delay_us or {})
    state = TopologyState(tuple((lk, lk.name not in down, delays[lk.name]) for lk in plan.links),
                          frozenset(down_nodes))
    return snapshot_from_state(plan, state, generation, label=f"g{generation}")


@dataclass
class Ring:
    plan: AddressPlan
    backend: NetnsBackend
    runner: Runner
    routing: StaticRouting

    def ip(self, node: str) -> str:
        return self.plan.node(node).data_ip

    def ping(self, src: str, dst: str, *, wait_s: int = 2) -> tuple[int, str, float]:
        """(exit status, output, seconds) of one ping from node `src` to node `dst`."""
        t0 = time.monotonic()
        done = self.backend.exec(src, ["ping", "-n", "-c", "1", "-W", str(wait_s), self.ip(dst)],
                                 check=False, timeout_s=wait_s + 10)
        return done.returncode, done.stdout + done.stderr, time.monotonic() - t0

    def ttl(self, src: str, dst: str) -> int:
        """TTL of the echo reply (64 minus one per forwarding node on the way back)."""
        last = ""
        for _ in range(3):  # one retry for a ping lost to a busy host, not for a wrong route
            rc, out, _ = self.ping(src, dst)
            last = out
            m = re.search(r"ttl=(\d+)", out)
            if rc == 0 and m:
                return int(m.group(1))
        raise AssertionError(f"ping {src} -> {dst} failed: {last}")

    def snmp(self, node: str, group: str, field: str) -> int:
        """A counter of the node's /proc/net/snmp (per namespace)."""
        text = self.backend.exec(node, ["cat", "/proc/net/snmp"]).stdout
        rows = [line.split()[1:] for line in text.splitlines() if line.startswith(f"{group}:")]
        return int(rows[1][rows[0].index(field)])

    def ip_routes(self, node: str) -> str:
        return self.backend.exec(node, ["ip", "route", "show"]).stdout

    def set_link_carrier(self, name: str, up: bool) -> None:
        """Physically stop (or restart) a link: its veth end on the a side goes down."""
        lk = self.plan.link(name)
        subprocess.run(["ip", "link", "set", lk.a.ifname, "up" if up else "down"], check=True)


@pytest.fixture
def ring(unique_prefix: str, tmp_path: Path) -> Iterator[Ring]:
    """The ring created for real (bridges without controller), static routing set up; removed
    from the ledger afterwards, and nothing with the prefix may remain."""
    require_root()
    require_binary("ovs-vsctl", "ovs-ofctl", "ip", "ping")
    runner = Runner()
    plan = ring_plan(unique_prefix)
    ledger = Ledger(tmp_path / "ledger.jsonl")
    fabric = OvsFabric(runner, ledger, FabricConfig(datapath_type="netdev", controller_port=None))
    backend = NetnsBackend(runner, ledger, plan, cgroups=None)
    try:
        fabric.ensure_daemon()
        backend.create_management()
        fabric.create_bridges(list(plan.nodes))
        backend.create_nodes()
        fabric.create_links(list(plan.links))
        routing = StaticRouting(plan, runner)
        routing.setup()
        yield Ring(plan, backend, runner, routing)
    finally:
        report = teardown(ledger, runner)
        ledger.close()
        left = leftovers(unique_prefix)
        assert report.ok, report.summary()
        assert not any(left.values()), left


class RouteMonitor:
    """Route notifications (RTM_NEWROUTE) of one namespace: what the kernel was told to do."""

    def __init__(self, netns: str) -> None:
        with in_netns(netns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_IPV4_ROUTE))
        self.sock.setblocking(False)

    def new_routes(self) -> list[str]:
        """Destinations of the static routes added or replaced since the last call."""
        dsts: list[str] = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return dsts
            pos = 0
            while pos + 16 <= len(data):
                length, mtype = struct.unpack_from("<IH", data, pos)
                if mtype == RTM_NEWROUTE and data[pos + 16 + 5] == 4:  # rtm_protocol: static
                    attr = pos + 28
                    while attr + 4 <= pos + length:
                        alen, atype = struct.unpack_from("<HH", data, attr)
                        if atype == RTA_DST:
                            dsts.append(socket.inet_ntoa(data[attr + 4:attr + 8]))
                        attr += (alen + 3) & ~3
                pos += (length + 3) & ~3

    def close(self) -> None:
        self.sock.close()


# --- pure: what the kernels are told -----------------------------------------------------------

def test_desired_routes_follow_shortest_delay_and_mark_unreachable() -> None:
    plan = ring_plan("tpure")
    sr = StaticRouting(plan, Runner())
    ip = {n.name: n.data_ip for n in plan.nodes}
    want, _ = sr.desired(snap(plan, 1))
    assert want["a"] == {ip["b"]: KernelRoute("link"), ip["c"]: KernelRoute("via", ip["b"]),
                         ip["d"]: KernelRoute("via", ip["b"])}
    assert want["c"][ip["a"]] == KernelRoute("via", ip["b"])
    want, _ = sr.desired(snap(plan, 2, down_nodes=("b",)))
    assert want["a"][ip["b"]] == KernelRoute("unreachable")
    assert want["a"][ip["c"]] == KernelRoute("via", ip["d"])
    assert set(want["b"].values()) == {KernelRoute("unreachable")}
    flows = sr.bridge_flows("a")
    assert flows[-1] == "priority=0,actions=drop"
    assert sum("dl_dst=" in f for f in flows) == 3  # own MAC + two neighbours
    assert not any("NORMAL" in f or "FLOOD" in f for f in flows)


def test_route_templates_equal_pyroute2_encoding_of_each_route() -> None:
    """Patched templates must be byte for byte what pyroute2 encodes for the same route
    (sequence number and flags aside: send_batch sets those)."""
    routes = [("10.128.3.9", KernelRoute("via", "10.128.0.2")),
              ("10.128.1.7", KernelRoute("link")), ("10.128.0.5", KernelRoute("unreachable"))]
    buf, starts = RouteTemplates().encode(routes, 17)
    ipb = IPBatch()
    try:
        for seq, ((dst, route), start) in enumerate(zip(routes, starts, strict=True), start=1):
            want = bytearray(_encode_route(ipb, dst, route, 17))
            got = bytearray(buf[start:start + len(want)])
            assert struct.unpack_from("<I", got, 8)[0] == seq
            for msg in (want, got):
                msg[6:12] = bytes(6)
            assert got == want, route
    finally:
        ipb.close()
    assert starts[-1] + len(want) == len(buf)


def test_refuses_before_setup_and_foreign_snapshots() -> None:
    plan = ring_plan("tpure")
    sr = StaticRouting(plan, Runner())
    with pytest.raises(StaticRoutingError, match="setup"):
        sr.apply(snap(plan, 1))
    other = AddressPlan.build("tpure", [NodeSpec("x"), NodeSpec("a")])
    foreign = snapshot_from_state(other, TopologyState((), frozenset()), 1)
    with pytest.raises(StaticRoutingError, match=r"missing \['b', 'c', 'd'\], unknown \['x'\]"):
        sr.desired(foreign)


# --- real namespaces and bridges ----------------------------------------------------------------

@pytest.mark.root
@pytest.mark.ovs
def test_three_hops_decrement_ttl_routes_shown_and_no_redirects(ring: Ring) -> None:
    counts = ring.routing.apply(snap(ring.plan, 1))
    assert counts == {"routes_changed": 12, "nodes_touched": 4}
    assert ring.ttl("a", "b") == 64  # neighbour: nobody forwards
    assert ring.ttl("a", "c") == 63  # b forwards
    assert ring.ttl("a", "d") == 62  # b and c forward (d--a is slower than three hops)

    d0 = ring.plan.node("a").data_ifname
    shown = ring.ip_routes("a")
    assert f"{ring.ip('b')} dev {d0} proto static scope link" in shown, shown
    assert f"{ring.ip('c')} via {ring.ip('b')} dev {d0} proto static" in shown, shown
    assert f"{ring.ip('d')} via {ring.ip('b')} dev {d0} proto static" in shown, shown

    table = RouteTable(generation=ring.routing.generation,
                       routes=[RouteEntry(**r) for r in ring.routing.routes()])
    dpid = {n.name: n.dpid for n in ring.plan.nodes}
    assert table.path(dpid["a"], ring.ip("d")) == [dpid[x] for x in "abcd"]

    # b forwarded in and out of its one data interface, and sent no ICMP redirect for it
    assert ring.snmp("b", "Ip", "ForwDatagrams") >= 2
    assert ring.snmp("b", "Icmp", "OutRedirects") == 0
    # control: with redirects allowed again the same traffic makes b send them
    ring.backend.exec("b", ["sysctl", "-qw", "net.ipv4.conf.all.send_redirects=1",
                            f"net.ipv4.conf.{ring.plan.node('b').data_ifname}.send_redirects=1"])
    ring.ttl("a", "d")
    assert ring.snmp("b", "Icmp", "OutRedirects") >= 1


@pytest.mark.root
@pytest.mark.ovs
def test_link_down_takes_the_other_way_and_only_changes_are_programmed(ring: Ring) -> None:
    ring.routing.apply(snap(ring.plan, 1))
    assert ring.ttl("a", "d") == 62
    monitor = RouteMonitor(ring.plan.node("a").netns)
    try:
        ring.set_link_carrier("b--c", up=False)
        counts = ring.routing.apply(snap(ring.plan, 2, down=("b--c",)))
        # every node keeps its two neighbour routes; each one's two far routes flip direction
        assert counts == {"routes_changed": 8, "nodes_touched": 4}
        assert sorted(monitor.new_routes()) == sorted([ring.ip("c"), ring.ip("d")])
        assert ring.ttl("a", "d") == 64  # now the direct d--a link
        assert ring.ttl("a", "c") == 63  # through d
        assert ring.ttl("b", "d") == 63  # through a

        # same topology again, and a delay change that moves no path: nothing reprogrammed
        assert ring.routing.apply(snap(ring.plan, 3, down=("b--c",))) == \
            {"routes_changed": 0, "nodes_touched": 0}
        slower = snap(ring.plan, 4, down=("b--c",), delay_us={"d--a": 7000})
        assert ring.routing.apply(slower) == {"routes_changed": 0, "nodes_touched": 0}
        assert monitor.new_routes() == []
        a_to_d = next(r for r in ring.routing.routes()
                      if r["node"] == "a" and r["ipv4_dst"] == ring.ip("d"))
        assert a_to_d["delay_us"] == 7000 and a_to_d["hops"] == 1  # status follows anyway

        with pytest.raises(StaticRoutingError, match="older than generation 4"):
            ring.routing.apply(snap(ring.plan, 3))

        ring.set_link_carrier("b--c", up=True)
        assert ring.routing.apply(snap(ring.plan, 5)) == \
            {"routes_changed": 8, "nodes_touched": 4}
        assert ring.ttl("a", "d") == 62
    finally:
        monitor.close()


@pytest.mark.root
@pytest.mark.ovs
def test_down_node_is_routed_around_and_unreachable_fails_at_once(ring: Ring) -> None:
    ring.routing.apply(snap(ring.plan, 1))
    assert ring.ttl("a", "c") == 63
    ring.routing.apply(snap(ring.plan, 2, down_nodes=("b",)))
    shown = ring.ip_routes("a")
    assert f"unreachable {ring.ip('b')} proto static" in shown, shown
    d0 = ring.plan.node("a").data_ifname
    assert f"{ring.ip('c')} via {ring.ip('d')} dev {d0} proto static" in shown, shown
    assert ring.ttl("a", "c") == 63  # now through d

    rc, out, elapsed_s = ring.ping("a", "b", wait_s=5)
    assert rc != 0
    assert re.search(r"unreachable|no route to host", out, re.IGNORECASE), out
    assert elapsed_s < 2.5, f"took {elapsed_s:.1f} s: looks like a timeout, not a refusal"
    # b itself has no route left (its own address excepted) and cannot reach anyone
    assert [r for r in ring.routing.routes() if r["node"] == "b" and r["hops"] > 0] == []
    rc, out, _ = ring.ping("b", "c", wait_s=5)
    assert rc != 0 and re.search(r"unreachable|no route to host", out, re.IGNORECASE), out


def _probe_static_run(prep, checks: dict[str, object]) -> None:
    """Beside hold(): ping two ISLs away, read TTLs, the routes in a node and `status`."""
    import json as _json

    from testbed.errors import TestbedError
    from testbed.lifecycle.control import request

    from .test_up_down import wait_for

    try:
        wait_for(prep.run_dir.status, 60)
        state = _json.loads(prep.run_dir.state.read_text())
        nodes = {n["name"]: n for n in state["plan"]["nodes"]}
        a, far = nodes["walker-p0-s0"], nodes["walker-p0-s2"]
        out = subprocess.run(["ip", "netns", "exec", a["netns"], "ping", "-n", "-c", "4", "-i",
                              "0.2", "-W", "2", far["data_ip"]], capture_output=True, text=True,
                             timeout=30).stdout
        checks["ttls"] = [int(x) for x in re.findall(r"ttl=(\d+)", out)]
        checks["rtts"] = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
        checks["kernel_routes"] = subprocess.run(
            ["ip", "-n", a["netns"], "route", "show", "proto", "static"],
            capture_output=True, text=True, timeout=10).stdout
        live = request(prep.run_dir.path / "control.sock", {"op": "status"})
        checks["route"] = next(r for r in live["routes"]["routes"]
                               if r["node"] == a["name"] and r["ipv4_dst"] == far["data_ip"])
        try:
            request(prep.run_dir.path / "control.sock", {"op": "restart-controller"})
        except TestbedError as exc:
            checks["restart_refused"] = str(exc)
    except BaseException as exc:  # noqa: BLE001 - reported by the test in the main thread
        checks["error"] = exc


@pytest.mark.ovs
def test_a_whole_run_with_static_routing(small_scenario) -> None:
    """`backend.routing: static`: no controller; nodes forward along the same shortest-delay
    paths, so a reply two ISLs away arrives with its TTL decremented once (one router between)."""
    import threading

    from testbed.lifecycle.network import run_prefix
    from testbed.lifecycle.session import hold, prepare

    from .conftest import leftovers

    path = small_scenario(duration=20, speed=1.0)
    path.write_text(path.read_text() + "backend: {kind: netns, routing: static}\n")
    prep = prepare(path)
    checks: dict[str, object] = {}
    prober = threading.Thread(target=_probe_static_run, args=(prep, checks))
    prober.start()
    held = hold(prep, report=lambda m: None)
    prober.join(timeout=60)
    assert "error" not in checks, checks.get("error")
    assert len(checks["rtts"]) >= 3, "ping across two ISLs lost packets"
    assert checks["route"]["hops"] == 2
    assert set(checks["ttls"]) == {63}, "the one node between them forwards (64 - 1)"
    assert min(checks["rtts"]) >= 2 * checks["route"]["delay_us"] / 1000 - 0.5
    assert "proto static" in checks["kernel_routes"] or "via" in checks["kernel_routes"]
    assert "no controller" in checks.get("restart_refused", ""), "restart must be refused"
    assert not (prep.run_dir.path / "logs" / "controller.log").exists()
    assert held.teardown is not None and held.teardown.ok
    assert held.route_changes is not None and not held.route_changes["errors"]
    assert leftovers(run_prefix(prep.scenario.name)) == {"netns": [], "links": [],
                                                           "bridges": []}
