"""Data the controller exchanges with its callers: topology snapshots in, status and routes out.

Owns the wire schema of the local API (pydantic models, JSON both ways) and the cross-field
checks of a snapshot. Knows nothing of OpenFlow messages or of how routes are computed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.errors import SnapshotError

OFPP_MAX = 0xFFFFFF00
"""Highest physical port number OpenFlow 1.3 allows (above it are reserved ports)."""

MAX_GENERATION = 0xFFFFFFFF
"""Generations live in the low 32 bits of a flow cookie."""

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Switch(_Frozen):
    """One OpenFlow switch (an OVS bridge): one per satellite or ground station node."""

    dpid: int = Field(ge=1, le=0xFFFFFFFFFFFFFFFF)
    name: str = Field(min_length=1)


class Host(_Frozen):
    """A node's data-plane interface: the IPv4 address routed to port `port_no` of its switch."""

    node: str = Field(min_length=1)
    ip: IPv4Address
    mac: str
    port_no: int = Field(ge=1, le=OFPP_MAX)

    @field_validator("mac", mode="before")
    @classmethod
    def _mac(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.lower()
            if not _MAC_RE.match(value):
                raise ValueError(f"mac={value!r}: expected six hex octets like 02:00:00:00:00:01")
        return value


class PortRef(_Frozen):
    """One end of a link: a port on a switch."""

    dpid: int = Field(ge=1, le=0xFFFFFFFFFFFFFFFF)
    port_no: int = Field(ge=1, le=OFPP_MAX)


class Link(_Frozen):
    """A bidirectional link between two switch ports; `weight_us` is its current one-way delay."""

    a: PortRef
    b: PortRef
    up: bool = True
    weight_us: float = Field(ge=0.0)
    name: str | None = None

    @field_validator("weight_us")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"weight_us={value}: expected a finite delay >= 0")
        return value

    def label(self) -> str:
        """A readable name for messages: its own name or 'dpidA:port-dpidB:port'."""
        return self.name or f"{self.a.dpid:#x}:{self.a.port_no}-{self.b.dpid:#x}:{self.b.port_no}"


class Snapshot(_Frozen):
    """The whole topology at one instant; the controller makes the switches' flows match it.

    `generation` orders snapshots (strictly increasing across pushes, 1..2**32-1); `at_ns` is an
    optional `time.monotonic_ns()` instant (same host clock) at which to apply it, e.g. a handover;
    `label` is carried into status and logs.

    Example:
        >>> s = Snapshot.parse({"generation": 1, "switches": [{"dpid": 1, "name": "sat0"}]})
        >>> s.switches[0].name
        'sat0'
    """

    generation: int = Field(ge=1, le=MAX_GENERATION)
    switches: tuple[Switch, ...]
    hosts: tuple[Host, ...] = ()
    links: tuple[Link, ...] = ()
    at_ns: int | None = Field(default=None, ge=0)
    label: str | None = None

    @model_validator(mode="after")
    def _cross_check(self) -> Snapshot:
        _check_unique("switch dpid", [s.dpid for s in self.switches])
        _check_unique("switch name", [s.name for s in self.switches])
        _check_unique("host ip", [str(h.ip) for h in self.hosts])
        _check_unique("host mac", [h.mac for h in self.hosts])
        names = {s.name: s.dpid for s in self.switches}
        dpids = set(names.values())
        ports: list[tuple[int, int]] = []
        for host in self.hosts:
            if host.node not in names:
                raise ValueError(
                    f"host {host.ip}: node={host.node!r} is not a switch of this snapshot; "
                    f"expected one of {sorted(names)}"
                )
            ports.append((names[host.node], host.port_no))
        for link in self.links:
            for end in (link.a, link.b):
                if end.dpid not in dpids:
                    raise ValueError(
                        f"link {link.label()}: dpid={end.dpid:#x} is not a switch of this snapshot"
                    )
                ports.append((end.dpid, end.port_no))
            if link.a.dpid == link.b.dpid:
                raise ValueError(f"link {link.label()}: both ends on dpid={link.a.dpid:#x}")
        _check_unique("(dpid, port_no) of hosts and links", ports)
        return self

    @classmethod
    def parse(cls, data: Mapping[str, Any] | str | bytes) -> Snapshot:
        """Validate a mapping or a JSON document; raises SnapshotError naming what is wrong."""
        try:
            if isinstance(data, (str, bytes)):
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise SnapshotError(f"invalid snapshot: {_describe(exc)}") from None

    def dpid_of(self) -> dict[str, int]:
        """Node name -> dpid."""
        return {s.name: s.dpid for s in self.switches}

    def same_topology(self, other: Snapshot) -> bool:
        """True when everything but the schedule (`at_ns`) and `label` is equal."""
        keep = {"generation", "switches", "hosts", "links"}
        return self.model_dump(include=keep) == other.model_dump(include=keep)


def _check_unique(what: str, values: list[Any]) -> None:
    duplicates = [v for v, n in Counter(values).items() if n > 1]
    if duplicates:
        raise ValueError(f"duplicate {what}: {duplicates[:5]}; expected each at most once")


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "snapshot"
        parts.append(f"{loc}: {err.get('msg')}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


class SwitchStatus(BaseModel):
    """One switch as the controller sees it."""

    dpid: int
    name: str | None = None
    connected: bool
    synced_generation: int | None = None
    """Generation whose routes the switch's flows are known to equal (None: not yet synced)."""
    flows: int = 0
    """Flows in the switch's tables as last read or written by the controller."""
    address: str | None = None
    last_sync_ms: float | None = None
    resyncs: int = 0
    last_error: str | None = None


class ApplyRecord(BaseModel):
    """How one generation was applied (times are `time.monotonic_ns()` on the controller host)."""

    generation: int
    label: str | None = None
    at_ns: int | None = None
    received_ns: int
    started_ns: int
    """Routes ready, first flow-mod about to go out."""
    finished_ns: int
    """Last barrier reply received."""
    routes_ms: float = 0.0
    """Time spent computing routes and desired flows (before `started_ns`; ahead of `at_ns`
    for a scheduled snapshot)."""
    flow_mods: int = 0
    """Flows added or replaced (make) plus flows removed (break)."""
    switches_changed: int = 0
    rounds: int = 0
    superseded: list[int] = Field(default_factory=list)
    """Earlier pushed generations skipped because this one was due at the same time."""

    @property
    def apply_ms(self) -> float:
        return (self.finished_ns - self.started_ns) / 1e6

    @property
    def push_to_installed_ms(self) -> float:
        return (self.finished_ns - self.received_ns) / 1e6


class ControllerStatus(BaseModel):
    """What `get_status` returns."""

    pid: int
    generation_pushed: int = 0
    generation_applied: int = 0
    """Generation the controller enforces (its apply pass finished, or loaded from state)."""
    complete: bool = False
    """Every switch of the applied snapshot is connected and synced to it."""
    pending: list[int] = Field(default_factory=list)
    """Pushed generations waiting for their `at_ns`."""
    switches: list[SwitchStatus] = Field(default_factory=list)
    last_apply: ApplyRecord | None = None
    errors: list[str] = Field(default_factory=list)

    def switch(self, dpid: int) -> SwitchStatus:
        """The status of one switch; raises ControllerError when the controller never saw it."""
        for sw in self.switches:
            if sw.dpid == dpid:
                return sw
        raise SnapshotError(f"dpid={dpid:#x}: not known to the controller")


class RouteEntry(BaseModel):
    """Where one switch sends packets for one destination address."""

    dpid: int
    node: str
    ipv4_dst: str
    out_port: int
    next_dpid: int | None = None
    """Next switch on the path (None: the destination host hangs off this switch)."""
    hops: int
    delay_us: float


class RouteTable(BaseModel):
    """Routes of one generation, as returned by `get_routes`."""

    generation: int
    routes: list[RouteEntry] = Field(default_factory=list)

    def path(self, src_dpid: int, ipv4_dst: str) -> list[int]:
        """Switches a packet from `src_dpid` to `ipv4_dst` crosses, source first.

        Raises SnapshotError when the destination is unreachable from `src_dpid`.
        """
        table = {(r.dpid, r.ipv4_dst): r for r in self.routes}
        hops = [src_dpid]
        for _ in range(len(self.routes) + 1):
            entry = table.get((hops[-1], ipv4_dst))
            if entry is None:
                raise SnapshotError(f"{ipv4_dst}: unreachable from dpid={hops[-1]:#x}")
            if entry.next_dpid is None:
                return hops
            hops.append(entry.next_dpid)
        raise SnapshotError(f"{ipv4_dst}: routing loop from dpid={src_dpid:#x}: {hops[:10]}")
