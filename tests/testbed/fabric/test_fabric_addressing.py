"""The addressing plan (pure): names fit IFNAMSIZ and are unique, addresses, ports, errors."""

from __future__ import annotations

import ipaddress
import json

import pytest

from testbed.errors import InputError
from testbed.fabric.addressing import AddressPlan, LinkSpec, NodeSpec, pick_mgmt_subnet


def ring_of_rings(planes: int, per_plane: int) -> tuple[list[NodeSpec], list[LinkSpec]]:
    nodes = [NodeSpec(f"p{p}s{s}") for p in range(planes) for s in range(per_plane)]
    links = []
    for p in range(planes):
        for s in range(per_plane):
            links.append(LinkSpec(f"p{p}s{s}", f"p{p}s{(s + 1) % per_plane}"))
            links.append(LinkSpec(f"p{p}s{s}", f"p{(p + 1) % planes}s{s}", shaper="userspace"))
    return nodes, links


def test_thousand_nodes_names_fit_and_are_unique() -> None:
    nodes, links = ring_of_rings(25, 40)
    plan = AddressPlan.build("t0a1b2", nodes, links)
    names = plan.interface_names()
    assert len(names) == len(set(names)) == 1 + 3 * 1000 + 2 * 1000 + 4 * 1000
    assert max(len(n) for n in names) <= 15
    assert all(plan.owner_of(n)[0] in ("node", "link", "mgmt") for n in names[::97])
    assert plan.owner_of(plan.links[5].shaper_ifnames[1]) == ("link", plan.links[5].name)


def test_addresses_macs_dpids_ports() -> None:
    nodes, links = ring_of_rings(3, 4)
    plan = AddressPlan.build("tx", nodes, links, data_subnet="10.9.0.0/24",
                             mgmt_subnet="172.16.5.0/24")
    ips = [ipaddress.ip_address(n.data_ip) for n in plan.nodes]
    assert ips[0] == ipaddress.ip_address("10.9.0.1") and len(set(ips)) == 12
    assert all(ip in ipaddress.ip_network("10.9.0.0/24") for ip in ips)
    assert plan.nodes[3].data_mac == "02:00:0a:09:00:04"
    assert plan.mgmt_gateway_ip == "172.16.5.1" and plan.nodes[0].mgmt_ip == "172.16.5.2"
    assert [n.dpid_hex for n in plan.nodes[:2]] == ["0000000000000001", "0000000000000002"]
    # every node has its data port 1 and four link ports numbered 2..5
    ports: dict[str, list[int]] = {n.name: [n.data_ofport] for n in plan.nodes}
    for lk in plan.links:
        ports[lk.a.node].append(lk.a.ofport)
        ports[lk.b.node].append(lk.b.ofport)
    assert all(sorted(p) == [1, 2, 3, 4, 5] for p in ports.values())
    assert json.loads(json.dumps(plan.to_dict()))["nodes"][0]["dpid"] == "0000000000000001"
    assert plan.neighbours()[1] == ("10.9.0.2", "02:00:0a:09:00:02")


@pytest.mark.parametrize(
    ("prefix", "nodes", "links", "kwargs", "message"),
    [
        ("Tx", ["a"], [], {}, "run prefix 'Tx'"),
        ("abcdefghi", ["a"], [], {}, "run prefix"),
        ("tx", ["a", "a"], [], {}, "node 'a' listed twice"),
        ("tx", ["a"], [("a", "z")], {}, "node 'z' is not in the node list"),
        ("tx", ["a"], [("a", "a")], {}, "expected two different nodes"),
        ("tx", ["a", "b"], [("a", "b"), ("b", "a")], {}, "listed twice"),
        ("tx", ["a", "b", "c"], [], {"data_subnet": "10.0.0.0/31"}, "prefix length <= 30"),
        ("tx", ["a", "b", "c"], [], {"data_subnet": "10.0.0.0/30"}, "holds 2 hosts"),
        ("tx", ["a"], [], {"mgmt_subnet": "172.30.0.1/16"}, "mgmt_subnet='172.30.0.1/16'"),
    ],
)
def test_bad_input_names_the_problem(prefix, nodes, links, kwargs, message) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        AddressPlan.build(prefix, [NodeSpec(n) for n in nodes],
                          [LinkSpec(a, b) for a, b in links], **kwargs)


def test_names_longer_than_ifnamsiz_and_too_many_nodes_are_refused() -> None:
    with pytest.raises(InputError, match="1024 nodes, expected at most 1023"):
        AddressPlan.build("tx", [NodeSpec(f"n{i}") for i in range(1024)])
    nodes = [NodeSpec(f"n{i}") for i in range(600)]
    many = [LinkSpec(f"n{i}", f"n{j}", shaper="userspace")
            for i in range(600) for j in range(i + 1, min(600, i + 30))]
    assert len(many) > 10_000  # link index 5 digits: "abcdefgh" + "l12345sa" = 16 chars
    with pytest.raises(InputError, match="has 16 characters, expected <= 15"):
        AddressPlan.build("abcdefgh", nodes, many)
    assert AddressPlan.build("abcdefg", nodes, many)  # one character shorter fits


def test_lookup_errors() -> None:
    plan = AddressPlan.build("tx", [NodeSpec("a"), NodeSpec("b")], [LinkSpec("a", "b")])
    assert plan.node("b").index == 1 and plan.link("a--b").b.node == "b"
    with pytest.raises(InputError, match="unknown node 'c'; nodes are: a, b"):
        plan.node("c")
    with pytest.raises(InputError, match="not part of run tx"):
        plan.owner_of("eth0")


def test_mgmt_subnet_auto_skips_what_the_host_uses() -> None:
    """A second run on one host (its 172.30/16 bridge up) gets 172.29/16; a named subnet that
    overlaps the host's networks is refused with the overlap named."""
    host = [ipaddress.IPv4Network(n) for n in ("127.0.0.0/8", "0.0.0.0/0", "192.0.2.0/24")]
    assert pick_mgmt_subnet("auto", host) == "172.30.0.0/16"  # default route ignored
    host.append(ipaddress.IPv4Network("172.30.0.0/16"))
    assert pick_mgmt_subnet("auto", host) == "172.29.0.0/16"
    host.append(ipaddress.IPv4Network("172.16.0.0/12"))  # a lab network over all 172.16-31
    assert pick_mgmt_subnet("auto", host) == "10.255.0.0/16"
    assert pick_mgmt_subnet("10.9.0.0/24", host) == "10.9.0.0/24"
    with pytest.raises(InputError, match=r"mgmt_subnet 172.29.4.0/24 overlaps 172.16.0.0/12"):
        pick_mgmt_subnet("172.29.4.0/24", host)
    with pytest.raises(InputError, match="all 71 candidate subnets"):
        pick_mgmt_subnet("auto", [ipaddress.IPv4Network("0.0.0.0/1"),
                                  ipaddress.IPv4Network("128.0.0.0/1")])
