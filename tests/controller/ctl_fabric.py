"""A small OVS fabric for the controller's tests: one netdev bridge per node, veth links.

Mirrors the testbed's fabric model (see controller/README.md): bridge per node with
fail_mode=secure, OpenFlow13 and the controller at tcp:127.0.0.1:<port>; the node's host
interface is an OVS internal port moved into the node's namespace with an address in 10.128/16,
a fixed MAC and static neighbours (no ARP); a link is a veth pair between two bridges. Every
resource carries the test's prefix; `teardown` removes them and `leftovers` lists any survivor.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pyroute2 import IPRoute, NetlinkError, NetNS, netns

from controller import api
from controller.model import Host, Link, PortRef, Snapshot, Switch
from controller.process import ControllerProcess

T = TypeVar("T")
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
HOST_PORT = 1
LINK_PORT_BASE = 10


def run(argv: list[str], timeout_s: float = 30.0) -> str:
    """Run a command (argv list); raise with its stderr when it fails."""
    shown = " ".join(argv[:6]) + (" ..." if len(argv) > 6 else "")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{shown}: no answer within {timeout_s} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{shown}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ovs_running() -> bool:
    if shutil.which("ovs-vsctl") is None:
        return False
    proc = subprocess.run(
        ["ovs-vsctl", "--timeout=5", "show"], capture_output=True, text=True, timeout=10
    )
    return proc.returncode == 0


def ensure_ovs() -> str | None:
    """Start ovsdb-server and ovs-vswitchd if needed (left running); returns a skip reason."""
    if shutil.which("ovs-vsctl") is None or not Path(OVS_CTL).exists():
        return "Open vSwitch not installed (ovs-vsctl / ovs-ctl missing)"
    if ovs_running():
        return None
    proc = subprocess.run(
        [OVS_CTL, "--system-id=random", "start"], capture_output=True, text=True, timeout=60
    )
    if not ovs_running():
        return f"could not start Open vSwitch: {proc.stdout[-300:]} {proc.stderr[-300:]}"
    return None


@dataclass
class Node:
    index: int
    dpid: int
    bridge: str
    namespace: str
    host_if: str
    ip: str
    mac: str


@dataclass
class Fabric:
    """Bridges, namespaces and veth links named `<prefix>...`, attached to one controller."""

    prefix: str
    of_port: int
    nodes: list[Node] = field(default_factory=list)
    links: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)
    """(i, j) with i < j -> (veth on i's bridge, veth on j's bridge)."""
    control: tuple[str, str] | None = None
    """(namespace, destination address) of the control path, once added."""

    # ----- building ------------------------------------------------------------------------

    def add_nodes(self, count: int, *, with_hosts: bool = True) -> None:
        start = len(self.nodes)
        cmd = ["ovs-vsctl", "--timeout=30"]
        for i in range(start, start + count):
            node = Node(
                index=i,
                dpid=i + 1,
                bridge=f"{self.prefix}b{i}",
                namespace=f"{self.prefix}n{i}",
                host_if=f"{self.prefix}h{i}",
                ip=str(ipaddress.IPv4Address("10.128.0.1") + i),
                mac=f"02:00:00:00:{(i + 1) >> 8:02x}:{(i + 1) & 0xFF:02x}",
            )
            self.nodes.append(node)
            br = node.bridge
            cmd += [
                "--",
                "add-br",
                br,
                "--",
                "set",
                "bridge",
                br,
                "datapath_type=netdev",
                "fail_mode=secure",
                "protocols=OpenFlow13",
                f"other-config:datapath-id={node.dpid:016x}",
                "other-config:disable-in-band=true",
                "--",
                f"--id=@c{i}",
                "create",
                "controller",
                f'target="tcp:127.0.0.1:{self.of_port}"',
                "max_backoff=1000",
                "--",
                "set",
                "bridge",
                br,
                f"controller=@c{i}",
            ]
            if with_hosts:
                cmd += [
                    "--",
                    "add-port",
                    br,
                    node.host_if,
                    "--",
                    "set",
                    "interface",
                    node.host_if,
                    "type=internal",
                    f"ofport_request={HOST_PORT}",
                ]
        run(cmd)
        if with_hosts:
            for node in self.nodes[start:]:
                self._setup_host(node)

    def _setup_host(self, node: Node) -> None:
        netns.create(node.namespace)
        with IPRoute() as ipr:
            idx = _wait_ifindex(ipr, node.host_if)
            ipr.link("set", index=idx, net_ns_fd=node.namespace)
        with NetNS(node.namespace) as ns:
            lo = ns.link_lookup(ifname="lo")[0]
            ns.link("set", index=lo, state="up")
            idx = ns.link_lookup(ifname=node.host_if)[0]
            ns.link("set", index=idx, address=node.mac)
            ns.addr("add", index=idx, address=node.ip, prefixlen=16)
            ns.link("set", index=idx, state="up")

    def set_link_state(self, i: int, j: int, state: str) -> None:
        """Bring both veths of link i-j 'up' or 'down' (a physical cut)."""
        with IPRoute() as ipr:
            for name in self.links[tuple(sorted((i, j)))]:
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state=state)

    def set_neighbours(self) -> None:
        """Static ARP entries: every host knows every other host's MAC (no broadcast needed)."""
        for node in self.nodes:
            with NetNS(node.namespace) as ns:
                idx = ns.link_lookup(ifname=node.host_if)[0]
                for other in self.nodes:
                    if other is not node:
                        ns.neigh(
                            "replace",
                            dst=other.ip,
                            lladdr=other.mac,
                            ifindex=idx,
                            state=0x80,  # NUD_PERMANENT
                        )

    def add_link(self, i: int, j: int) -> None:
        """A veth pair between node i's and node j's bridges on ports 10+j and 10+i."""
        a, b = sorted((i, j))
        va, vb = f"{self.prefix}v{a}x{b}", f"{self.prefix}v{b}x{a}"
        with IPRoute() as ipr:
            ipr.link("add", ifname=va, kind="veth", peer=vb)
            for name in (va, vb):
                # no IPv6 chatter from the veth itself: its tx counter counts forwarded traffic
                Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        self.links[(a, b)] = (va, vb)
        run(
            [
                "ovs-vsctl",
                "--timeout=30",
                "--",
                "add-port",
                self.nodes[a].bridge,
                va,
                "--",
                "set",
                "interface",
                va,
                f"ofport_request={self.port(a, b)}",
                "--",
                "add-port",
                self.nodes[b].bridge,
                vb,
                "--",
                "set",
                "interface",
                vb,
                f"ofport_request={self.port(b, a)}",
            ]
        )

    @staticmethod
    def port(i: int, j: int) -> int:
        """Port on node i's bridge of the link toward node j."""
        return LINK_PORT_BASE + j

    def snapshot(
        self,
        generation: int,
        *,
        weights_us: dict[tuple[int, int], float] | None = None,
        down: set[tuple[int, int]] | frozenset[tuple[int, int]] = frozenset(),
        at_ns: int | None = None,
        label: str | None = None,
    ) -> Snapshot:
        """The topology as the orchestrator would push it (default weight 1000 µs)."""
        weights_us = weights_us or {}
        links = []
        for a, b in sorted(self.links):
            links.append(
                Link(
                    a=PortRef(dpid=self.nodes[a].dpid, port_no=self.port(a, b)),
                    b=PortRef(dpid=self.nodes[b].dpid, port_no=self.port(b, a)),
                    up=(a, b) not in down and (b, a) not in down,
                    weight_us=weights_us.get((a, b), weights_us.get((b, a), 1000.0)),
                )
            )
        return Snapshot(
            generation=generation,
            switches=tuple(Switch(dpid=n.dpid, name=f"node{n.index}") for n in self.nodes),
            hosts=tuple(
                Host(node=f"node{n.index}", ip=n.ip, mac=n.mac, port_no=HOST_PORT)
                for n in self.nodes
            ),
            links=tuple(links),
            at_ns=at_ns,
            label=label,
        )

    # ----- observing -----------------------------------------------------------------------

    def dump_flows(self, i: int) -> list[dict[str, str]]:
        """Flows of node i's bridge as ovs-ofctl reports them (independent of the controller)."""
        out = run(
            ["ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows", self.nodes[i].bridge]
        )
        return [_parse_flow(line) for line in out.splitlines() if "priority" in line]

    def flow_packets(self, i: int, ip: str) -> int:
        """n_packets of node i's route flow for destination `ip` (0 if there is none).

        The userspace datapath hands packet counts to OpenFlow flows in its revalidation
        rounds; waiting for one round makes the counters current.
        """
        run(["ovs-appctl", "revalidator/wait"])
        out = run(
            ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", self.nodes[i].bridge, f"ip,nw_dst={ip}"]
        )
        total = 0
        for line in out.splitlines():
            m = re.search(r"n_packets=(\d+)", line)
            if m:
                total += int(m.group(1))
        return total

    def veth_tx_packets(self, i: int, j: int) -> int:
        """Packets the kernel counted leaving node i's bridge toward node j (veth tx)."""
        a, b = sorted((i, j))
        va, vb = self.links[(a, b)]
        name = va if i == a else vb
        return int(Path(f"/sys/class/net/{name}/statistics/tx_packets").read_text())

    def add_control_path(self) -> None:
        """Two namespaces on a plain L2 bridge with no controller: a path whose losses can only
        come from the OVS daemon itself (the control of loss measurements)."""
        br = f"{self.prefix}bc"
        ports = [f"{self.prefix}c0", f"{self.prefix}c1"]
        cmd = [
            "ovs-vsctl",
            "--timeout=30",
            "--",
            "add-br",
            br,
            "--",
            "set",
            "bridge",
            br,
            "datapath_type=netdev",
            "fail_mode=standalone",
        ]
        for port in ports:
            cmd += ["--", "add-port", br, port, "--", "set", "interface", port, "type=internal"]
        run(cmd)  # fmt: skip
        for k, port in enumerate(ports):
            netns.create(port)  # the namespace is named like its port
            with IPRoute() as ipr:
                ipr.link("set", index=_wait_ifindex(ipr, port), net_ns_fd=port)
            with NetNS(port) as ns:
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                idx = ns.link_lookup(ifname=port)[0]
                ns.addr("add", index=idx, address=f"10.129.0.{k + 1}", prefixlen=24)
                ns.link("set", index=idx, state="up")
        self.control = (ports[0], "10.129.0.2")

    @staticmethod
    def _ping_argv(
        namespace: str, ip: str, count: int, interval_s: float, linger_s: float
    ) -> list[str]:
        # -w: wait for all `count` replies up to a deadline, so a reply delayed (not lost) by a
        # busy switch still counts; -D: timestamp every reply.
        deadline_s = int(count * interval_s + linger_s) + 1
        return [
            "ip", "netns", "exec", namespace,
            "ping", "-n", "-D", "-c", str(count), "-i", str(interval_s), "-w", str(deadline_s),
            ip,
        ]  # fmt: skip

    def ping(
        self, src: int, dst: int, *, count: int, interval_s: float, linger_s: float = 10.0
    ) -> tuple[int, int]:
        """Ping from node src's namespace to node dst; returns (transmitted, received).

        Replies arriving up to `linger_s` after the last request still count.
        """
        argv = self._ping_argv(
            self.nodes[src].namespace, self.nodes[dst].ip, count, interval_s, linger_s
        )
        timeout_s = count * interval_s + linger_s + 30
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        return parse_ping(proc.stdout)

    def start_ping(
        self,
        src: int | None,
        dst: int | None,
        *,
        count: int,
        interval_s: float,
        linger_s: float = 10.0,
    ) -> subprocess.Popen[str]:
        """A continuous ping printing every reply (read it with `finish_ping`).

        `src=None, dst=None` pings across the control path (see `add_control_path`).
        """
        if src is None or dst is None:
            if self.control is None:
                raise RuntimeError("no control path: call add_control_path() first")
            namespace, ip = self.control
        else:
            namespace, ip = self.nodes[src].namespace, self.nodes[dst].ip
        argv = self._ping_argv(namespace, ip, count, interval_s, linger_s)
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # ----- teardown ------------------------------------------------------------------------

    def teardown(self) -> None:
        """Remove every bridge, veth and namespace with this prefix (also half-built ones)."""
        bridges = [
            b
            for b in run(["ovs-vsctl", "--timeout=30", "list-br"]).split()
            if b.startswith(self.prefix)
        ]
        if bridges:
            cmd = ["ovs-vsctl", "--timeout=60"]
            for br in bridges:
                cmd += ["--", "--if-exists", "del-br", br]
            run(cmd, timeout_s=120)
        with IPRoute() as ipr:
            for link in ipr.get_links():
                name = link.get_attr("IFLA_IFNAME")
                if name and name.startswith(self.prefix):
                    try:
                        ipr.link("del", index=link["index"])
                    except NetlinkError:  # the peer went with its pair already
                        pass
        for name in netns.listnetns():
            if name.startswith(self.prefix):
                netns.remove(name)

    def leftovers(self) -> list[str]:
        """Bridges, OVS ports, links and namespaces with this prefix that still exist."""
        found = [
            f"bridge {b}"
            for b in run(["ovs-vsctl", "list-br"]).split()
            if b.startswith(self.prefix)
        ]
        ports = run(
            ["ovs-vsctl", "--columns=name", "--format=csv", "--no-headings", "list", "interface"]
        )
        found += [
            f"ovs interface {p}" for p in ports.split() if p.strip('"').startswith(self.prefix)
        ]
        with IPRoute() as ipr:
            found += [
                f"link {link.get_attr('IFLA_IFNAME')}"
                for link in ipr.get_links()
                if (link.get_attr("IFLA_IFNAME") or "").startswith(self.prefix)
            ]
        found += [f"netns {n}" for n in netns.listnetns() if n.startswith(self.prefix)]
        return found


def _wait_ifindex(ipr: IPRoute, name: str, timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = ipr.link_lookup(ifname=name)
        if found:
            return found[0]
        time.sleep(0.02)
    raise RuntimeError(f"interface {name} did not appear within {timeout_s} s")


def _parse_flow(line: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in re.split(r"[ ,]+", line.strip()):
        if "=" in part:
            k, _, v = part.partition("=")
            fields[k] = v
        elif part:
            fields[part] = ""
    return fields


def parse_ping(stdout: str) -> tuple[int, int]:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", stdout)
    if not m:
        raise RuntimeError(f"unexpected ping output: {stdout!r}")
    return int(m.group(1)), int(m.group(2))


@dataclass
class PingResult:
    sent: int
    received: int
    lost_seqs: list[int]
    """icmp_seq numbers without a reply (1-based, as ping numbers them)."""
    reply_at: dict[int, float]
    """icmp_seq -> wall-clock time (time.time()) its reply arrived (ping -D)."""
    interval_s: float

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def lost_at(self, seq: int) -> float | None:
        """When `seq` was due: the last earlier reply's time plus the intervals between."""
        earlier = [s for s in self.reply_at if s < seq]
        if not earlier:
            return None
        last = max(earlier)
        return self.reply_at[last] + (seq - last) * self.interval_s

    def describe(self, t0: float) -> str:
        """Losses with their times in seconds after `t0` (a time.time() value)."""
        parts = []
        for seq in self.lost_seqs[:20]:
            at = self.lost_at(seq)
            parts.append(f"#{seq}" + (f"@{at - t0:.2f}s" if at is not None else ""))
        more = " ..." if len(self.lost_seqs) > 20 else ""
        return f"{self.lost} of {self.sent} lost" + (f": {' '.join(parts)}{more}" if parts else "")


def finish_ping(
    proc: subprocess.Popen[str], interval_s: float, timeout_s: float = 60.0
) -> PingResult:
    """Wait for a ping from `start_ping`; which sequence numbers got no reply, and when."""
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    sent, received = parse_ping(out)
    reply_at = {
        int(m.group(2)): float(m.group(1))
        for m in re.finditer(r"\[(\d+\.\d+)\][^\n]*icmp_seq=(\d+)", out)
    }
    lost = sorted(set(range(1, sent + 1)) - set(reply_at))
    return PingResult(sent, received, lost, reply_at, interval_s)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Ring:
    """A fabric plus its controller; `push` numbers generations itself."""

    fabric: Fabric
    ctl: ControllerProcess
    generation: int = 0

    @property
    def endpoint(self) -> str:
        return self.ctl.endpoint

    def push(self, **kwargs: Any) -> int:
        """Push the next generation of the fabric's snapshot, wait until every switch holds it."""
        self.generation += 1
        api.push_snapshot(self.endpoint, self.fabric.snapshot(self.generation, **kwargs))
        api.wait_applied(self.endpoint, self.generation, timeout_s=20.0)
        return self.generation


def ping_during(
    fabric: Fabric,
    action: Callable[[float], T],
    *,
    measured: tuple[int, int],
    count: int,
    interval_s: float,
    linger_s: float = 10.0,
    attempts: int = 3,
) -> tuple[PingResult, T, float]:
    """Run `action(t0)` while two pings run: `measured` across the change and one across the
    fabric's control path; returns (measured result, action's value, t0).

    The OVS daemon is shared: when another process reconfigures it heavily its main thread
    stalls for seconds and every path loses packets. A lossy control ping marks such an
    attempt as unusable; after `attempts` of them the test is skipped, naming the stall.
    """
    stalls = []
    for _ in range(attempts):
        t0 = time.time()
        pingers = [
            fabric.start_ping(*pair, count=count, interval_s=interval_s, linger_s=linger_s)
            for pair in (measured, (None, None))
        ]
        try:
            value = action(t0)
        finally:
            result, control_result = (finish_ping(p, interval_s) for p in pingers)
        if control_result.lost == 0:
            return result, value, t0
        stalls.append(control_result.describe(t0))
    pytest.skip(
        f"shared Open vSwitch stalled in all {attempts} attempts (a ping across a bridge without "
        f"controller lost packets: {stalls}); another process is loading the daemon"
    )
