"""Build the topology timeline of a scenario: geometry sampled every `timeline.step_s`, turned
into link up/down events, delay/rate updates above thresholds, and ground-link handovers.

Owns the translation from orbit arrays to events; the orbit math is in testbed.orbit.
Handover instants: when the serving satellite sets (or the first one rises) the refined
contact-window time (10 ms) is used; a switch between two visible satellites is placed by linear
interpolation of their elevation difference between the two surrounding steps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from testbed.constellation import ResolvedConstellation, ground_station
from testbed.orbit.contacts import ContactWindow, contact_windows
from testbed.orbit.groundlinks import NO_SATELLITE, assign_ground_links
from testbed.orbit.isl import isl_state, plus_grid
from testbed.orbit.linkbudget import IslLinkBudget, propagation_delay_us
from testbed.orbit.planes import plane_assignment
from testbed.orbit.propagate import iter_propagate
from testbed.orbit.times import as_datetime64, time_grid
from testbed.orbit.tle import Satellite
from testbed.orbit.visibility import GroundStation, look_angles
from testbed.scenario.model import Scenario
from testbed.timeline.model import LinkEvent, Node, Timeline, link_id

Progress = Callable[[str, int, int], None]  # (step name, done, total)


def node_names(satellites: list[Satellite]) -> list[str]:
    """Readable, unique, kebab-case node names from satellite names ('STARLINK-1007' ->
    'starlink-1007')."""
    names: list[str] = []
    seen: set[str] = set()
    for sat in satellites:
        base = re.sub(r"[^a-z0-9]+", "-", sat.name.lower()).strip("-") or f"sat-{sat.norad_id}"
        name = base if base not in seen else f"{base}-{sat.norad_id}"
        seen.add(name)
        names.append(name)
    return names


@dataclass
class Geometry:
    """Sampled geometry of a scenario (arrays over the step grid)."""

    times: np.ndarray  # (T,) datetime64[ns]
    t_ns: np.ndarray  # (T,) int64, ns since epoch
    pairs: np.ndarray  # (M, 2) ISL satellite indices
    isl_distance_km: np.ndarray  # (M, T)
    isl_up: np.ndarray  # (M, T) bool
    isl_grazing: np.ndarray  # (M, T) bool
    elevation_deg: dict[str, np.ndarray]  # station -> (N, T)
    range_km: dict[str, np.ndarray]  # station -> (N, T)


def sample_geometry(scenario: Scenario, sats: list[Satellite],
                    progress: Progress | None = None) -> Geometry:
    """Propagate every satellite over the step grid and derive ISL and ground geometry."""
    step_s = scenario.timeline.step_s
    count = int(math.floor(scenario.duration_s / step_s + 1e-9)) + 1
    times = time_grid(scenario.epoch, step_s, count)
    epoch64 = as_datetime64(scenario.epoch)
    t_ns = (times - epoch64).astype("timedelta64[ns]").astype(np.int64)
    isl = scenario.links.isl
    if isl.pattern == "plus-grid" and len(sats) >= 2:
        pairs = plus_grid(plane_assignment(sats, scenario.epoch))
    else:
        pairs = np.empty((0, 2), dtype=np.int64)
    stations = [ground_station(g) for g in scenario.ground_stations]
    m, n = len(pairs), len(sats)
    dist = np.full((m, count), np.nan)
    up = np.zeros((m, count), dtype=bool)
    grazing = np.zeros((m, count), dtype=bool)
    elev = {s.name: np.full((n, count), np.nan) for s in stations}
    rng = {s.name: np.full((n, count), np.nan) for s in stations}
    chunk = max(1, min(count, 2_000_000 // max(n, 1)))
    for part, prop in iter_propagate(sats, times, chunk_instants=chunk):
        state = isl_state(prop.positions_km, pairs, max_range_km=isl.max_range_km,
                          grazing_altitude_km=isl.grazing_altitude_km)
        dist[:, part], up[:, part], grazing[:, part] = state.distance_km, state.up, state.grazing
        for st in stations:
            look = look_angles(prop.positions_km, st)
            elev[st.name][:, part] = look.elevation_deg
            rng[st.name][:, part] = look.range_km
        if progress is not None:
            progress("propagate", part.stop, count)
    return Geometry(times, t_ns, pairs, dist, up, grazing, elev, rng)


def _isl_capacity_bps(scenario: Scenario, distance_km: np.ndarray) -> np.ndarray:
    isl = scenario.links.isl
    if isl.capacity == "constant":
        assert isl.rate_mbps is not None  # IslSpec's validator guarantees it
        return np.full(distance_km.shape, isl.rate_mbps * 1e6)
    budget = IslLinkBudget(**isl.link_budget.model_dump())
    with np.errstate(invalid="ignore"):
        return budget.capacity_bps(np.where(distance_km > 0, distance_km, np.nan))


class _EventSink:
    """Collects events; keeps the last emitted delay/rate per link for threshold diffing."""

    def __init__(self, delay_threshold_us: int, rate_threshold_ratio: float) -> None:
        self.events: list[LinkEvent] = []
        self.delay_threshold_us = delay_threshold_us
        self.rate_threshold_ratio = rate_threshold_ratio
        self.last: dict[str, tuple[int, int | None]] = {}

    def add(self, event: LinkEvent) -> None:
        self.events.append(event)

    def up(self, t_ns: int, kind: str, a: str, b: str, distance_km: float,
           rate_bps: int | None, cause: str) -> None:
        lid = link_id(a, b)
        delay_us = int(round(float(propagation_delay_us(distance_km))))
        self.events.append(LinkEvent(t_ns, "up", lid, kind, a, b, delay_us, rate_bps,  # type: ignore[arg-type]
                                     round(distance_km, 3), cause))
        self.last[lid] = (delay_us, rate_bps)

    def down(self, t_ns: int, kind: str, a: str, b: str, cause: str) -> None:
        lid = link_id(a, b)
        self.events.append(LinkEvent(t_ns, "down", lid, kind, a, b, cause=cause))  # type: ignore[arg-type]
        self.last.pop(lid, None)

    def maybe_update(self, t_ns: int, kind: str, a: str, b: str, distance_km: float,
                     rate_bps: int | None) -> None:
        lid = link_id(a, b)
        last_delay, last_rate = self.last[lid]
        delay_us = int(round(float(propagation_delay_us(distance_km))))
        new_delay = delay_us if abs(delay_us - last_delay) > self.delay_threshold_us else None
        new_rate = None
        if rate_bps is not None and last_rate is not None and last_rate > 0:
            if abs(rate_bps - last_rate) / last_rate > self.rate_threshold_ratio:
                new_rate = rate_bps
        if new_delay is None and new_rate is None:
            return
        self.events.append(LinkEvent(t_ns, "update", lid, kind, a, b,  # type: ignore[arg-type]
                                     new_delay, new_rate, round(distance_km, 3), "step"))
        self.last[lid] = (new_delay if new_delay is not None else last_delay,
                          new_rate if new_rate is not None else last_rate)


def _isl_events(sink: _EventSink, geo: Geometry, names: list[str], capacity: np.ndarray) -> None:
    """Up/down on state changes; updates when delay or rate moved past the thresholds.

    Vectorised over links, one pass over instants (1,000-satellite shells have 2,000 ISLs).
    """
    m = len(geo.pairs)
    if m == 0:
        return
    a_names = [names[i] for i in geo.pairs[:, 0]]
    b_names = [names[j] for j in geo.pairs[:, 1]]
    delay_us = np.rint(propagation_delay_us(geo.isl_distance_km)).astype(np.int64, copy=False)
    rate_bps = np.nan_to_num(capacity, nan=0.0).astype(np.int64)
    last_delay = np.zeros(m, dtype=np.int64)
    last_rate = np.zeros(m, dtype=np.int64)
    was_up = np.zeros(m, dtype=bool)
    for t in range(len(geo.t_ns)):
        t_ns = int(geo.t_ns[t])
        is_up = geo.isl_up[:, t]
        for k in np.flatnonzero(is_up & ~was_up):
            sink.add(LinkEvent(t_ns, "up", link_id(a_names[k], b_names[k]), "isl", a_names[k],
                               b_names[k], int(delay_us[k, t]), int(rate_bps[k, t]),
                               round(float(geo.isl_distance_km[k, t]), 3),
                               "initial" if t == 0 else "in-range"))
        for k in np.flatnonzero(~is_up & was_up):
            sink.add(LinkEvent(t_ns, "down", link_id(a_names[k], b_names[k]), "isl", a_names[k],
                               b_names[k], cause="grazing" if geo.isl_grazing[k, t]
                               else "out-of-range"))
        new = is_up & ~was_up
        last_delay[new], last_rate[new] = delay_us[new, t], rate_bps[new, t]
        stay = is_up & was_up
        delay_moved = stay & (np.abs(delay_us[:, t] - last_delay) > sink.delay_threshold_us)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate_moved = stay & (last_rate > 0) & (
                np.abs(rate_bps[:, t] - last_rate) / np.maximum(last_rate, 1)
                > sink.rate_threshold_ratio)
        for k in np.flatnonzero(delay_moved | rate_moved):
            sink.add(LinkEvent(t_ns, "update", link_id(a_names[k], b_names[k]), "isl",
                               a_names[k], b_names[k],
                               int(delay_us[k, t]) if delay_moved[k] else None,
                               int(rate_bps[k, t]) if rate_moved[k] else None,
                               round(float(geo.isl_distance_km[k, t]), 3), "step"))
        last_delay[delay_moved] = delay_us[delay_moved, t]
        last_rate[rate_moved] = rate_bps[rate_moved, t]
        was_up = is_up


def _crossing_ns(geo: Geometry, station: str, t: int, old: int, new: int,
                 windows: dict[int, list[ContactWindow]], epoch64: np.datetime64,
                 hysteresis_deg: float) -> int:
    """Refined instant of a serving change that the grid sees between steps t-1 and t."""
    lo_ns, hi_ns = int(geo.t_ns[t - 1]), int(geo.t_ns[t])
    # the old satellite set, or (no old) the new one rose: use the 10 ms contact-window times
    refined: list[int] = []
    if old != NO_SATELLITE:
        refined += [int((w.set_time - epoch64).astype(np.int64)) for w in windows.get(old, [])]
    else:
        refined += [int((w.rise_time - epoch64).astype(np.int64)) for w in windows.get(new, [])]
    inside = [x for x in refined if lo_ns < x <= hi_ns]
    if inside:
        return inside[0]
    if old != NO_SATELLITE and new != NO_SATELLITE:  # both visible: interpolate the switch
        el = geo.elevation_deg[station]
        d0 = el[new, t - 1] - el[old, t - 1] - hysteresis_deg
        d1 = el[new, t] - el[old, t] - hysteresis_deg
        if np.isfinite(d0) and np.isfinite(d1) and d1 != d0:
            frac = min(max(-d0 / (d1 - d0), 0.0), 1.0)
            return lo_ns + int(round(frac * (hi_ns - lo_ns)))
    return hi_ns


def _ground_events(sink: _EventSink, scenario: Scenario, geo: Geometry, sats: list[Satellite],
                   names: list[str], station: GroundStation) -> None:
    spec = scenario.links.ground
    rate_bps = None if spec.downlink.trace is not None else int(spec.downlink.rate_mbps * 1e6)
    el = geo.elevation_deg[station.name]
    serving = assign_ground_links(el, station.min_elevation_deg, spec.policy,
                                  hysteresis_deg=spec.hysteresis_deg)
    epoch64 = as_datetime64(scenario.epoch)
    end = scenario.epoch + timedelta(seconds=scenario.duration_s)
    windows: dict[int, list[ContactWindow]] = {}
    involved = sorted({int(s) for s in np.unique(serving) if s != NO_SATELLITE})
    if involved:
        for w in contact_windows([sats[i] for i in involved], station, scenario.epoch, end,
                                 step_s=min(10.0, scenario.timeline.step_s * 5)):
            windows.setdefault(involved[w.satellite_index], []).append(w)
    gs = station.name
    current = NO_SATELLITE
    for t in range(len(geo.t_ns)):
        new = int(serving[t])
        if new != current:
            t_ns = 0 if t == 0 else _crossing_ns(geo, gs, t, current, new, windows, epoch64,
                                                         spec.hysteresis_deg)
            if t > 0:
                sink.events.append(LinkEvent(
                    t_ns, "handover", f"{gs}:handover", "ground",
                    names[current] if current != NO_SATELLITE else "",
                    names[new] if new != NO_SATELLITE else "", cause=spec.policy))
            if current != NO_SATELLITE:
                sink.down(t_ns, "ground", gs, names[current], "handover")
            if new != NO_SATELLITE:
                sink.up(t_ns, "ground", gs, names[new], float(geo.range_km[gs][new, t]),
                        rate_bps, "initial" if t == 0 else "handover")
            current = new
        elif current != NO_SATELLITE:
            sink.maybe_update(int(geo.t_ns[t]), "ground", gs, names[current],
                              float(geo.range_km[gs][current, t]), rate_bps)


def build_timeline(scenario: Scenario, constellation: ResolvedConstellation,
                   progress: Progress | None = None) -> tuple[Timeline, Geometry]:
    """The scenario's timeline (initial state as `up` events at t=0, then changes)."""
    sats = constellation.satellites
    names = node_names(sats)
    geo = sample_geometry(scenario, sats, progress)
    nodes = [Node(n, "satellite", s.norad_id, s.plane, s.slot)
             for n, s in zip(names, sats, strict=True)]
    nodes += [Node(g.name, "ground", lat_deg=g.lat_deg, lon_deg=g.lon_deg)
              for g in scenario.ground_stations]
    sink = _EventSink(scenario.timeline.delay_threshold_us,
                      scenario.timeline.rate_threshold_ratio)
    _isl_events(sink, geo, names, _isl_capacity_bps(scenario, geo.isl_distance_km))
    if progress is not None:
        progress("isl events", 1, 1)
    for g in scenario.ground_stations:
        _ground_events(sink, scenario, geo, sats, names, ground_station(g))
    timeline = Timeline(scenario.name, scenario.epoch, scenario.duration_s,
                        scenario.timeline.step_s, nodes, sink.events)
    timeline.sort()
    return timeline, geo

