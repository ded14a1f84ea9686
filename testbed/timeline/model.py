"""The topology timeline: the initial network plus time-ordered changes, as plain data.

Produced by testbed.timeline.build from a scenario; consumed by the run clock (link up/down,
delay/rate updates, ground-link handovers) and exported as JSON lines or Parquet. Times are
nanoseconds since the scenario epoch (`t_ns`); delays in microseconds; rates in bits/s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from testbed.errors import InputError

NodeKind = Literal["satellite", "ground"]
LinkKind = Literal["isl", "ground"]
EventKind = Literal["up", "down", "update", "handover"]
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Node:
    """A node of the emulated network. `plane`/`slot` are set for satellites with +Grid."""

    name: str
    kind: NodeKind
    norad_id: int | None = None
    plane: int | None = None
    slot: int | None = None
    lat_deg: float | None = None
    lon_deg: float | None = None


def link_id(a: str, b: str) -> str:
    """Canonical, order-independent name of the link between nodes a and b."""
    x, y = sorted((a, b))
    return f"{x}--{y}"


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """One change of one link (or a handover at a ground station).

    kind: up (with its initial values), down, update (only the changed fields are set),
    handover (station switches from `a`=old satellite to `b`=new satellite; the matching
    down/up events follow at the same t_ns).
    rate_bps None on a ground link means "the link's trace decides the rate".
    """

    t_ns: int
    kind: EventKind
    link: str
    link_kind: LinkKind
    a: str
    b: str
    delay_us: int | None = None
    rate_bps: int | None = None
    distance_km: float | None = None
    cause: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Timeline:
    """Nodes, the scenario window, and events sorted by time (stable within an instant)."""

    scenario: str
    epoch: datetime
    duration_s: float
    step_s: float
    nodes: list[Node]
    events: list[LinkEvent] = field(default_factory=list)

    def sort(self) -> None:
        order = {"handover": 0, "down": 1, "up": 2, "update": 3}
        self.events.sort(key=lambda e: (e.t_ns, order[e.kind]))

    def between(self, start_ns: int, end_ns: int) -> Iterator[LinkEvent]:
        """Events with start_ns <= t_ns < end_ns."""
        return (e for e in self.events if start_ns <= e.t_ns < end_ns)

    def links_at(self, t_ns: int) -> dict[str, LinkEvent]:
        """Links up at t_ns with their current values (an `up` event merged with updates)."""
        state: dict[str, dict[str, Any]] = {}
        for e in self.events:
            if e.t_ns > t_ns:
                break
            if e.kind == "up":
                state[e.link] = e.to_dict()
            elif e.kind == "down":
                state.pop(e.link, None)
            elif e.kind == "update" and e.link in state:
                state[e.link].update({k: v for k, v in e.to_dict().items()
                                      if k in {"delay_us", "rate_bps", "distance_km"}})
        return {k: LinkEvent(**v) for k, v in state.items()}

    # --- JSON lines (header line, then one event per line) -------------------------------

    def _header(self) -> dict[str, Any]:
        return {
            "type": "header",
            "format_version": FORMAT_VERSION,
            "scenario": self.scenario,
            "epoch": self.epoch.isoformat(),
            "duration_s": self.duration_s,
            "step_s": self.step_s,
            "nodes": [asdict(n) for n in self.nodes],
        }

    def to_jsonl(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("w", encoding="utf-8") as out:
            out.write(json.dumps(self._header()) + "\n")
            for e in self.events:
                out.write(json.dumps(e.to_dict()) + "\n")
        return path

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Timeline:
        path = Path(path)
        rows = _read_jsonl(path)
        try:
            header = next(rows)
        except StopIteration:
            raise InputError("empty timeline file", path=path) from None
        line_no, head = header
        if head.get("type") != "header" or head.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"expected a timeline header with format_version {FORMAT_VERSION}",
                path=path, line=line_no,
            )
        timeline = cls(
            scenario=head["scenario"],
            epoch=datetime.fromisoformat(head["epoch"]),
            duration_s=float(head["duration_s"]),
            step_s=float(head["step_s"]),
            nodes=[Node(**n) for n in head["nodes"]],
        )
        for line_no, row in rows:
            try:
                timeline.events.append(LinkEvent(**row))
            except TypeError as exc:
                raise InputError(f"not a timeline event: {exc}", path=path, line=line_no) from None
        return timeline

    # --- Parquet (one table of events; header in the schema metadata) ---------------------

    def to_parquet(self, path: str | Path) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        columns: dict[str, list[Any]] = {name: [] for name in LinkEvent.__dataclass_fields__}
        for e in self.events:
            for name in columns:
                columns[name].append(getattr(e, name))
        table = pa.table(columns)
        meta = {b"testbed.timeline": json.dumps(self._header()).encode()}
        pq.write_table(table.replace_schema_metadata(meta), path)
        return path

    @classmethod
    def from_parquet(cls, path: str | Path) -> Timeline:
        import pyarrow.parquet as pq

        path = Path(path)
        table = pq.read_table(path)
        meta = (table.schema.metadata or {}).get(b"testbed.timeline")
        if meta is None:
            raise InputError("not a timeline Parquet file (no testbed.timeline metadata)",
                             path=path)
        head = json.loads(meta)
        timeline = cls(
            scenario=head["scenario"],
            epoch=datetime.fromisoformat(head["epoch"]),
            duration_s=float(head["duration_s"]),
            step_s=float(head["step_s"]),
            nodes=[Node(**n) for n in head["nodes"]],
        )
        for row in table.to_pylist():
            timeline.events.append(LinkEvent(**row))
        return timeline


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"invalid JSON: {exc.msg}", path=path, line=line_no) from None


def count_by_kind(events: Iterable[LinkEvent]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[e.kind] = out.get(e.kind, 0) + 1
    return out
