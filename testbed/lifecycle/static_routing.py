"""Routing left to the nodes: per-snapshot static /32 routes in every namespace (`routing: static`).

Owns the static mode's data plane: the forwarding sysctls inside each node, fixed destination-MAC
flows on each node's bridge (own MAC to the data port, each neighbour's MAC to that link's port,
nothing else), and the kernel routes that follow each snapshot. Paths are the controller's own
shortest-delay choice (`controller.routing.compute_routes`), so both modes route alike; only
where the decision is enforced differs. Does not create nodes, bridges or links (backends and
fabric) and records nothing in the ledger: routes and sysctls live in the namespaces and flows in
the bridges, and go with them at `down`.

How a packet crosses: node X sends to D with `D/32 via N dev <data if>`; the static ARP entry
gives N's MAC, X's bridge sends that MAC out the X--N link, N's bridge hands it to N's data port,
N's kernel forwards it out the same interface toward its own next hop. Each forwarding node
decrements the TTL, exactly as routers would.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pyroute2 import IPBatch
from pyroute2.netlink import NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST

from controller.model import RouteTable, Snapshot
from controller.routing import Routes, compute_routes, route_table
from testbed.errors import TestbedError
from testbed.fabric.addressing import AddressPlan, NodeAddress
from testbed.fabric.netlink import (
    NetlinkBatchError,
    ifindex,
    in_netns,
    raw_rtnl_socket,
    send_batch,
)
from testbed.sysrun import CommandError, Runner

RTPROT_STATIC = 4
"""Protocol tag of the routes this module programs (`ip route` shows `proto static`)."""
RT_TABLE_MAIN = 254
FLOW_PRIORITY = 100
NLMSG_HDR_BYTES = 16
RTMSG_BYTES = 12
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
OVS_HINT = "install Open vSwitch (Debian/Ubuntu: apt-get install openvswitch-switch)"


class StaticRoutingError(TestbedError):
    """Static routing could not be set up or applied (names the node, bridge or snapshot)."""


@dataclass(frozen=True)
class KernelRoute:
    """What one node's kernel holds for one destination /32 (the unit of diffing)."""

    kind: Literal["via", "link", "unreachable"]
    """via: through a neighbour; link: the destination is a neighbour; unreachable: no path."""
    gateway_ip: str | None = None


class StaticRouting:
    """Shortest-delay routes as kernel routes inside the nodes, reprogrammed per snapshot.

    Usage (bridges made with `FabricConfig(controller_port=None)`):
        sr = StaticRouting(plan, runner)
        sr.setup()                       # once, nodes and links exist
        sr.apply(snapshot)               # per topology change; returns change counts
        sr.routes()                      # RouteEntry-shaped dicts for `testbed status`

    `apply` may run on another thread than `routes` (a lock guards the state).
    """

    def __init__(self, plan: AddressPlan, runner: Runner) -> None:
        self.plan = plan
        self.runner = runner
        self.generation = 0
        """Generation of the last snapshot fully in effect (0: none yet)."""
        self.last_apply_ms: float | None = None
        self._lock = threading.Lock()
        self._data_index: dict[str, int] = {}
        self._programmed: dict[str, dict[str, KernelRoute]] = {}
        self._table: RouteTable | None = None
        self._ip_of = {n.name: n.data_ip for n in plan.nodes}
        self._templates: RouteTemplates | None = None

    # --- setup -----------------------------------------------------------------------------------

    def setup(self) -> None:
        """Forwarding sysctls in every node, then the MAC flows on every bridge.

        Raises StaticRoutingError naming the node or bridge that failed."""
        for n in self.plan.nodes:
            self._node_sysctls(n)
        self.runner.require("ovs-ofctl", hint=OVS_HINT)
        for n in self.plan.nodes:
            flows = "\n".join(self.bridge_flows(n.name)) + "\n"
            try:  # replace-flows: the table ends up exactly as listed, also on a second setup
                self.runner.run(["ovs-ofctl", "-O", "OpenFlow13", "replace-flows", n.bridge,
                                 "-"], input=flows, timeout_s=60)
            except CommandError as exc:
                raise StaticRoutingError(f"node {n.name}: flows on bridge {n.bridge}: "
                                         f"{exc}") from exc

    def _node_sysctls(self, n: NodeAddress) -> None:
        """Forward, and never redirect: forwarding goes in and out of the one data interface,
        which a kernel with default settings answers with ICMP redirects (and would obey)."""
        idx = ifindex(n.data_ifname, n.netns)
        if idx is None:
            raise StaticRoutingError(f"node {n.name}: data interface {n.data_ifname} not in "
                                     f"namespace {n.netns}; create the nodes first")
        self._data_index[n.name] = idx
        values = {"net/ipv4/ip_forward": "1"}
        for conf in ("all", "default", n.data_ifname):
            values |= {f"net/ipv4/conf/{conf}/send_redirects": "0",
                       f"net/ipv4/conf/{conf}/accept_redirects": "0",
                       f"net/ipv4/conf/{conf}/rp_filter": "0"}
        try:
            with in_netns(n.netns):
                for key, value in values.items():
                    (Path("/proc/sys") / key).write_text(value)
        except (OSError, TestbedError) as exc:
            raise StaticRoutingError(f"node {n.name} ({n.netns}): forwarding sysctls: "
                                     f"{exc}") from exc

    def bridge_flows(self, node: str) -> list[str]:
        """The OpenFlow rules of `node`'s bridge (ovs-ofctl syntax): by destination MAC only.

        Nothing floods: the static ARP tables make broadcast unnecessary, and a ring or grid
        of bridges would loop it."""
        n = self.plan.node(node)
        mac_of = {x.name: x.data_mac for x in self.plan.nodes}
        flows = [f"priority={FLOW_PRIORITY},dl_dst={n.data_mac},actions=output:{n.data_ofport}"]
        for link in self.plan.links:
            for here, there in ((link.a, link.b), (link.b, link.a)):
                if here.node == node:
                    flows.append(f"priority={FLOW_PRIORITY},dl_dst={mac_of[there.node]},"
                                 f"actions=output:{here.ofport}")
        flows.append("priority=0,actions=drop")
        return flows

    # --- routes ----------------------------------------------------------------------------------

    def desired(self, snapshot: Snapshot) -> tuple[dict[str, dict[str, KernelRoute]], Routes]:
        """Per node, the kernel route for every other node's data address (pure).

        Raises StaticRoutingError when the snapshot does not describe this plan's nodes."""
        self._check(snapshot)
        routes = compute_routes(snapshot)
        name_of = {s.dpid: s.name for s in snapshot.switches}
        out: dict[str, dict[str, KernelRoute]] = {}
        for s in snapshot.switches:
            table = routes.get(s.dpid, {})
            mine: dict[str, KernelRoute] = {}
            for dst_node, dst_ip in self._ip_of.items():
                if dst_node == s.name:
                    continue
                hop = table.get(dst_ip)
                if hop is None or hop.next_dpid is None:
                    mine[dst_ip] = KernelRoute("unreachable")
                elif hop.hops == 1:
                    mine[dst_ip] = KernelRoute("link")
                else:
                    mine[dst_ip] = KernelRoute("via", self._ip_of[name_of[hop.next_dpid]])
            out[s.name] = mine
        return out, routes

    def _check(self, snapshot: Snapshot) -> None:
        names = {s.name for s in snapshot.switches}
        missing = sorted(set(self._ip_of) - names)
        extra = sorted(names - set(self._ip_of))
        if missing or extra:
            raise StaticRoutingError(
                f"snapshot generation {snapshot.generation}: switches {sorted(names)[:5]} do not "
                f"match the plan of run {self.plan.prefix} (missing {missing[:5]}, unknown "
                f"{extra[:5]}); expected one switch per node")
        for host in snapshot.hosts:
            if self._ip_of.get(host.node) != str(host.ip):
                raise StaticRoutingError(
                    f"snapshot generation {snapshot.generation}: host {host.ip} on node "
                    f"{host.node}, expected the plan's data address "
                    f"{self._ip_of.get(host.node)}")

    def apply(self, snapshot: Snapshot) -> dict[str, int]:
        """Program the routes of `snapshot` that differ from what the nodes hold; returns once
        the kernels hold them: {"routes_changed": n, "nodes_touched": m}.

        One netlink batch (one sendmsg) per touched node. Raises StaticRoutingError for a
        snapshot older than the one in effect, before `setup`, or naming the nodes whose
        batch failed (those are fully reprogrammed by the next apply)."""
        if not self._data_index:
            raise StaticRoutingError("static routing: call setup() before apply()")
        t0 = time.monotonic()
        with self._lock:
            if self._templates is None:
                self._templates = RouteTemplates()
            if snapshot.generation < self.generation:
                raise StaticRoutingError(f"snapshot generation {snapshot.generation}: older "
                                         f"than generation {self.generation} in effect")
            want, routes = self.desired(snapshot)
            changed = 0
            touched = 0
            failures: list[str] = []
            for node, table in want.items():
                held = self._programmed.get(node, {})
                diff = [(dst, r) for dst, r in table.items() if held.get(dst) != r]
                if not diff:
                    continue
                touched += 1
                changed += len(diff)
                try:
                    self._program(self._templates, self.plan.node(node), diff)
                except (NetlinkBatchError, OSError, TestbedError) as exc:
                    self._programmed.pop(node, None)  # unknown now: redo all next time
                    failures.append(f"node {node}: {exc}")
                    continue
                self._programmed[node] = dict(table)
            if failures:
                raise StaticRoutingError(
                    f"snapshot generation {snapshot.generation}: routes failed on "
                    f"{len(failures)} node(s): " + "; ".join(failures[:5]))
            self._table = route_table(snapshot, routes)
            self.generation = snapshot.generation
            self.last_apply_ms = (time.monotonic() - t0) * 1e3
        return {"routes_changed": changed, "nodes_touched": touched}

    def _program(self, templates: RouteTemplates, n: NodeAddress,
                 diff: Sequence[tuple[str, KernelRoute]]) -> None:
        """All of one node's changed routes in one batch (one sendmsg per 32 KiB)."""
        buf, starts = templates.encode(diff, self._data_index[n.name])
        labels = [f"node {n.name}: route {dst}/32 {r.kind} {r.gateway_ip or ''}".rstrip()
                  for dst, r in diff]
        with raw_rtnl_socket(n.netns) as sock:
            send_batch(sock, buf, starts, labels)

    def routes(self) -> list[dict[str, Any]]:
        """The routes in effect, shaped like the controller's `RouteEntry` (node, ipv4_dst,
        out_port on the node's bridge, next_dpid, hops, delay_us); unreachable destinations are
        absent, as in the controller's table. Empty before the first apply."""
        with self._lock:
            table = self._table
        return [] if table is None else [e.model_dump(mode="json") for e in table.routes]


class RouteTemplates:
    """RTM_NEWROUTE (create|replace) messages for /32 routes, encoded by pyroute2 once per kind
    and patched per route, as the static ARP tables are: encoding every route through pyroute2
    costs ~0.5 ms, patching a template a few microseconds (a thousand-node handover touches
    thousands of routes)."""

    _PLACEHOLDER = {"dst": "10.0.0.1", "gateway": "10.0.0.2", "oif": 1}

    def __init__(self) -> None:
        self._kinds: dict[str, tuple[bytes, dict[int, int]]] = {}
        ipb = IPBatch()
        try:
            for kind in ("via", "link", "unreachable"):
                route = KernelRoute(kind, self._PLACEHOLDER["gateway"])  # type: ignore[arg-type]
                data = bytearray(_encode_route(ipb, self._PLACEHOLDER["dst"], route,
                                               self._PLACEHOLDER["oif"]))
                # only failures answer (send_batch): no ACK, no ECHO
                struct.pack_into("<H", data, 6, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE)
                self._kinds[kind] = (bytes(data), _attr_offsets(data))
        finally:
            ipb.close()

    def encode(self, routes: Sequence[tuple[str, KernelRoute]], oif: int
               ) -> tuple[bytearray, list[int]]:
        """The requests for `routes` [(dst IPv4, route)] on interface `oif`, sequence numbers
        1..n, and each one's offset (as `send_batch` wants them)."""
        buf = bytearray()
        starts: list[int] = []
        for seq, (dst, route) in enumerate(routes, start=1):
            template, offsets = self._kinds[route.kind]
            pos = len(buf)
            starts.append(pos)
            buf += template
            struct.pack_into("<I", buf, pos + 8, seq)
            buf[pos + offsets[RTA_DST]:pos + offsets[RTA_DST] + 4] = socket.inet_aton(dst)
            if RTA_OIF in offsets:
                struct.pack_into("<i", buf, pos + offsets[RTA_OIF], oif)
            if RTA_GATEWAY in offsets:
                if route.gateway_ip is None:
                    raise StaticRoutingError(f"route {dst}/32 via: no gateway address")
                gw = offsets[RTA_GATEWAY]
                buf[pos + gw:pos + gw + 4] = socket.inet_aton(route.gateway_ip)
        return buf, starts


def _attr_offsets(msg: bytes | bytearray) -> dict[int, int]:
    """Attribute type -> offset of its payload in one rtmsg message."""
    length = struct.unpack_from("<I", msg, 0)[0]
    out: dict[int, int] = {}
    pos = NLMSG_HDR_BYTES + RTMSG_BYTES
    while pos + 4 <= length:
        alen, atype = struct.unpack_from("<HH", msg, pos)
        if alen < 4:
            break
        out[atype] = pos + 4
        pos += (alen + 3) & ~3
    return out


def _encode_route(ipb: IPBatch, dst_ip: str, route: KernelRoute, oif: int) -> bytes:
    """One RTM_NEWROUTE (create|replace) for `dst_ip`/32, encoded by pyroute2, not sent."""
    kwargs: dict[str, Any] = {"dst": dst_ip, "dst_len": 32, "table": RT_TABLE_MAIN,
                              "proto": RTPROT_STATIC}
    if route.kind == "unreachable":
        kwargs["type"] = "unreachable"
    elif route.kind == "link":
        kwargs |= {"oif": oif, "scope": "link"}
    else:
        kwargs |= {"oif": oif, "gateway": route.gateway_ip}
    ipb.route("replace", **kwargs)
    data = bytes(ipb.asyncore.batch)
    ipb.reset()
    return data
