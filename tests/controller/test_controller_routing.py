"""Route computation against an independent reference (Floyd-Warshall written here)."""

from __future__ import annotations

import pytest

from controller.model import Host, Link, PortRef, Snapshot, Switch
from controller.routing import compute_routes, route_table
from tests.controller.ctl_fakes import grid_snapshot


def floyd_warshall(snapshot: Snapshot) -> dict[tuple[int, int], float]:
    dpids = [s.dpid for s in snapshot.switches]
    inf = float("inf")
    dist = {(u, v): (0.0 if u == v else inf) for u in dpids for v in dpids}
    for link in snapshot.links:
        if link.up:
            u, v = link.a.dpid, link.b.dpid
            dist[u, v] = dist[v, u] = min(dist[u, v], link.weight_us)
    for k in dpids:
        for i in dpids:
            for j in dpids:
                if dist[i, k] + dist[k, j] < dist[i, j]:
                    dist[i, j] = dist[i, k] + dist[k, j]
    return dist


def follow(snapshot: Snapshot, routes: dict, src: int, ip: str) -> tuple[list[int], float]:
    """Walk the routes hop by hop over the real links; returns switches crossed and delay."""
    by_port = {}
    for link in snapshot.links:
        by_port[(link.a.dpid, link.a.port_no)] = (link.b.dpid, link.weight_us, link.up)
        by_port[(link.b.dpid, link.b.port_no)] = (link.a.dpid, link.weight_us, link.up)
    host_port = {str(h.ip): (snapshot.dpid_of()[h.node], h.port_no) for h in snapshot.hosts}
    path, delay = [src], 0.0
    for _ in range(len(snapshot.switches) + 1):
        here = path[-1]
        hop = routes[here][ip]
        if (here, hop.out_port) == host_port[ip]:
            return path, delay
        nxt, weight, up = by_port[(here, hop.out_port)]
        assert up, f"route of {here} for {ip} uses a link that is down"
        path.append(nxt)
        delay += weight
    raise AssertionError(f"loop: {path}")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_routes_are_shortest_delay_paths(seed: int) -> None:
    snap = grid_snapshot(4, 5, seed=seed)
    routes = compute_routes(snap)
    dist = floyd_warshall(snap)
    for src in (s.dpid for s in snap.switches):
        for host in snap.hosts:
            dst = snap.dpid_of()[host.node]
            path, delay = follow(snap, routes, src, str(host.ip))
            assert path[-1] == dst
            assert delay == pytest.approx(dist[src, dst], rel=1e-9)
            assert routes[src][str(host.ip)].hops == len(path) - 1
            assert routes[src][str(host.ip)].delay_us == pytest.approx(dist[src, dst], rel=1e-9)


def test_links_down_are_avoided_and_unreachable_hosts_have_no_route() -> None:
    snap = grid_snapshot(3, 3, seed=7, down=frozenset({(0, 1), (0, 2)}))
    routes = compute_routes(snap)
    dist = floyd_warshall(snap)
    for host in snap.hosts:
        path, delay = follow(snap, routes, 1, str(host.ip))
        assert delay == pytest.approx(dist[1, snap.dpid_of()[host.node]])
    # cut node 0 off completely: its host is unreachable from everywhere else
    isolated = grid_snapshot(3, 3, seed=7, down=frozenset({(0, 1), (0, 2), (0, 3), (0, 6)}))
    routes = compute_routes(isolated)
    assert "10.128.0.1" not in routes[2]
    assert set(routes[1]) == {"10.128.0.1"}


def test_weights_steer_the_path_on_a_ring() -> None:
    def ring(w01: float) -> Snapshot:
        weights = {(0, 1): w01, (1, 2): 1000.0, (2, 3): 1000.0, (0, 3): 1000.0}
        return Snapshot(
            generation=1,
            switches=tuple(Switch(dpid=i + 1, name=f"n{i}") for i in range(4)),
            hosts=(Host(node="n2", ip="10.128.0.3", mac="02:00:00:00:00:03", port_no=1),),
            links=tuple(
                Link(
                    a=PortRef(dpid=a + 1, port_no=10 + b),
                    b=PortRef(dpid=b + 1, port_no=10 + a),
                    weight_us=w,
                )
                for (a, b), w in weights.items()
            ),
        )

    via1 = route_table(ring(500.0), compute_routes(ring(500.0)))
    via3 = route_table(ring(5000.0), compute_routes(ring(5000.0)))
    assert via1.path(1, "10.128.0.3") == [1, 2, 3]
    assert via3.path(1, "10.128.0.3") == [1, 4, 3]


def test_parallel_links_use_the_faster_one_and_ties_are_deterministic() -> None:
    snap = Snapshot(
        generation=1,
        switches=(Switch(dpid=1, name="a"), Switch(dpid=2, name="b")),
        hosts=(Host(node="b", ip="10.0.0.2", mac="02:00:00:00:00:02", port_no=1),),
        links=(
            Link(a=PortRef(dpid=1, port_no=10), b=PortRef(dpid=2, port_no=10), weight_us=900),
            Link(a=PortRef(dpid=1, port_no=11), b=PortRef(dpid=2, port_no=11), weight_us=300),
            Link(a=PortRef(dpid=1, port_no=12), b=PortRef(dpid=2, port_no=12), weight_us=300),
        ),
    )
    assert compute_routes(snap)[1]["10.0.0.2"].out_port == 11
    shuffled = snap.model_copy(update={"links": tuple(reversed(snap.links))})
    assert compute_routes(shuffled) == compute_routes(snap)
