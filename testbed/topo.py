"""Topology summary of a scenario: contact windows and link statistics, as data for the CLI.

Computes nothing new: it runs the constellation resolution, the timeline builder and the
contact-window search, and condenses their output into rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from testbed.constellation import ResolvedConstellation, ground_station, resolve_constellation
from testbed.orbit.contacts import ContactWindow, contact_windows
from testbed.orbit.linkbudget import propagation_delay_us
from testbed.scenario.model import Scenario
from testbed.timeline.build import Geometry, Progress, build_timeline
from testbed.timeline.model import Timeline


@dataclass(frozen=True)
class LinkStats:
    """Distribution of one quantity over all (link, instant) samples where links are up."""

    name: str
    unit: str
    minimum: float
    median: float
    maximum: float


@dataclass
class TopologyReport:
    scenario: Scenario
    constellation: ResolvedConstellation
    timeline: Timeline
    geometry: Geometry
    windows: list[ContactWindow]
    isl_count: int
    isl_up_fraction: float
    isl_stats: list[LinkStats]
    coverage_fraction: dict[str, float]
    handovers: dict[str, int]


def _stats(name: str, unit: str, values: np.ndarray) -> LinkStats:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return LinkStats(name, unit, float("nan"), float("nan"), float("nan"))
    return LinkStats(name, unit, float(v.min()), float(np.median(v)), float(v.max()))


def topology_report(scenario: Scenario, progress: Progress | None = None) -> TopologyReport:
    constellation = resolve_constellation(scenario)
    if progress is not None:
        progress("constellation", 1, 1)
    timeline, geo = build_timeline(scenario, constellation, progress)
    end = scenario.epoch + timedelta(seconds=scenario.duration_s)
    windows: list[ContactWindow] = []
    for spec in scenario.ground_stations:
        for w in contact_windows(constellation.satellites, ground_station(spec), scenario.epoch,
                                 end, step_s=10.0):
            windows.append(w)
    windows.sort(key=lambda w: (w.rise_time, w.station))
    up = geo.isl_up
    dist_up = np.where(up, geo.isl_distance_km, np.nan)
    stats = [_stats("ISL distance", "km", dist_up),
             _stats("ISL one-way delay", "ms", propagation_delay_us(dist_up) / 1000.0)]
    rates = [e.rate_bps for e in timeline.events if e.link_kind == "isl" and e.rate_bps]
    if rates:
        stats.append(_stats("ISL capacity (at events)", "Mbit/s", np.array(rates) / 1e6))
    coverage: dict[str, float] = {}
    handovers: dict[str, int] = {}
    for spec in scenario.ground_stations:
        el = geo.elevation_deg[spec.name]
        with np.errstate(invalid="ignore"):
            coverage[spec.name] = float((el >= spec.min_elevation_deg).any(axis=0).mean())
        handovers[spec.name] = sum(1 for e in timeline.events
                                   if e.kind == "handover" and e.link == f"{spec.name}:handover")
    return TopologyReport(
        scenario=scenario, constellation=constellation, timeline=timeline, geometry=geo,
        windows=windows, isl_count=len(geo.pairs),
        isl_up_fraction=float(up.mean()) if up.size else 0.0, isl_stats=stats,
        coverage_fraction=coverage, handovers=handovers,
    )


def _utc(t: np.datetime64) -> str:
    return str(t.astype("datetime64[ms]")) + "Z"


def contact_windows_records(report: TopologyReport) -> list[dict[str, Any]]:
    """The contact windows as JSON-ready records, in rise order: `satellite` (its node name in
    the run), `satellite_source_name` (its name in the TLE/Walker source), `station`,
    `rise_utc`/`culmination_utc`/`set_utc` (ISO 8601, ms), `duration_s`, `max_elevation_deg`,
    and `clipped_start`/`clipped_end` (the pass began/ended outside the scenario window)."""
    names = dict(zip((s.name for s in report.constellation.satellites),
                     (n.name for n in report.timeline.nodes), strict=False))
    return [{
        "satellite": names.get(w.satellite, w.satellite),
        "satellite_source_name": w.satellite,
        "station": w.station,
        "rise_utc": _utc(w.rise_time),
        "culmination_utc": _utc(w.culmination_time),
        "set_utc": _utc(w.set_time),
        "duration_s": round(w.duration_s, 3),
        "max_elevation_deg": round(w.max_elevation_deg, 3),
        "clipped_start": w.clipped_start,
        "clipped_end": w.clipped_end,
    } for w in report.windows]
