"""The addressing plan of one run: names, addresses and port numbers derived from the node list.

Pure (no system access): given the run prefix, the nodes and the links, it fixes every name the
backends and the fabric will create, so creating and describing stay apart (STYLE §1) and the
controller can be told the same plan. Per node: network namespace, OVS bridge and datapath id,
data-plane interface (an OVS internal port moved into the namespace) with IPv4 address and MAC,
management veth and address. Per link: the two OVS ports (veth ends) with their OpenFlow port
numbers and, for userspace-shaped links, the two shaper ends.

Interface names must fit IFNAMSIZ (15 characters), so they are built from the prefix and
indices (`<prefix>b<i>`, `<prefix>l<k>a`) and `owner_of(ifname)` maps them back.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from testbed.errors import InputError

IFNAMSIZ_CHARS = 15
DATA_OFPORT = 1
MGMT_NS_IFNAME = "mgmt0"
DEFAULT_DATA_SUBNET = "10.128.0.0/16"
DEFAULT_MGMT_SUBNET = "172.30.0.0/16"
AUTO_MGMT_SUBNET = "auto"
# `backend.mgmt_subnet: auto` takes the first of these that no address or route of the host
# overlaps, so two runs on one host (or a lab network in 172.30/16) do not collide.
MGMT_SUBNET_CANDIDATES = tuple(f"172.{b}.0.0/16" for b in range(30, 15, -1)) + tuple(
    f"10.{b}.0.0/16" for b in range(255, 199, -1))
MAX_MGMT_BRIDGE_PORTS = 1023  # Linux bridge limit (BR_MAX_PORTS 1024, port 0 reserved)
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")

Role = Literal["satellite", "ground"]
ShaperKind = Literal["kernel", "userspace"]


def pick_mgmt_subnet(spec: str, in_use: Iterable[ipaddress.IPv4Network]) -> str:
    """The management subnet a run uses: `spec` itself when it is a CIDR that overlaps none of
    `in_use` (the host's addresses and routes), or with `auto` the first free candidate.
    Raises InputError naming the overlap, or saying that every candidate is taken."""
    used = [n for n in in_use if not n.is_loopback and n.prefixlen > 0]
    if spec != AUTO_MGMT_SUBNET:
        net = _subnet(spec, "backend.mgmt_subnet")
        clash = next((u for u in used if net.overlaps(u)), None)
        if clash is not None:
            raise InputError(f"backend.mgmt_subnet {spec} overlaps {clash}, already on this "
                             "host (another run's management network, or a lab network); "
                             "choose a free subnet or `auto`", field="backend.mgmt_subnet")
        return str(net)
    for candidate in MGMT_SUBNET_CANDIDATES:
        net = ipaddress.IPv4Network(candidate)
        if not any(net.overlaps(u) for u in used):
            return candidate
    raise InputError(f"backend.mgmt_subnet auto: all {len(MGMT_SUBNET_CANDIDATES)} candidate "
                     "subnets (172.16-30.0.0/16, 10.200-255.0.0/16) overlap this host's "
                     "addresses or routes; name a free one", field="backend.mgmt_subnet")


@dataclass(frozen=True)
class NodeSpec:
    """A node as the scenario names it."""

    name: str
    role: Role = "satellite"


@dataclass(frozen=True)
class LinkSpec:
    """A link between nodes `a` and `b`; `shaper` picks plain veth (kernel htb on its ends) or
    two veth pairs with a userspace shaper process between them."""

    a: str
    b: str
    shaper: ShaperKind = "kernel"


@dataclass(frozen=True)
class NodeAddress:
    index: int
    name: str
    role: Role
    netns: str
    bridge: str
    dpid: int
    data_ifname: str
    data_ip: str
    data_mac: str
    data_prefixlen: int
    mgmt_ip: str
    mgmt_prefixlen: int
    mgmt_root_ifname: str
    mgmt_ns_ifname: str = MGMT_NS_IFNAME
    data_ofport: int = DATA_OFPORT

    @property
    def dpid_hex(self) -> str:
        """The datapath id as OVS's other-config:datapath-id wants it (16 hex digits)."""
        return f"{self.dpid:016x}"


@dataclass(frozen=True)
class LinkEnd:
    node: str
    bridge: str
    ifname: str
    ofport: int


@dataclass(frozen=True)
class LinkAddress:
    index: int
    name: str  # "<a>--<b>", the key shapers and the controller use
    a: LinkEnd
    b: LinkEnd
    shaper: ShaperKind
    shaper_ifnames: tuple[str, str] | None  # (a-side, b-side) ends the userspace shaper bridges


@dataclass(frozen=True)
class AddressPlan:
    """Everything the fabric and backends create for one run, by name."""

    prefix: str
    data_subnet: str
    mgmt_subnet: str
    mgmt_bridge: str
    mgmt_gateway_ip: str
    nodes: tuple[NodeAddress, ...]
    links: tuple[LinkAddress, ...]

    @classmethod
    def build(
        cls,
        prefix: str,
        nodes: Sequence[NodeSpec],
        links: Iterable[LinkSpec] = (),
        *,
        data_subnet: str = DEFAULT_DATA_SUBNET,
        mgmt_subnet: str = DEFAULT_MGMT_SUBNET,
    ) -> AddressPlan:
        """Derive the plan. Raises InputError naming the bad prefix, node, link or subnet."""
        if not _PREFIX_RE.match(prefix):
            raise InputError(f"run prefix {prefix!r}: expected 1-8 characters, a lowercase "
                             "letter then lowercase letters or digits", field="prefix")
        data_net = _subnet(data_subnet, "data_subnet")
        mgmt_net = _subnet(mgmt_subnet, "mgmt_subnet")
        names = [n.name for n in nodes]
        seen: set[str] = set()
        for n in names:
            if not n:
                raise InputError("node name is empty, expected a non-empty name", field="nodes")
            if n in seen:
                raise InputError(f"node {n!r} listed twice, expected unique names",
                                 field="nodes")
            seen.add(n)
        if len(nodes) > data_net.num_addresses - 2:
            raise InputError(f"data_subnet {data_subnet} holds {data_net.num_addresses - 2} "
                             f"hosts, expected room for {len(nodes)} nodes", field="data_subnet")
        if len(nodes) > mgmt_net.num_addresses - 3:
            raise InputError(f"mgmt_subnet {mgmt_subnet} holds {mgmt_net.num_addresses - 3} "
                             f"nodes, expected room for {len(nodes)}", field="mgmt_subnet")
        if len(nodes) > MAX_MGMT_BRIDGE_PORTS:
            raise InputError(f"{len(nodes)} nodes, expected at most {MAX_MGMT_BRIDGE_PORTS}: "
                             "the management network is one Linux bridge", field="nodes")
        index = {n: i for i, n in enumerate(names)}
        node_addrs = []
        for i, spec in enumerate(nodes):
            data_ip = data_net.network_address + i + 1
            node_addrs.append(NodeAddress(
                index=i,
                name=spec.name,
                role=spec.role,
                netns=f"{prefix}-n{i}",
                bridge=f"{prefix}b{i}",
                dpid=i + 1,
                data_ifname=f"{prefix}d{i}",
                data_ip=str(data_ip),
                data_mac=_mac_for(data_ip),
                data_prefixlen=data_net.prefixlen,
                mgmt_ip=str(mgmt_net.network_address + i + 2),
                mgmt_prefixlen=mgmt_net.prefixlen,
                mgmt_root_ifname=f"{prefix}m{i}",
            ))
        next_port = [DATA_OFPORT + 1] * len(nodes)
        pairs: set[frozenset[str]] = set()
        link_addrs = []
        for k, link in enumerate(links):
            for end in (link.a, link.b):
                if end not in index:
                    raise InputError(f"link {link.a}--{link.b}: node {end!r} is not in the node "
                                     "list", field="links")
            if link.a == link.b:
                raise InputError(f"link {link.a}--{link.b}: expected two different nodes",
                                 field="links")
            if link.shaper not in ("kernel", "userspace"):
                raise InputError(f"link {link.a}--{link.b}: shaper={link.shaper!r}, expected "
                                 "kernel or userspace", field="links")
            pair = frozenset((link.a, link.b))
            if pair in pairs:
                raise InputError(f"link {link.a}--{link.b} listed twice, expected one link per "
                                 "node pair", field="links")
            pairs.add(pair)
            ia, ib = index[link.a], index[link.b]
            a = LinkEnd(link.a, node_addrs[ia].bridge, f"{prefix}l{k}a", next_port[ia])
            b = LinkEnd(link.b, node_addrs[ib].bridge, f"{prefix}l{k}b", next_port[ib])
            next_port[ia] += 1
            next_port[ib] += 1
            shaper_ends = (f"{prefix}l{k}sa", f"{prefix}l{k}sb") if link.shaper == "userspace" \
                else None
            link_addrs.append(LinkAddress(k, f"{link.a}--{link.b}", a, b, link.shaper,
                                          shaper_ends))
        plan = cls(
            prefix=prefix,
            data_subnet=str(data_net),
            mgmt_subnet=str(mgmt_net),
            mgmt_bridge=f"{prefix}mgmt",
            mgmt_gateway_ip=str(mgmt_net.network_address + 1),
            nodes=tuple(node_addrs),
            links=tuple(link_addrs),
        )
        for ifname in plan.interface_names():
            if len(ifname) > IFNAMSIZ_CHARS:
                raise InputError(f"interface name {ifname!r} has {len(ifname)} characters, "
                                 f"expected <= {IFNAMSIZ_CHARS}: use a shorter run prefix",
                                 field="prefix")
        return plan

    def interface_names(self) -> list[str]:
        """Every root-namespace interface and bridge name the plan creates."""
        names = [self.mgmt_bridge]
        for n in self.nodes:
            names += [n.bridge, n.data_ifname, n.mgmt_root_ifname]
        for link in self.links:
            names += [link.a.ifname, link.b.ifname]
            if link.shaper_ifnames:
                names += list(link.shaper_ifnames)
        return names

    def node(self, name: str) -> NodeAddress:
        """The node called `name`; InputError listing a few valid names otherwise."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise InputError(f"unknown node {name!r}; nodes are: "
                         + ", ".join(n.name for n in self.nodes[:10])
                         + (" ..." if len(self.nodes) > 10 else ""))

    def link(self, name: str) -> LinkAddress:
        for link in self.links:
            if link.name == name:
                return link
        raise InputError(f"unknown link {name!r}; links look like 'a--b'")

    def owner_of(self, ifname: str) -> tuple[str, str]:
        """Which ("node" | "link" | "mgmt", name) an interface or bridge name belongs to."""
        if ifname == self.mgmt_bridge:
            return ("mgmt", self.mgmt_bridge)
        for n in self.nodes:
            if ifname in (n.bridge, n.data_ifname, n.mgmt_root_ifname):
                return ("node", n.name)
        for link in self.links:
            if ifname in (link.a.ifname, link.b.ifname) or (
                link.shaper_ifnames and ifname in link.shaper_ifnames
            ):
                return ("link", link.name)
        raise InputError(f"interface {ifname!r} is not part of run {self.prefix}")

    def neighbours(self) -> list[tuple[str, str]]:
        """(data IP, data MAC) of every node, in index order: the static ARP table."""
        return [(n.data_ip, n.data_mac) for n in self.nodes]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view for `testbed status` and the controller."""
        return {
            "prefix": self.prefix,
            "data_subnet": self.data_subnet,
            "mgmt_subnet": self.mgmt_subnet,
            "mgmt_bridge": self.mgmt_bridge,
            "mgmt_gateway_ip": self.mgmt_gateway_ip,
            "nodes": [
                {"name": n.name, "role": n.role, "netns": n.netns, "bridge": n.bridge,
                 "dpid": n.dpid_hex, "data_ifname": n.data_ifname, "data_ip": n.data_ip,
                 "data_mac": n.data_mac, "data_ofport": n.data_ofport, "mgmt_ip": n.mgmt_ip}
                for n in self.nodes
            ],
            "links": [
                {"name": lk.name, "shaper": lk.shaper,
                 "a": {"node": lk.a.node, "ifname": lk.a.ifname, "ofport": lk.a.ofport},
                 "b": {"node": lk.b.node, "ifname": lk.b.ifname, "ofport": lk.b.ofport},
                 "shaper_ifnames": list(lk.shaper_ifnames) if lk.shaper_ifnames else None}
                for lk in self.links
            ],
        }


def _subnet(text: str, field: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise InputError(f"{field}={text!r}: expected an IPv4 network like 10.128.0.0/16 "
                         f"({exc})", field=field) from exc
    if not isinstance(net, ipaddress.IPv4Network):
        raise InputError(f"{field}={text!r}: expected IPv4", field=field)
    if net.prefixlen > 30:
        raise InputError(f"{field}={text!r}: expected a prefix length <= 30", field=field)
    return net


def _mac_for(ip: ipaddress.IPv4Address) -> str:
    """Locally administered unicast MAC 02:00:<the four IPv4 bytes> (unique within the run)."""
    return "02:00:" + ":".join(f"{b:02x}" for b in ip.packed)
