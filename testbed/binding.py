"""Binding satellites to the lab's boards: which board executes which satellite's models, when.

Owns `nodes.satellite.bind: pool`: a few boards serve many satellites, so the pool is rebound to
whichever satellites need compute as contacts change (over the area of interest, or in contact
with a ground station). Pure logic on times and names: it reads demand intervals (from contact
windows or from a timeline's ground links) and returns every rebinding; it creates nothing and
moves no process (the run applies the plan through the backends).

Rules (deterministic: the same inputs always give the same plan):
- A satellite needs a board while any of its demand intervals `[start_ns, end_ns)` is open.
- A bound satellite keeps its board until its demand ends (no preemption).
- At each instant, boards whose satellite's demand ended are released first; then satellites
  that need a board, in order of (start of their current demand, name), take a free board:
  the one they had last if it is free, else the first free board in inventory order.
- A satellite that finds no free board is recorded as unserved at that instant and waits; it is
  served at the next instant a board frees up, if it still needs one.

Example:
    plan = bind_pool(["jetson1", "jetson2"], {"sat3": [(0, 60_000_000_000)]})
    plan.board_of("sat3", 10_000_000_000)   # "jetson1"
    plan.rebindings[0]                      # Rebinding(0, "jetson1", None, "sat3")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from testbed.errors import InputError, TestbedError

Interval = tuple[int, int]  # [start_ns, end_ns) since the scenario epoch


class BindingError(TestbedError):
    """The binding inputs are inconsistent (names the board, satellite or interval)."""


@dataclass(frozen=True, slots=True)
class Rebinding:
    """At `t_ns`, `board` stops serving `from_satellite` and starts serving `to_satellite`
    (None: the board was free / becomes free)."""

    t_ns: int
    board: str
    from_satellite: str | None
    to_satellite: str | None


@dataclass(frozen=True, slots=True)
class Unserved:
    """At `t_ns`, `satellite` needed a board and none was free."""

    t_ns: int
    satellite: str


@dataclass
class BindingPlan:
    """Every rebinding of the pool, in time order, and the satellites left waiting."""

    boards: tuple[str, ...]
    rebindings: list[Rebinding] = field(default_factory=list)
    unserved: list[Unserved] = field(default_factory=list)

    def at(self, t_ns: int) -> dict[str, str]:
        """board -> satellite bound at `t_ns` (after the changes of that instant)."""
        state: dict[str, str] = {}
        for r in self.rebindings:
            if r.t_ns > t_ns:
                break
            if r.to_satellite is None:
                state.pop(r.board, None)
            else:
                state[r.board] = r.to_satellite
        return state

    def board_of(self, satellite: str, t_ns: int) -> str | None:
        """The board serving `satellite` at `t_ns`, or None."""
        for board, sat in self.at(t_ns).items():
            if sat == satellite:
                return board
        return None

    def to_records(self) -> list[dict[str, Any]]:
        """Rebindings as plain dicts (t_ns, board, from_satellite, to_satellite) for the run."""
        return [asdict(r) for r in self.rebindings]


def merge_intervals(intervals: Iterable[Interval], *, what: str = "") -> list[Interval]:
    """Sorted, non-overlapping union of `[start_ns, end_ns)` intervals (touching ones join)."""
    out: list[list[int]] = []
    for start, end in sorted(intervals):
        if end < start:
            raise BindingError(f"{what}interval [{start}, {end}) ns: end before start")
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out if e > s]


def bind_pool(boards: Sequence[str], demand: Mapping[str, Iterable[Interval]]) -> BindingPlan:
    """Rebind the pool `boards` (inventory order) to the satellites of `demand` (satellite ->
    intervals in ns since the epoch) following the module's rules. Raises BindingError for an
    empty pool, duplicate board names, or an interval whose end precedes its start."""
    if not boards:
        raise BindingError("bind: pool needs at least one board (role board in the inventory)")
    if len(set(boards)) != len(boards):
        raise BindingError(f"boards {list(boards)}: names must be unique")
    merged = {sat: merge_intervals(iv, what=f"satellite {sat}: ") for sat, iv in demand.items()}
    instants = sorted({t for ivs in merged.values() for s, e in ivs for t in (s, e)})
    plan = BindingPlan(tuple(boards))
    bound: dict[str, str] = {}  # board -> satellite
    last_board: dict[str, str] = {}  # satellite -> the board it had last
    for t in instants:
        open_since = {sat: s for sat, ivs in merged.items() for s, e in ivs if s <= t < e}
        released = {b: sat for b, sat in bound.items() if sat not in open_since}
        for b in released:
            del bound[b]
        served = set(bound.values())
        waiting = sorted((s, sat) for sat, s in open_since.items() if sat not in served)
        taken: dict[str, str] = {}
        for _, sat in waiting:
            free = [b for b in boards if b not in bound]
            if not free:
                plan.unserved.append(Unserved(t, sat))
                continue
            prev = last_board.get(sat)
            board = prev if prev is not None and prev in free else free[0]
            bound[board] = sat
            last_board[sat] = board
            taken[board] = sat
        for b in boards:  # records in board order within an instant
            if b in taken or b in released:
                plan.rebindings.append(Rebinding(t, b, released.get(b), taken.get(b)))
    return plan


def _ns_since(epoch: np.datetime64, t: np.datetime64) -> int:
    return int((np.datetime64(t, "ns") - epoch).astype("timedelta64[ns]").astype(np.int64))


def demand_from_contacts(windows: Iterable[Any], epoch: datetime | np.datetime64,
                         *, stations: Sequence[str] | None = None) -> dict[str, list[Interval]]:
    """Demand from contact windows (testbed.orbit.ContactWindow): a satellite needs a board from
    rise to set (of any of `stations`; all when None)."""
    if isinstance(epoch, datetime) and epoch.tzinfo is not None:
        epoch = epoch.astimezone(UTC).replace(tzinfo=None)
    ep = np.datetime64(epoch, "ns")
    out: dict[str, list[Interval]] = {}
    for w in windows:
        if stations is not None and w.station not in stations:
            continue
        out.setdefault(w.satellite, []).append((_ns_since(ep, w.rise_time),
                                                _ns_since(ep, w.set_time)))
    return {sat: merge_intervals(iv, what=f"satellite {sat}: ") for sat, iv in out.items()}


def demand_from_timeline(timeline: Any) -> dict[str, list[Interval]]:
    """Demand from a testbed.timeline.Timeline: a satellite needs a board while it has a ground
    link up (up..down events of link_kind "ground"; still up at the end: until duration_s)."""
    kinds = {n.name: n.kind for n in timeline.nodes}
    end_ns = int(round(timeline.duration_s * 1e9))
    open_at: dict[str, tuple[int, str]] = {}
    out: dict[str, list[Interval]] = {}
    for e in timeline.events:
        if e.link_kind != "ground" or e.kind not in ("up", "down"):
            continue
        sats = [x for x in (e.a, e.b) if kinds.get(x) == "satellite"]
        if len(sats) != 1:
            raise InputError(f"timeline ground link {e.link}: expected one satellite end, got "
                             f"{sats}", field="events")
        if e.kind == "up":
            open_at.setdefault(e.link, (e.t_ns, sats[0]))
        elif e.link in open_at:
            start, sat = open_at.pop(e.link)
            out.setdefault(sat, []).append((start, e.t_ns))
    for start, sat in open_at.values():
        out.setdefault(sat, []).append((start, end_ns))
    return {sat: merge_intervals(iv, what=f"satellite {sat}: ") for sat, iv in out.items()}
