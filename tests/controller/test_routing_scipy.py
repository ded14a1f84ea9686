"""The scipy route computation against the networkx reference: same delays and reachability,
loop-free next hops on graphs full of equal-cost paths, determinism whatever the input order."""

from __future__ import annotations

import random

import pytest

from controller.model import Host, Link, PortRef, Snapshot, Switch
from controller.routing import (
    NextHop,
    Routes,
    compute_route_trees,
    compute_routes,
    compute_routes_networkx,
)


def _snapshot(
    n: int,
    pairs: list[tuple[int, int, float, bool]],
    *,
    dpid_base: int = 1,
    hosts_on: list[int] | None = None,
) -> Snapshot:
    """Switch k has dpid dpid_base+k and (if in hosts_on) a host on port 1; link ports from 2."""
    next_port = [2] * n
    links = []
    for a, b, weight_us, up in pairs:
        links.append(
            Link(
                a=PortRef(dpid=dpid_base + a, port_no=next_port[a]),
                b=PortRef(dpid=dpid_base + b, port_no=next_port[b]),
                weight_us=weight_us,
                up=up,
            )
        )
        next_port[a] += 1
        next_port[b] += 1
    hosts_on = list(range(n)) if hosts_on is None else hosts_on
    return Snapshot(
        generation=1,
        switches=tuple(Switch(dpid=dpid_base + k, name=f"s{k}") for k in range(n)),
        hosts=tuple(
            Host(node=f"s{k}", ip=f"10.9.{k >> 8}.{k & 0xFF}", mac=f"02:00:00:09:{k >> 8:02x}:"
                 f"{k & 0xFF:02x}", port_no=1)
            for k in hosts_on
        ),
        links=tuple(links),
    )


def _random_snapshot(seed: int, n: int, extra_links: int) -> Snapshot:
    """A random graph: a random spanning tree plus extra links (some parallel), some links down,
    integer delays from a small set so that equal-cost paths are frequent."""
    rng = random.Random(seed)
    pairs = [(k, rng.randrange(k), float(rng.choice([0, 100, 200, 300])), True)
             for k in range(1, n)]
    for _ in range(extra_links):
        a, b = rng.sample(range(n), 2)
        pairs.append((a, b, float(rng.choice([100, 200, 300, 400])), rng.random() > 0.15))
    pairs = [(a, b, w, up if rng.random() > 0.05 else False) for a, b, w, up in pairs]
    return _snapshot(n, pairs)


def _torus(rows: int, cols: int, weight_us: float = 1000.0) -> Snapshot:
    pairs = set()
    for r in range(rows):
        for c in range(cols):
            k = r * cols + c
            pairs.add(tuple(sorted((k, r * cols + (c + 1) % cols))))
            pairs.add(tuple(sorted((k, ((r + 1) % rows) * cols + c))))
    return _snapshot(rows * cols, [(a, b, weight_us, True) for a, b in sorted(pairs)])


def _walk_all(snapshot: Snapshot, routes: Routes) -> None:
    """Follow every switch's next-hop chain toward every address over the real links: each ends
    at the address's switch within n hops, uses only links that are up, and crosses exactly the
    hops and delay its first entry announces."""
    ends = {}
    for link in snapshot.links:
        ends[(link.a.dpid, link.a.port_no)] = (link.b.dpid, link.weight_us, link.up)
        ends[(link.b.dpid, link.b.port_no)] = (link.a.dpid, link.weight_us, link.up)
    home = {str(h.ip): (snapshot.dpid_of()[h.node], h.port_no) for h in snapshot.hosts}
    n = len(snapshot.switches)
    for src, table in routes.items():
        for ip, first in table.items():
            here, hops, delay_us = src, 0, 0.0
            for _ in range(n + 1):
                hop = routes[here][ip]
                if hop.next_dpid is None:
                    assert (here, hop.out_port) == home[ip], f"{ip} delivered at {here}"
                    break
                nxt, weight_us, up = ends[(here, hop.out_port)]
                assert up and nxt == hop.next_dpid, f"{here} -> {ip}: port {hop.out_port}"
                here, hops, delay_us = nxt, hops + 1, delay_us + weight_us
            else:
                raise AssertionError(f"routing loop from {src} toward {ip}")
            assert (first.hops, first.delay_us) == (hops, pytest.approx(delay_us, abs=1e-6))


@pytest.mark.parametrize("seed", range(8))
def test_random_graphs_match_networkx_delays_and_are_loop_free(seed: int) -> None:
    snap = _random_snapshot(seed, n=40 + seed * 7, extra_links=30 + seed * 10)
    fast, reference = compute_routes(snap), compute_routes_networkx(snap)
    assert fast.keys() == reference.keys()
    for dpid in reference:
        assert fast[dpid].keys() == reference[dpid].keys(), f"reachability of {dpid}"
        for ip, ref in reference[dpid].items():
            assert fast[dpid][ip].delay_us == pytest.approx(ref.delay_us, rel=1e-12, abs=1e-9)
    _walk_all(snap, fast)


def test_some_destinations_unreachable_like_networkx() -> None:
    # two components: 0-1-2 and 3-4, plus switch 5 with no link at all
    snap = _snapshot(6, [(0, 1, 10.0, True), (1, 2, 10.0, True), (3, 4, 5.0, True),
                         (2, 3, 1.0, False)])
    routes = compute_routes(snap)
    assert routes == compute_routes_networkx(snap)
    assert set(routes[1]) == {"10.9.0.0", "10.9.0.1", "10.9.0.2"}
    assert set(routes[6]) == {"10.9.0.5"}


def test_equal_cost_grid_is_loop_free_shortest_and_consistent_between_neighbours() -> None:
    snap = _torus(8, 9)
    routes = compute_routes(snap)
    _walk_all(snap, routes)
    for src in range(72):
        for dst in range(72):
            dr, dc = abs(src // 9 - dst // 9), abs(src % 9 - dst % 9)
            manhattan = min(dr, 8 - dr) + min(dc, 9 - dc)
            hop = routes[src + 1][f"10.9.0.{dst}"]
            assert hop.hops == manhattan and hop.delay_us == manhattan * 1000.0
            if hop.next_dpid is not None:  # the neighbour is one hop closer on the same tree
                assert routes[hop.next_dpid][f"10.9.0.{dst}"].hops == manhattan - 1


def test_identical_snapshots_give_identical_routes_whatever_the_order() -> None:
    snap = _torus(10, 12)
    rng = random.Random(5)
    links, switches, hosts = list(snap.links), list(snap.switches), list(snap.hosts)
    rng.shuffle(links)
    rng.shuffle(switches)
    rng.shuffle(hosts)
    shuffled = snap.model_copy(
        update={"links": tuple(links), "switches": tuple(switches), "hosts": tuple(hosts)}
    )
    first = compute_routes(snap)
    assert compute_routes(snap) == first
    assert compute_routes(shuffled) == first
    # ties really happened: many switches have two equally short next hops toward a destination
    assert sum(len({h.next_dpid for h in t.values()}) for t in first.values()) > 120


def test_zero_delay_links_are_links() -> None:
    snap = _snapshot(4, [(0, 1, 0.0, True), (1, 2, 0.0, True), (2, 3, 50.0, True),
                         (0, 3, 0.0, False)])
    routes = compute_routes(snap)
    assert routes[1]["10.9.0.3"] == NextHop(out_port=2, next_dpid=2, hops=3, delay_us=50.0)
    assert routes[3]["10.9.0.0"] == NextHop(out_port=2, next_dpid=2, hops=2, delay_us=0.0)
    _walk_all(snap, routes)


def test_parallel_links_take_the_fastest_then_the_lowest_port() -> None:
    snap = _snapshot(2, [(0, 1, 900.0, True), (0, 1, 300.0, True), (0, 1, 300.0, True),
                         (0, 1, 100.0, False)])
    assert compute_routes(snap)[1]["10.9.0.1"] == NextHop(3, 2, 1, 300.0)
    assert compute_routes(snap)[2]["10.9.0.0"] == NextHop(3, 1, 1, 300.0)


def test_full_width_dpids_and_hosts_on_some_switches() -> None:
    base = 2**64 - 10
    snap = _snapshot(5, [(k, k + 1, 10.0 * (k + 1), True) for k in range(4)],
                     dpid_base=base, hosts_on=[0, 3])
    routes = compute_routes(snap)
    assert routes == compute_routes_networkx(snap)
    assert routes[base + 4]["10.9.0.0"] == NextHop(2, base + 3, 4, 100.0)
    assert type(routes[base + 4]["10.9.0.0"].next_dpid) is int
    trees = compute_route_trees(snap)
    assert [trees.dpids[r] for r in trees.roots] == [base, base + 3]
    assert trees.next_hop_dpid(base + 1, base + 3) == base + 2
    assert trees.next_hop_dpid(base + 3, base + 3) is None
    with pytest.raises(KeyError):
        trees.next_hop_dpid(base, base + 1)


def test_no_hosts_or_no_links() -> None:
    assert compute_routes(_snapshot(3, [], hosts_on=[])) == {1: {}, 2: {}, 3: {}}
    alone = compute_routes(_snapshot(2, []))
    assert alone == {1: {"10.9.0.0": NextHop(1, None, 0, 0.0)},
                     2: {"10.9.0.1": NextHop(1, None, 0, 0.0)}}
