"""From a scenario's constellation section to the satellites that become nodes.

Loads the TLE file (or generates the Walker shell), applies the selection filters in the order
the scenario documents (name, ids, shell, visible_from, count), and warns when the scenario epoch
is far from the TLE epochs (SGP4 degrades by kilometres per day of age).
"""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from testbed.errors import SelectionError
from testbed.orbit.contacts import contact_windows
from testbed.orbit.tle import Satellite, load_tle_file, tle_age_days
from testbed.orbit.visibility import GroundStation
from testbed.orbit.walker import walker_delta
from testbed.scenario.model import GroundStationSpec, Scenario, Selection


class TleAgeWarning(UserWarning):
    """The scenario epoch is further from the TLE epochs than the scenario allows."""


@dataclass(frozen=True)
class ResolvedConstellation:
    """The selected satellites (in node order) and how many the source had."""

    satellites: list[Satellite]
    source_count: int
    source: str


def ground_station(spec: GroundStationSpec) -> GroundStation:
    return GroundStation(spec.name, spec.lat_deg, spec.lon_deg, spec.alt_m, spec.min_elevation_deg)


def _source(scenario: Scenario) -> tuple[list[Satellite], str]:
    c = scenario.constellation
    if c.tle is not None:
        return load_tle_file(c.tle), str(c.tle)
    w = c.walker
    assert w is not None  # guaranteed by ConstellationSpec's validator
    sats = walker_delta(w.planes * w.per_plane, w.planes, w.phasing, w.altitude_km,
                        w.inclination_deg, scenario.epoch, name_prefix="walker")
    return sats, f"walker {w.planes}x{w.per_plane} at {w.altitude_km} km"


def _check_age(sats: list[Satellite], scenario: Scenario, source: str) -> None:
    ages = np.abs(tle_age_days(sats, scenario.epoch))
    limit = scenario.constellation.max_tle_age_days
    if ages.size and float(np.median(ages)) > limit:
        warnings.warn(
            f"{source}: scenario epoch {scenario.epoch:%Y-%m-%dT%H:%M:%SZ} is "
            f"{float(np.median(ages)):.1f} days (median) from the TLE epochs, more than "
            f"max_tle_age_days={limit:g}; positions will be off by many km",
            TleAgeWarning, stacklevel=3,
        )


def _apply(sats: list[Satellite], sel: Selection, scenario: Scenario) -> list[Satellite]:
    steps: list[tuple[str, list[Satellite]]] = []
    if sel.name is not None:
        sats = [s for s in sats if fnmatch.fnmatchcase(s.name, sel.name)]
        steps.append((f"name={sel.name!r}", sats))
    if sel.ids is not None:
        wanted = set(sel.ids)
        sats = [s for s in sats if s.norad_id in wanted]
        missing = wanted - {s.norad_id for s in sats}
        if missing:
            raise SelectionError(
                f"constellation.select.ids: {len(missing)} id(s) not in the source: "
                f"{sorted(missing)[:10]}"
            )
        steps.append(("ids", sats))
    if sel.shell is not None:
        if sel.shell.altitude_km is not None:
            lo, hi = sel.shell.altitude_km
            sats = [s for s in sats if lo <= s.altitude_km <= hi]
        if sel.shell.inclination_deg is not None:
            lo, hi = sel.shell.inclination_deg
            sats = [s for s in sats if lo <= s.inclination_deg <= hi]
        steps.append((f"shell={sel.shell.model_dump(exclude_none=True)}", sats))
    if sel.visible_from is not None:
        spec = next(g for g in scenario.ground_stations if g.name == sel.visible_from)
        end = scenario.epoch + timedelta(seconds=scenario.duration_s)
        windows = contact_windows(sats, ground_station(spec), scenario.epoch, end, step_s=20.0)
        first_rise: dict[int, np.datetime64] = {}
        for w in windows:
            first_rise.setdefault(w.satellite_index, w.rise_time)
        order = sorted(first_rise, key=lambda i: (first_rise[i], i))
        sats = [sats[i] for i in order]
        steps.append((f"visible_from={sel.visible_from!r}", sats))
    for what, kept in steps:
        if not kept:
            raise SelectionError(
                f"constellation.select: no satellite left after {what} "
                f"(filters applied in order: {', '.join(w for w, _ in steps)})"
            )
    if sel.count is not None:
        if sel.count > len(sats):
            raise SelectionError(
                f"constellation.select.count={sel.count}, but only {len(sats)} satellite(s) "
                "match the other filters"
            )
        sats = sats[: sel.count]
    return sats


def resolve_constellation(scenario: Scenario) -> ResolvedConstellation:
    """The satellites the scenario selects, in node order. Raises SelectionError when empty."""
    sats, source = _source(scenario)
    if scenario.constellation.tle is not None:
        _check_age(sats, scenario, source)
    selected = _apply(sats, scenario.constellation.select, scenario)
    return ResolvedConstellation(selected, len(sats), source)
