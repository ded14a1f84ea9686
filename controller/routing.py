"""Route computation: shortest-delay paths from a snapshot, one tree per destination switch.

Owns the choice of paths only: no OpenFlow, no I/O. For every destination switch it runs one
Dijkstra from that switch over the links that are up (weight = one-way delay in µs), all of them
in one `scipy.sparse.csgraph.dijkstra` call. The graph is symmetric, so the predecessor tree
grown from destination d gives every switch's next hop toward d (its parent in the tree): each
switch's next hop is consistent with its neighbours' and chains end at d (no loops).

Determinism: parallel links between two switches collapse to the one with the lowest delay
(then the lowest (dpid, port) order, `_link_order`); switches are indexed by dpid and each row
of the sparse graph lists its neighbours by index, so the same snapshot (whatever the order of
its links) always yields the same trees. Dijkstra only replaces a tentative parent on a strictly
shorter distance, so among equal-cost paths the one reached first in that fixed order wins.

`compute_routes_networkx` is the former implementation (networkx, one Dijkstra per destination,
~15x slower at 1,000 switches), kept as the independent reference for tests and benchmarks.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple

import networkx as nx
import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import dijkstra

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

_NO_PRED = -9999
"""What scipy's dijkstra puts in the predecessor matrix for a tree root or an unreached node."""


class _Edge(NamedTuple):
    u: int
    v: int
    u_port: int
    v_port: int
    weight_us: float


def _up_edges(snapshot: Snapshot) -> list[_Edge]:
    """One edge per pair of linked switches: the up link with the lowest delay, then link order."""
    best: dict[tuple[int, int], _Edge] = {}
    for link in sorted((lk for lk in snapshot.links if lk.up), key=_link_order):
        u, v = link.a.dpid, link.b.dpid
        pair = (u, v) if u < v else (v, u)
        existing = best.get(pair)
        if existing is not None and existing.weight_us <= link.weight_us:
            continue
        best[pair] = _Edge(u, v, link.a.port_no, link.b.port_no, link.weight_us)
    return list(best.values())


def build_graph(snapshot: Snapshot) -> nx.Graph:
    """Undirected networkx graph of switches and the links that are up (for the reference).

    Parallel links between two switches collapse to the one with the lowest delay (then the
    lowest port pair). Edge attributes: `weight_us` and `ports` ({dpid: local port_no}).
    """
    graph = nx.Graph()
    graph.add_nodes_from(sorted(s.dpid for s in snapshot.switches))
    for edge in _up_edges(snapshot):
        ports = {edge.u: edge.u_port, edge.v: edge.v_port}
        graph.add_edge(edge.u, edge.v, weight_us=edge.weight_us, ports=ports)
    return graph


@dataclass(frozen=True, slots=True)
class RouteTrees:
    """Shortest-delay trees as arrays: row k is the tree grown from switch `dpids[roots[k]]`.

    Column i is switch `dpids[i]`. `parent[k, i]` is the switch index i forwards to toward the
    root (-1: i is the root or cannot reach it), `out_port[k, i]` the port toward that parent
    (0 where there is none), `hops[k, i]` and `dist_us[k, i]` what is left to the root (inf when
    unreachable). The cheap, vectorised half of `compute_routes`.
    """

    dpids: tuple[int, ...]
    roots: np.ndarray
    parent: np.ndarray
    out_port: np.ndarray
    hops: np.ndarray
    dist_us: np.ndarray

    def next_hop_dpid(self, src_dpid: int, dst_dpid: int) -> int | None:
        """The switch `src_dpid` forwards to toward `dst_dpid` (None: itself or unreachable);
        raises KeyError when `dst_dpid` is no tree's root or `src_dpid` no switch."""
        k = int(np.searchsorted(self.roots, self.dpids.index(dst_dpid)))
        if k >= len(self.roots) or self.dpids[self.roots[k]] != dst_dpid:
            raise KeyError(f"dpid={dst_dpid:#x} is not the root of a route tree")
        i = int(self.parent[k, self.dpids.index(src_dpid)])
        return None if i < 0 else self.dpids[i]


def compute_route_trees(snapshot: Snapshot, roots: Sequence[int] | None = None) -> RouteTrees:
    """One Dijkstra tree per root switch (default: every switch that has a host), in one call.

    Raises KeyError when a root dpid is not a switch of the snapshot.
    """
    dpids = tuple(sorted(s.dpid for s in snapshot.switches))
    n = len(dpids)
    index_of = {dpid: i for i, dpid in enumerate(dpids)}
    if roots is None:
        dpid_of = snapshot.dpid_of()
        roots = {dpid_of[h.node] for h in snapshot.hosts}
    root_idx = np.array(sorted({index_of[d] for d in roots}), np.int64)

    # symmetric CSR graph; entries sorted by (row, column), so `keys` doubles as the port lookup
    edges = _up_edges(snapshot)
    rows = np.array([index_of[e.u] for e in edges] + [index_of[e.v] for e in edges], np.int64)
    cols = np.array([index_of[e.v] for e in edges] + [index_of[e.u] for e in edges], np.int64)
    ports = np.array([e.u_port for e in edges] + [e.v_port for e in edges], np.int64)
    weights = np.array([e.weight_us for e in edges] * 2, np.float64)
    keys = rows * n + cols
    order = np.argsort(keys, kind="stable")
    keys, ports = keys[order], ports[order]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    if not len(root_idx):
        empty_i, empty_f = np.zeros((0, n), np.int64), np.zeros((0, n), np.float64)
        return RouteTrees(dpids, root_idx, empty_i, empty_i, empty_i, empty_f)
    graph = csr_array((weights[order], cols[order], indptr), shape=(n, n))
    # explicit zero weights stay edges in csgraph's sparse input (links may have weight_us=0)
    dist_us, pred = dijkstra(graph, directed=True, indices=root_idx, return_predecessors=True)
    parent = np.where(pred >= 0, pred, -1).astype(np.int64)
    if len(keys):  # (i, parent) is a graph edge wherever there is a parent; clip the others
        slot = np.searchsorted(keys, np.arange(n)[None, :] * n + np.maximum(parent, 0))
        out_port = np.where(parent >= 0, ports[np.minimum(slot, len(keys) - 1)], 0)
    else:
        out_port = np.zeros_like(parent)
    return RouteTrees(dpids, root_idx, parent, out_port, _tree_depths(pred), dist_us)


def compute_routes(snapshot: Snapshot) -> Routes:
    """Next hop of every switch toward every host address it can reach.

    Unreachable destinations are simply absent (the switch's table-miss entry drops them).
    Each table lists its addresses by destination dpid, then in the snapshot's host order.
    Cost: the trees are cheap (`compute_route_trees`); building one NextHop per (switch, host)
    dominates at scale (1,000 switches with a host each: a million entries).

    Example (switches 1 - 2, a host on 2):
        >>> from controller.model import Host, Link, PortRef, Switch
        >>> snap = Snapshot(generation=1,
        ...     switches=(Switch(dpid=1, name="a"), Switch(dpid=2, name="b")),
        ...     hosts=(Host(node="b", ip="10.0.0.2", mac="02:00:00:00:00:02", port_no=1),),
        ...     links=(Link(a=PortRef(dpid=1, port_no=5), b=PortRef(dpid=2, port_no=6),
        ...                 weight_us=800.0),))
        >>> compute_routes(snap)[1]["10.0.0.2"]
        NextHop(out_port=5, next_dpid=2, hops=1, delay_us=800.0)
    """
    routes: Routes = {s.dpid: {} for s in snapshot.switches}
    if not snapshot.hosts:
        return routes
    trees = compute_route_trees(snapshot)
    dpids, n = trees.dpids, len(trees.dpids)
    tree_of_root = {int(r): k for k, r in enumerate(trees.roots)}
    index_of = {dpid: i for i, dpid in enumerate(dpids)}
    dpid_of = snapshot.dpid_of()
    hosts_by_root: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for host in snapshot.hosts:
        hosts_by_root[index_of[dpid_of[host.node]]].append((str(host.ip), host.port_no))

    # one column per destination host (by root index, then snapshot order), one row per switch
    order = sorted(hosts_by_root)
    host_tree = np.array([tree_of_root[r] for r in order for _ in hosts_by_root[r]], np.int64)
    host_switch = np.array([r for r in order for _ in hosts_by_root[r]], np.int64)
    host_port = np.array([p for r in order for _, p in hosts_by_root[r]], np.int64)
    host_ips = [ip for r in order for ip, _ in hosts_by_root[r]]
    local = np.arange(n)[:, None] == host_switch[None, :]
    parent = trees.parent[host_tree].T
    reached = (parent >= 0) | local
    out_port = np.where(local, host_port[None, :], trees.out_port[host_tree].T)
    next_index = np.where(local, n, parent)
    hop_count = trees.hops[host_tree].T
    delay_us = np.where(local, 0.0, trees.dist_us[host_tree].T)
    dpid_or_none = np.array([*dpids, None], dtype=object)
    ips = np.array(host_ips, dtype=object)
    all_reached = reached.all(axis=1)

    new_hop = tuple.__new__  # NextHop from a tuple in C: ~2x faster than calling NextHop(...)
    with _collector_paused():
        for s, dpid in enumerate(dpids):
            if all_reached[s]:
                cols: slice | np.ndarray = slice(None)
                names = host_ips
            else:
                cols = np.flatnonzero(reached[s])
                if not len(cols):
                    continue
                names = ips[cols].tolist()
            fields = zip(
                out_port[s, cols].tolist(),
                dpid_or_none[next_index[s, cols]].tolist(),
                hop_count[s, cols].tolist(),
                delay_us[s, cols].tolist(),
                strict=True,
            )
            routes[dpid] = dict(zip(names, map(new_hop, repeat(NextHop), fields), strict=True))
    return routes


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building the route tables.

    The tables hold only tuples of numbers and dicts of them: no cycles for the collector to
    find, but a million new container objects make it rescan the whole heap several times
    (about half of the build time at 1,000 switches). Restores the previous state; a thread
    that allocates meanwhile only has its cycles collected a little later.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _tree_depths(pred: np.ndarray) -> np.ndarray:
    """Hops from each node to its tree's root, per row of a predecessor matrix (0: root or
    unreached), by pointer doubling: log2(depth) vectorised passes instead of a walk per node."""
    k, n = pred.shape
    index = np.int32 if k * n < 2**31 else np.int64
    has_parent = pred >= 0
    base = (np.arange(k, dtype=index) * n)[:, None]
    # up: flat index of an ancestor; depth: hops to it (invariant); roots point at themselves
    up = (np.where(has_parent, pred, np.arange(n, dtype=index)[None, :]).astype(index)
          + base).ravel()
    depth = has_parent.ravel().astype(np.int32)
    for _ in range(max(1, n).bit_length() + 1):  # depth <= n - 1 < 2**bit_length
        nxt = np.take(up, up)
        if np.array_equal(nxt, up):
            break
        depth += np.take(depth, up)
        up = nxt
    return depth.reshape(k, n)


def compute_routes_networkx(snapshot: Snapshot) -> Routes:
    """The reference: `compute_routes` with one networkx Dijkstra per destination switch.

    Same contract and same delays; among equal-cost paths it may pick another (equally short,
    equally loop-free) next hop. Slow at scale: for tests and benchmarks.
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
