"""Flows as data: what each switch should hold, what it holds, and the ordered changes between.

Owns the flow layout (table 0: one IPv4 unicast route per destination host at priority 100, a
table-miss drop at priority 0), the cookie scheme and the make-before-break ordering. Pure: no
OpenFlow I/O, so it is unit-tested without a switch.

Cookie: the high 32 bits tag the flows this controller writes (`COOKIE_TAG`), the low 32 bits are
the generation of the snapshot that last wrote the flow. A flow is rewritten only when its action
changes, so unchanged flows keep their older cookie; a stale flow is removed by an exact
(match, priority, cookie) delete, which cannot hit a flow a newer generation rewrote.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from controller.routing import Routes

COOKIE_TAG = 0x4C454F43 << 32
"""'LEOC' in the high 32 bits of every cookie this controller writes."""
COOKIE_TAG_MASK = 0xFFFFFFFF00000000
ROUTE_PRIORITY = 100
MISS_PRIORITY = 0
TABLE_ID = 0
ETH_TYPE_IPV4 = 0x0800


def cookie_for(generation: int) -> int:
    """The cookie a flow written for `generation` carries."""
    return COOKIE_TAG | (generation & 0xFFFFFFFF)


def generation_of(cookie: int) -> int | None:
    """The generation encoded in `cookie`, or None when another controller wrote the flow."""
    if cookie & COOKIE_TAG_MASK != COOKIE_TAG:
        return None
    return cookie & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class FlowKey:
    """What identifies an OpenFlow flow in a switch: table, priority and match."""

    table_id: int
    priority: int
    match: tuple[tuple[str, Any], ...]

    def ipv4_dst(self) -> str | None:
        return dict(self.match).get("ipv4_dst")


MISS_KEY = FlowKey(TABLE_ID, MISS_PRIORITY, ())


@lru_cache(maxsize=65536)
def route_key(ipv4_dst: str) -> FlowKey:
    """The key of the route flow for one destination address (cached: keys are immutable)."""
    return FlowKey(TABLE_ID, ROUTE_PRIORITY, (("eth_type", ETH_TYPE_IPV4), ("ipv4_dst", ipv4_dst)))


@dataclass(frozen=True, slots=True)
class FlowEntry:
    """A flow as held by a switch (read from its flow stats or written by the controller)."""

    key: FlowKey
    out_port: int | None
    """Single output port; None: no instructions (drop)."""
    cookie: int
    simple: bool = True
    """False when the instructions are anything but one output or none: never 'equal'."""
    packets: int = 0
    duration_s: float = 0.0
    raw_match: Any = field(default=None, compare=False, hash=False)
    """The os-ken match object a read flow came with, reused to delete it verbatim."""


Desired = dict[FlowKey, int | None]
"""Flow key -> output port (None: drop)."""


@dataclass(frozen=True, slots=True)
class SwitchPlan:
    """Desired flows of one switch plus, per flow, the next switch on the way (None: last)."""

    flows: Desired
    next_dpid: dict[FlowKey, int | None]


def desired_flows(routes: Routes) -> dict[int, SwitchPlan]:
    """Per dpid: a table-miss drop plus one route flow per reachable destination address."""
    plans: dict[int, SwitchPlan] = {}
    for dpid, table in routes.items():
        flows: Desired = {MISS_KEY: None}
        nexts: dict[FlowKey, int | None] = {MISS_KEY: None}
        for ip, (out_port, next_dpid, _, _) in table.items():
            key = route_key(ip)
            flows[key] = out_port
            nexts[key] = next_dpid
        plans[dpid] = SwitchPlan(flows, nexts)
    return plans


@dataclass(frozen=True, slots=True)
class FlowDiff:
    """Changes that make one switch's flows equal to its desired flows."""

    install: list[tuple[FlowKey, int | None]]
    """Flows to add or replace (OFPFC_ADD), with their output port."""
    remove: list[FlowEntry]
    """Flows to delete (exact match, priority and cookie)."""
    kept: int

    @property
    def empty(self) -> bool:
        return not self.install and not self.remove


def diff_flows(
    desired: Mapping[FlowKey, int | None], installed: Mapping[FlowKey, FlowEntry]
) -> FlowDiff:
    """Which flows to install and which to remove; a flow already right is left alone.

    A key present on both sides with another action is replaced in place (an ADD with the same
    table, priority and match overwrites it atomically), so it is never in `remove`.
    """
    install: list[tuple[FlowKey, int | None]] = []
    kept = 0
    for key, out_port in desired.items():
        have = installed.get(key)
        if have is not None and have.simple and have.out_port == out_port:
            kept += 1
        else:
            install.append((key, out_port))
    remove = [entry for key, entry in installed.items() if key not in desired]
    return FlowDiff(install, remove, kept)


Round = dict[int, list[tuple[FlowKey, int | None]]]
"""dpid -> flows to install in this round."""


def plan_rounds(
    installs: Mapping[int, list[tuple[FlowKey, int | None]]],
    next_dpid: Callable[[int, FlowKey], int | None],
) -> list[Round]:
    """Group installs into rounds, destination side first (make-before-break).

    `next_dpid(dpid, key)` is the next switch toward the flow's destination on the *new* routes
    (None at the last switch or for flows without a path). A changed flow goes in round L, where
    L counts the changed flows on its new path from this switch to the destination, itself
    included. Rounds run in order with a barrier between them, so when a switch starts sending
    toward its new next hop, every switch after it on the new path already forwards on the new
    routes (unchanged flows were right all along). Packets still on old routes meet either old
    entries or entries of the new, already complete, path: no loop and no black hole during a
    planned swap. A lone change needs one round, however far it is from the destination.
    """
    changed = {(dpid, key) for dpid, flows in installs.items() for key, _ in flows}
    level: dict[tuple[int, FlowKey], int] = {}

    def level_of(dpid: int, key: FlowKey) -> int:
        chain: list[int] = []
        seen: set[int] = set()
        node: int | None = dpid
        while node is not None and (node, key) not in level:
            if node in seen:
                raise ValueError(f"next hops toward {key.ipv4_dst()} loop: {chain[:10]}")
            chain.append(node)
            seen.add(node)
            node = next_dpid(node, key)
        count = level[(node, key)] if node is not None else 0
        for hop in reversed(chain):
            count += (hop, key) in changed
            level[(hop, key)] = count
        return level[(dpid, key)]

    by_level: dict[int, Round] = defaultdict(lambda: defaultdict(list))
    for dpid, flows in installs.items():
        for key, out_port in flows:
            by_level[level_of(dpid, key)][dpid].append((key, out_port))
    return [{dpid: flows for dpid, flows in by_level[n].items()} for n in sorted(by_level)]
