"""Benchmark: route-swap latency of the controller on real OVS bridges (userspace datapath).

For a 20-node ring and a 66-node +grid torus (6 planes x 11 satellites, Iridium-like), one OVS
bridge per node connects to a controller child process. Each swap pushes a new snapshot and
waits until every switch acknowledged its flows (barrier replies); measured:

- push -> installed: client-side, from `push_snapshot` to `wait_applied` returning;
- controller apply: server-side, from the start of the apply pass to the last barrier reply.

Two kinds of swaps: "drift" rescales every link delay by up to +-5% (orbital motion: few routes
change), "link flap" takes one ISL down or brings it back (many routes change). Bridges carry no
ports: flows name the ports the testbed's fabric would have (OVS accepts them), so the figure is
the controller's and OVS's flow-programming time, not link creation.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller import api
from controller.model import Host, Link, PortRef, Snapshot, Switch
from controller.process import ControllerProcess
from tests.conftest import require_binary, require_root
from tests.controller.ctl_fabric import Fabric, ensure_ovs, free_port

pytestmark = [pytest.mark.bench, pytest.mark.root, pytest.mark.ovs]

SWAPS = 40
TARGET_P99_MS = {20: 50.0, 66: 100.0}


def ring_links(n: int) -> list[tuple[int, int]]:
    return [(i, (i + 1) % n) for i in range(n)]


def grid_links(planes: int, per_plane: int) -> list[tuple[int, int]]:
    """+grid torus: each satellite links to its in-plane neighbours and the next plane's."""
    links = set()
    for p in range(planes):
        for s in range(per_plane):
            k = p * per_plane + s
            links.add(tuple(sorted((k, p * per_plane + (s + 1) % per_plane))))
            links.add(tuple(sorted((k, ((p + 1) % planes) * per_plane + s))))
    return sorted(links)


class Topology:
    """Nodes 0..n-1 (dpid i+1, host on port 1) and links on per-node ports 2, 3, ..."""

    def __init__(self, n: int, pairs: list[tuple[int, int]], seed: int) -> None:
        self.n = n
        self.rng = random.Random(seed)
        next_port = [2] * n
        self.ports: dict[tuple[int, int], tuple[int, int]] = {}
        for a, b in pairs:
            self.ports[(a, b)] = (next_port[a], next_port[b])
            next_port[a] += 1
            next_port[b] += 1
        self.delay_us = {pair: self.rng.uniform(2000.0, 12000.0) for pair in pairs}
        self.down: set[tuple[int, int]] = set()

    def snapshot(self, generation: int) -> Snapshot:
        return Snapshot(
            generation=generation,
            switches=tuple(Switch(dpid=i + 1, name=f"node{i}") for i in range(self.n)),
            hosts=tuple(
                Host(
                    node=f"node{i}",
                    ip=f"10.128.{(i + 1) >> 8}.{(i + 1) & 0xFF}",
                    mac=f"02:00:00:00:{(i + 1) >> 8:02x}:{(i + 1) & 0xFF:02x}",
                    port_no=1,
                )
                for i in range(self.n)
            ),
            links=tuple(
                Link(
                    a=PortRef(dpid=a + 1, port_no=pa),
                    b=PortRef(dpid=b + 1, port_no=pb),
                    weight_us=self.delay_us[(a, b)],
                    up=(a, b) not in self.down,
                )
                for (a, b), (pa, pb) in self.ports.items()
            ),
        )

    def drift(self) -> None:
        for pair in self.delay_us:
            self.delay_us[pair] *= self.rng.uniform(0.95, 1.05)

    def flap(self) -> None:
        if self.down:
            self.down.clear()
        else:
            self.down.add(self.rng.choice(sorted(self.ports)))


@pytest.fixture(scope="module")
def ovs_ready() -> None:
    require_root()
    require_binary("ovs-vsctl", "ovs-ofctl")
    reason = ensure_ovs()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def bridges(ovs_ready: None, unique_prefix: str, tmp_path: Path) -> Iterator[tuple[Fabric, Path]]:
    fabric = Fabric(prefix=unique_prefix, of_port=free_port())
    try:
        yield fabric, tmp_path
    finally:
        fabric.teardown()
    assert fabric.leftovers() == []


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


KINDS = ("drift", "link flap", "scheduled flap")
SCHEDULE_AHEAD_NS = 150_000_000


def _swap(ctl: ControllerProcess, topo: Topology, kind: str, generation: int) -> dict[str, float]:
    """One swap; returns its measurements (ms, counts)."""
    topo.drift() if kind == "drift" else topo.flap()
    at_ns = time.monotonic_ns() + SCHEDULE_AHEAD_NS if kind.startswith("scheduled") else None
    snapshot = topo.snapshot(generation).model_copy(update={"at_ns": at_ns})
    t0 = time.perf_counter()
    api.push_snapshot(ctl.endpoint, snapshot)
    status = api.wait_applied(ctl.endpoint, generation, timeout_s=30.0)
    wall_ms = (time.perf_counter() - t0) * 1e3
    rec = status.last_apply
    assert rec is not None and rec.generation == generation
    row = {
        "apply_ms": rec.apply_ms,
        "routes_ms": rec.routes_ms,
        "flow_mods": rec.flow_mods,
        "rounds": rec.rounds,
    }
    if at_ns is None:
        row["latency_ms"] = wall_ms
    else:  # the controller's clock is this host's CLOCK_MONOTONIC
        row["latency_ms"] = (rec.finished_ns - at_ns) / 1e6
        row["start_late_ms"] = (rec.started_ns - at_ns) / 1e6
    return row


@pytest.mark.parametrize(
    ("name", "n", "pairs"),
    [("ring-20", 20, ring_links(20)), ("grid-66 (6x11)", 66, grid_links(6, 11))],
)
def test_bench_route_swap_latency(
    bridges: tuple[Fabric, Path], name: str, n: int, pairs: list[tuple[int, int]]
) -> None:
    fabric, tmp = bridges
    topo = Topology(n, pairs, seed=n)
    with ControllerProcess(
        of_port=fabric.of_port, api_port=free_port(), log_path=tmp / "controller.log"
    ) as ctl:
        fabric.add_nodes(n, with_hosts=False)
        generation = 1
        t = time.monotonic()
        api.push_snapshot(ctl.endpoint, topo.snapshot(generation))
        assert api.wait_applied(ctl.endpoint, generation, timeout_s=120.0).complete
        initial_s = time.monotonic() - t

        results: dict[str, dict[str, list[float]]] = {}
        for kind in KINDS:
            results[kind] = {}
            for _ in range(SWAPS):
                generation += 1
                for key, value in _swap(ctl, topo, kind, generation).items():
                    results[kind].setdefault(key, []).append(value)

        # the switches really hold the last generation's routes (checked with ovs-ofctl)
        routes = api.get_routes(ctl.endpoint)
        for i in range(0, n, max(1, n // 6)):
            expected = {r.ipv4_dst: r.out_port for r in routes.routes if r.dpid == i + 1}
            flows = fabric.dump_flows(i)
            held = {f["nw_dst"]: int(f["actions"].split(":")[1]) for f in flows if "nw_dst" in f}
            assert held == expected, f"node{i}"

    target = TARGET_P99_MS[n]
    flows = n * (n + 1)
    print(
        f"\n=== controller route swap, {name}: {n} switches, {len(topo.ports)} links, {flows} "
        f"flows, {SWAPS} swaps per kind; first install (connect + {flows} flows) "
        f"{initial_s:.2f} s ==="
    )
    print(f"{'swap kind':<15} {'metric':<38} {'p50':>8} {'p99':>8} {'max':>8} {'target':>11}")
    metrics = (
        ("latency_ms", None),
        ("start_late_ms", "scheduled instant -> first flow-mod ms"),
        ("routes_ms", "route computation ms"),
        ("apply_ms", "apply (flow-mods + barriers) ms"),
        ("flow_mods", "flow-mods per swap"),
        ("rounds", "barrier rounds per swap"),
    )
    worst = 0.0
    for kind, rows in results.items():
        for key, label in metrics:
            if key not in rows:
                continue
            vals = rows[key]
            goal = ""
            if key == "latency_ms":
                scheduled = kind.startswith("scheduled")
                label = "scheduled instant -> installed ms" if scheduled else "push -> installed ms"
                goal = f"p99 < {target:.0f}"
                worst = max(worst, _pct(vals, 99))
            fmt = "8.0f" if key in ("flow_mods", "rounds") else "8.2f"
            print(
                f"{kind:<15} {label:<38} {_pct(vals, 50):{fmt}} {_pct(vals, 99):{fmt}} "
                f"{max(vals):{fmt}} {goal:>11}"
            )
    verdict = "met" if worst < target else "NOT met"
    print(f"worst p99 to installed: {worst:.1f} ms (target < {target:.0f} ms): {verdict}")
