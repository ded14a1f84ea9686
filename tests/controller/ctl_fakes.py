"""Test helpers without root: fake switches that model an OpenFlow table and forwarding,
and small topologies (a ring, a +grid torus) as snapshots."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from controller.errors import SwitchError
from controller.flows import FlowEntry, FlowKey, route_key
from controller.model import Host, Link, PortRef, Snapshot, Switch
from controller.reconciler import Reconciler


def grid_snapshot(
    rows: int,
    cols: int,
    *,
    seed: int,
    generation: int = 1,
    down: frozenset[tuple[int, int]] = frozenset(),
) -> Snapshot:
    """A +grid torus with random delays; node k = dpid k+1 with host 10.128.0.(k+1) on port 1."""
    rng = random.Random(seed)
    n = rows * cols
    pairs = set()
    for r, c in itertools.product(range(rows), range(cols)):
        k = r * cols + c
        pairs.add(tuple(sorted((k, r * cols + (c + 1) % cols))))
        pairs.add(tuple(sorted((k, ((r + 1) % rows) * cols + c))))
    links = [
        Link(
            a=PortRef(dpid=a + 1, port_no=10 + b),
            b=PortRef(dpid=b + 1, port_no=10 + a),
            weight_us=rng.uniform(500, 5000),
            up=(a, b) not in down,
        )
        for a, b in sorted(pairs)
        if a != b
    ]
    return Snapshot(
        generation=generation,
        switches=tuple(Switch(dpid=k + 1, name=f"s{k}") for k in range(n)),
        hosts=tuple(
            Host(node=f"s{k}", ip=f"10.128.0.{k + 1}", mac=f"02:00:00:00:00:{k + 1:02x}", port_no=1)
            for k in range(n)
        ),
        links=tuple(links),
    )


def ring_snapshot(generation: int, w12: float) -> Snapshot:
    """Ring 1-2-3-4-1, one host on switch 3."""
    weights = {(1, 2): 1000.0, (2, 3): w12, (3, 4): 1000.0, (4, 1): 1000.0}
    return Snapshot(
        generation=generation,
        switches=tuple(Switch(dpid=d, name=f"n{d}") for d in (1, 2, 3, 4)),
        hosts=(Host(node="n3", ip="10.0.0.3", mac="02:00:00:00:00:03", port_no=1),),
        links=tuple(
            Link(a=PortRef(dpid=a, port_no=10 + b), b=PortRef(dpid=b, port_no=10 + a), weight_us=w)
            for (a, b), w in weights.items()
        ),
    )


class FakePending:
    def __init__(self, error: str | None = None) -> None:
        self.error = error

    def wait(self, timeout_s: float) -> list:
        if self.error:
            raise SwitchError(0, self.error)
        return []


class FakeSwitch:
    """An OpenFlow table: ADD replaces same key, DELETE_STRICT needs the exact cookie."""

    def __init__(self, dpid: int, fabric: FakeFabric) -> None:
        self.dpid = dpid
        self.address = f"fake:{dpid}"
        self.table: dict[FlowKey, FlowEntry] = {}
        self.fabric = fabric
        self.fail_next: str | None = None
        self.reads = 0

    def send_batch(self, installs: Sequence, removes: Sequence, cookie: int) -> FakePending:
        if self.fail_next:
            error, self.fail_next = self.fail_next, None
            return FakePending(error)
        for key, out_port in installs:
            self.table[key] = FlowEntry(key, out_port, cookie)
        for entry in removes:
            have = self.table.get(entry.key)
            if have is not None and have.cookie == entry.cookie:
                del self.table[entry.key]
        self.fabric.batches.append((self.dpid, len(installs), len(removes)))
        self.fabric.check()
        return FakePending()

    def read_flows(self, timeout_s: float) -> list[FlowEntry]:
        self.reads += 1
        return list(self.table.values())


class FakeFabric:
    """Switches plus the wiring of the snapshot the packets travel on (links stay up)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.switches = {s.dpid: FakeSwitch(s.dpid, self) for s in snapshot.switches}
        self.batches: list[tuple[int, int, int]] = []
        self.violations: list[str] = []
        self.checking = False
        self.wire(snapshot)

    def wire(self, snapshot: Snapshot) -> None:
        self.peer = {}
        for link in snapshot.links:
            if link.up:
                self.peer[(link.a.dpid, link.a.port_no)] = link.b.dpid
                self.peer[(link.b.dpid, link.b.port_no)] = link.a.dpid
        self.hosts = {str(h.ip): (snapshot.dpid_of()[h.node], h.port_no) for h in snapshot.hosts}

    def deliver(self, src: int, ip: str) -> str | None:
        """None if a packet from switch `src` reaches host `ip`, else what went wrong."""
        here, seen = src, []
        for _ in range(len(self.switches) + 1):
            seen.append(here)
            entry = self.switches[here].table.get(route_key(ip))
            if entry is None:
                return f"black hole at {here} (path {seen})"
            if (here, entry.out_port) == self.hosts[ip]:
                return None
            nxt = self.peer.get((here, entry.out_port))
            if nxt is None:
                return f"dead port {entry.out_port} at {here}"
            here = nxt
        return f"loop {seen}"

    def check(self) -> None:
        if not self.checking:
            return
        for src, ip in itertools.product(self.switches, self.hosts):
            problem = self.deliver(src, ip)
            if problem:
                self.violations.append(f"after batch {len(self.batches)}: {src}->{ip}: {problem}")


def connect_all(rec: Reconciler, fabric: FakeFabric) -> None:
    for sw in fabric.switches.values():
        rec.switch_connected(sw)
    rec.run_until_idle()
