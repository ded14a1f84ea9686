"""Route computation: shortest-delay paths from a snapshot (networkx), one tree per destination.

Owns the choice of paths only: no OpenFlow, no I/O. For every destination switch it runs one
Dijkstra from that switch over the links that are up (weight = one-way delay in µs); the paths
networkx returns from one source form a tree, so every switch's next hop toward a destination is
consistent with its neighbours' (no loops). Equal-cost ties are broken by a fixed link order
(sorted by dpid, port), so the same snapshot always yields the same routes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

import networkx as nx

from controller.model import Link, RouteEntry, RouteTable, Snapshot


class NextHop(NamedTuple):
    """Where a switch sends packets for one destination address (a tuple: cheap to build)."""

    out_port: int
    next_dpid: int | None
    """None when the destination host is attached to this switch."""
    hops: int
    """Switch-to-switch hops left to the destination's switch (0: local delivery)."""
    delay_us: float


Routes = dict[int, dict[str, NextHop]]
"""dpid -> IPv4 destination (dotted string) -> next hop."""


def build_graph(snapshot: Snapshot) -> nx.Graph:
    """Undirected graph of switches and the links that are up.

    Parallel links between two switches collapse to the one with the lowest delay (then the
    lowest port pair). Edge attributes: `weight_us` and `ports` ({dpid: local port_no}).
    """
    graph = nx.Graph()
    graph.add_nodes_from(sorted(s.dpid for s in snapshot.switches))
    for link in sorted((lk for lk in snapshot.links if lk.up), key=_link_order):
        u, v = link.a.dpid, link.b.dpid
        existing = graph.get_edge_data(u, v)
        if existing is not None and existing["weight_us"] <= link.weight_us:
            continue
        graph.add_edge(u, v, weight_us=link.weight_us, ports={u: link.a.port_no, v: link.b.port_no})
    return graph


def compute_routes(snapshot: Snapshot) -> Routes:
    """Next hop of every switch toward every host address it can reach.

    Unreachable destinations are simply absent (the switch's table-miss entry drops them).
    """
    graph = build_graph(snapshot)
    dpid_of = snapshot.dpid_of()
    hosts_by_dpid: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for host in snapshot.hosts:
        hosts_by_dpid[dpid_of[host.node]].append((str(host.ip), host.port_no))

    port_of = {(u, v): data["ports"][u] for u, v, data in graph.edges(data=True)}
    port_of.update({(v, u): data["ports"][v] for u, v, data in graph.edges(data=True)})
    routes: Routes = {s.dpid: {} for s in snapshot.switches}
    for dst_dpid in sorted(hosts_by_dpid):
        dist_us, paths = nx.single_source_dijkstra(graph, dst_dpid, weight="weight_us")
        hosts = hosts_by_dpid[dst_dpid]
        for dpid, path in paths.items():
            table = routes[dpid]
            if dpid == dst_dpid:
                for ip, port_no in hosts:
                    table[ip] = NextHop(port_no, None, 0, 0.0)
                continue
            next_dpid = path[-2]
            hop = NextHop(port_of[dpid, next_dpid], next_dpid, len(path) - 1, dist_us[dpid])
            for ip, _ in hosts:
                table[ip] = hop
    return routes


def route_table(snapshot: Snapshot, routes: Routes) -> RouteTable:
    """The API view of `routes` (sorted by dpid, then address)."""
    names = {s.dpid: s.name for s in snapshot.switches}
    entries = [
        RouteEntry(
            dpid=dpid,
            node=names[dpid],
            ipv4_dst=ip,
            out_port=hop.out_port,
            next_dpid=hop.next_dpid,
            hops=hop.hops,
            delay_us=hop.delay_us,
        )
        for dpid in sorted(routes)
        for ip, hop in sorted(routes[dpid].items(), key=lambda kv: _ip_key(kv[0]))
    ]
    return RouteTable(generation=snapshot.generation, routes=entries)


def _link_order(link: Link) -> tuple[int, int, int, int]:
    ends = sorted([(link.a.dpid, link.a.port_no), (link.b.dpid, link.b.port_no)])
    return (ends[0][0], ends[1][0], ends[0][1], ends[1][1])


def _ip_key(ip: str) -> tuple[int, ...]:
    return tuple(int(part) for part in ip.split("."))
