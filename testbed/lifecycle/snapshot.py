"""Controller snapshots from the plan and the link book (the controller knows no orbits)."""

from __future__ import annotations

from controller.model import Host, Link, PortRef, Snapshot, Switch
from testbed.fabric.addressing import AddressPlan
from testbed.lifecycle.links import LinkBook


def build_snapshot(plan: AddressPlan, book: LinkBook, generation: int, *,
                   down_nodes: frozenset[str] = frozenset(), label: str | None = None
                   ) -> Snapshot:
    """Every node is a switch with its host port; links carry up/down and delay as weight."""
    dpid = {n.name: n.dpid for n in plan.nodes}
    links = []
    for r in book.records.values():
        lk = r.link
        up = r.up and lk.a.node not in down_nodes and lk.b.node not in down_nodes
        links.append(Link(a=PortRef(dpid=dpid[lk.a.node], port_no=lk.a.ofport),
                          b=PortRef(dpid=dpid[lk.b.node], port_no=lk.b.ofport),
                          up=up, weight_us=float(max(r.delay_us, 1)), name=lk.name))
    return Snapshot(
        generation=generation,
        switches=tuple(Switch(dpid=n.dpid, name=n.name) for n in plan.nodes),
        hosts=tuple(Host(node=n.name, ip=n.data_ip, mac=n.data_mac, port_no=n.data_ofport)
                    for n in plan.nodes),
        links=tuple(links),
        label=label,
    )
