"""Controller snapshots from the plan and the link book (the controller knows no orbits).

Building a Snapshot (pydantic) costs milliseconds; the run clock only captures the topology
(`capture_topology`, microseconds) and the route pusher's thread builds the snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.model import Host, Link, PortRef, Snapshot, Switch
from testbed.fabric.addressing import AddressPlan, LinkAddress
from testbed.lifecycle.links import LinkBook


@dataclass(frozen=True)
class TopologyState:
    """Each link's (address, up, delay_us) and the nodes that are down, at one instant."""

    links: tuple[tuple[LinkAddress, bool, int], ...]
    down_nodes: frozenset[str]


def capture_topology(book: LinkBook, down_nodes: frozenset[str] = frozenset()) -> TopologyState:
    return TopologyState(tuple((r.link, r.up, r.delay_us) for r in book.records.values()),
                         down_nodes)


def snapshot_from_state(plan: AddressPlan, state: TopologyState, generation: int, *,
                        label: str | None = None) -> Snapshot:
    """Every node is a switch with its host port; links carry up/down and delay as weight."""
    dpid = {n.name: n.dpid for n in plan.nodes}
    links = []
    for lk, up, delay_us in state.links:
        up = up and lk.a.node not in state.down_nodes and lk.b.node not in state.down_nodes
        links.append(Link(a=PortRef(dpid=dpid[lk.a.node], port_no=lk.a.ofport),
                          b=PortRef(dpid=dpid[lk.b.node], port_no=lk.b.ofport),
                          up=up, weight_us=float(max(delay_us, 1)), name=lk.name))
    return Snapshot(
        generation=generation,
        switches=tuple(Switch(dpid=n.dpid, name=n.name) for n in plan.nodes),
        hosts=tuple(Host(node=n.name, ip=n.data_ip, mac=n.data_mac, port_no=n.data_ofport)
                    for n in plan.nodes),
        links=tuple(links),
        label=label,
    )

