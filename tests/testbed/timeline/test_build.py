"""The timeline of a scenario against independent references: skyfield positions for ISLs and
ground ranges, contact windows for handover instants."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from skyfield.api import EarthSatellite, load
from skyfield.framelib import itrs

from testbed.constellation import ground_station, resolve_constellation
from testbed.orbit.contacts import contact_windows
from testbed.scenario import load_scenario
from testbed.timeline.build import build_timeline, node_names

C_KM_S = 299_792.458

WALKER = """\
name: tl
epoch: 2024-07-16T00:00:00Z
duration_s: 1200
constellation:
  walker: {planes: 12, per_plane: 12, phasing: 1, altitude_km: 550, inclination_deg: 53}
ground_stations:
  - {name: shanghai, lat_deg: 31.23, lon_deg: 121.47, min_elevation_deg: 10}
links:
  ground: {policy: POLICY}
  isl: {max_range_km: 5200}
timeline: {step_s: 2.0, delay_threshold_us: 50}
"""


def build(tmp_path: Path, policy: str = "hold-until-set"):
    path = tmp_path / "s.yaml"
    path.write_text(WALKER.replace("POLICY", policy))
    scenario = load_scenario(path)
    constellation = resolve_constellation(scenario)
    timeline, geo = build_timeline(scenario, constellation)
    return scenario, constellation, timeline


def skyfield_itrs_km(sat, when) -> np.ndarray:
    ts = load.timescale(builtin=True)
    es = EarthSatellite.from_satrec(sat.satrec, ts)
    return es.at(ts.from_datetime(when)).frame_xyz(itrs).km


@pytest.mark.parametrize("t_s", [0.0, 401.0, 1000.0])
def test_isl_state_and_delay_match_skyfield(tmp_path: Path, t_s: float) -> None:
    scenario, constellation, timeline = build(tmp_path)
    sats = constellation.satellites
    names = node_names(sats)
    index = {n: i for i, n in enumerate(names)}
    links = timeline.links_at(int(t_s * 1e9))
    when = scenario.epoch + timedelta(seconds=(t_s // 2) * 2)  # last sampled instant
    pos = {i: skyfield_itrs_km(s, when) for i, s in enumerate(sats)}
    isl_up = {k: v for k, v in links.items() if v.link_kind == "isl"}
    assert isl_up, "a 12x12 shell with 5,200 km range has ISLs up"
    for lid, ev in isl_up.items():
        d_km = float(np.linalg.norm(pos[index[ev.a]] - pos[index[ev.b]]))
        assert d_km <= 5200 + 1
        # the delay held by the timeline is within the emission threshold of the truth
        assert abs(ev.delay_us - d_km / C_KM_S * 1e6) <= 50 + 5, lid
    # and links of the +Grid that are down really are too long or blocked by the Earth
    all_isl = {e.link for e in timeline.events if e.link_kind == "isl"}
    for lid in all_isl - set(isl_up):
        a, b = lid.split("--")
        ra, rb = pos[index[a]], pos[index[b]]
        d_km = float(np.linalg.norm(ra - rb))
        mid = (ra + rb) / 2
        assert d_km > 5200 - 1 or np.linalg.norm(mid) < 6378 + 80 + 50, lid


def test_hold_until_set_hands_over_at_contact_window_set_times(tmp_path: Path) -> None:
    scenario, constellation, timeline = build(tmp_path)
    station = ground_station(scenario.ground_stations[0])
    windows = contact_windows(constellation.satellites, station, scenario.epoch,
                              scenario.epoch + timedelta(seconds=scenario.duration_s), step_s=5.0)
    names = dict(zip((s.name for s in constellation.satellites),
                     node_names(constellation.satellites), strict=True))
    sets_ns = {}
    epoch64 = np.datetime64(scenario.epoch.replace(tzinfo=None), "ns")
    for w in windows:
        sets_ns.setdefault(names[w.satellite], []).append(int((w.set_time - epoch64)
                                                              .astype(np.int64)))
    handovers = [e for e in timeline.events if e.kind == "handover"]
    assert handovers
    for h in handovers:
        if h.a:  # the serving satellite set: the handover is at its set time (10 ms)
            assert min(abs(h.t_ns - s) for s in sets_ns[h.a]) <= 10_000_000
        # the link to the old satellite goes down and the new one up at the same instant
        same = [e for e in timeline.events if e.t_ns == h.t_ns and e.link_kind == "ground"]
        kinds = {(e.kind, e.b if e.a == "shanghai" else e.a) for e in same if e.kind != "handover"}
        if h.a:
            assert ("down", h.a) in kinds
        if h.b:
            assert ("up", h.b) in kinds


def test_ground_link_delay_matches_skyfield_range(tmp_path: Path) -> None:
    scenario, constellation, timeline = build(tmp_path, "highest-elevation")
    names = node_names(constellation.satellites)
    ups = [e for e in timeline.events if e.link_kind == "ground" and e.kind == "up"]
    assert ups
    station = scenario.ground_stations[0]
    from skyfield.api import wgs84
    ts = load.timescale(builtin=True)
    topos = wgs84.latlon(station.lat_deg, station.lon_deg, station.alt_m)
    for e in ups[:5]:
        sat = constellation.satellites[names.index(e.b)]
        es = EarthSatellite.from_satrec(sat.satrec, ts)
        grid_t = scenario.epoch + timedelta(seconds=np.ceil(e.t_ns / 2e9) * 2)
        alt, az, dist = (es - topos).at(ts.from_datetime(grid_t)).altaz()
        assert alt.degrees >= station.min_elevation_deg - 0.5
        assert abs(e.delay_us - dist.km / C_KM_S * 1e6) < 2.0


def test_highest_elevation_serves_the_highest_satellite(tmp_path: Path) -> None:
    scenario, constellation, timeline = build(tmp_path, "highest-elevation")
    station = ground_station(scenario.ground_stations[0])
    from testbed.orbit.propagate import propagate
    from testbed.orbit.times import time_grid
    from testbed.orbit.visibility import elevation_deg
    names = node_names(constellation.satellites)
    times = time_grid(scenario.epoch, 60.0, 20)
    el = elevation_deg(propagate(constellation.satellites, times).positions_km, station)
    for k in range(1, 20):
        t_ns = int(k * 60e9) + 1
        serving = [e.b for e in timeline.links_at(t_ns).values() if e.link_kind == "ground"]
        if np.nanmax(el[:, k]) >= station.min_elevation_deg:
            assert serving == [names[int(np.nanargmax(el[:, k]))]]
        else:
            assert serving == []
