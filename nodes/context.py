"""The run context the orchestrator pushes to an agent (`POST /context`), parsed and validated.

Owns the shape of that document only: who this node is in the run, its peers' data IPs, the
data-plane port, the scenario clock (start, speed) and the node's contact windows. Jobs read it
through their NodeContext; the data plane (dataplane.py) and the contact schedule
(contacts.py) are built from it.

    {"node": "sat1", "peers": {"gs": "10.0.0.1"}, "data_port": 7100,
     "scenario_start_unix_s": 1721088000.0, "speed": 1.0,
     "contacts": [{"peer": "gs", "start_s": 120.0, "end_s": 480.0}]}
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from nodes.errors import ContextError

DEFAULT_DATA_PORT = 7100
_FIELDS = ("node", "peers", "data_port", "scenario_start_unix_s", "speed", "contacts")


@dataclass(frozen=True)
class Contact:
    """One window in which `peer` (a ground station) is reachable; scenario seconds from start."""

    peer: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class RunContext:
    """What the orchestrator told this node about the run (see the module docstring)."""

    node: str
    peers: Mapping[str, str]
    data_port: int = DEFAULT_DATA_PORT
    scenario_start_unix_s: float = 0.0
    speed: float = 1.0
    contacts: tuple[Contact, ...] = ()

    @classmethod
    def from_json(cls, doc: object) -> RunContext:
        """Validates a pushed document; ContextError names the field, the value and the rule."""
        if not isinstance(doc, Mapping):
            raise ContextError(f"context {doc!r}: expected a JSON object")
        unknown = sorted(set(doc) - set(_FIELDS))
        if unknown:
            raise ContextError(f"context: unknown field(s) {', '.join(unknown)}; "
                               f"valid: {', '.join(_FIELDS)}")
        node = doc.get("node")
        if not isinstance(node, str) or not node:
            raise ContextError(f"context field node={node!r}: expected a node name")
        peers = doc.get("peers", {})
        if not isinstance(peers, Mapping):
            raise ContextError(f"context field peers={peers!r}: expected {{name: data_ip}}")
        for name, ip in peers.items():
            try:
                ipaddress.ip_address(ip)
            except (TypeError, ValueError):
                raise ContextError(f"context field peers[{name!r}]={ip!r}: expected an IP "
                                   "address") from None
        port = doc.get("data_port", DEFAULT_DATA_PORT)
        if type(port) is not int or not 1 <= port <= 65535:
            raise ContextError(f"context field data_port={port!r}: expected an integer in "
                               "1..65535")
        start = _number(doc, "scenario_start_unix_s", 0.0)
        speed = _number(doc, "speed", 1.0)
        if not speed > 0:
            raise ContextError(f"context field speed={speed!r}: expected a number > 0")
        raw_contacts = doc.get("contacts", [])
        if not isinstance(raw_contacts, list):
            raise ContextError(f"context field contacts={raw_contacts!r}: expected a list")
        contacts = tuple(_contact(i, c) for i, c in enumerate(raw_contacts))
        return cls(node=node, peers=dict(peers), data_port=port, scenario_start_unix_s=start,
                   speed=speed, contacts=tuple(sorted(contacts, key=lambda c: c.start_s)))

    def to_json(self) -> dict[str, object]:
        return {"node": self.node, "peers": dict(self.peers), "data_port": self.data_port,
                "scenario_start_unix_s": self.scenario_start_unix_s, "speed": self.speed,
                "contacts": [vars(c) for c in self.contacts]}


def _number(doc: Mapping[str, object], name: str, default: float) -> float:
    value = doc.get(name, default)
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise ContextError(f"context field {name}={value!r}: expected a finite number")
    return float(value)  # type: ignore[arg-type]


def _contact(index: int, raw: object) -> Contact:
    where = f"context field contacts[{index}]"
    if not isinstance(raw, Mapping) or set(raw) != {"peer", "start_s", "end_s"}:
        raise ContextError(f"{where}={raw!r}: expected {{peer, start_s, end_s}}")
    peer = raw["peer"]
    if not isinstance(peer, str) or not peer:
        raise ContextError(f"{where}.peer={peer!r}: expected a node name")
    start_s, end_s = _number(raw, "start_s", 0.0), _number(raw, "end_s", 0.0)
    if not end_s > start_s:
        raise ContextError(f"{where}: start_s={start_s}, end_s={end_s}, expected end_s > "
                           "start_s")
    return Contact(peer=peer, start_s=start_s, end_s=end_s)


class ContextRef:
    """The latest pushed RunContext, shared by the agent and its jobs (None until a push)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: RunContext | None = None

    def get(self) -> RunContext | None:
        with self._lock:
            return self._value

    def set(self, value: RunContext) -> None:
        with self._lock:
            self._value = value

    def require(self, who: str) -> RunContext:
        """The context; ContextError naming `who` needed it when none was pushed yet."""
        value = self.get()
        if value is None:
            raise ContextError(f"{who}: no run context pushed yet (POST /context)")
        return value
