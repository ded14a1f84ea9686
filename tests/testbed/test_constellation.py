"""Selecting satellites from a scenario: filters, empty selections, TLE age warnings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from testbed.constellation import TleAgeWarning, resolve_constellation
from testbed.errors import SelectionError
from testbed.scenario import load_scenario

BASE = """\
name: sel
epoch: 2024-07-16T00:00:00Z
duration_s: 3600
constellation:
  tle: {tle}
  select: {select}
ground_stations:
  - {{name: shanghai, lat_deg: 31.23, lon_deg: 121.47, min_elevation_deg: 25}}
"""


def scenario(tmp_path: Path, tle: Path, select: str, epoch: str | None = None):
    text = BASE.format(tle=tle, select=select)
    if epoch:
        text = text.replace("2024-07-16T00:00:00Z", epoch)
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_scenario(path)


def _altitudes_by_hand(tle: Path) -> list[tuple[str, float]]:
    """Mean altitude from line 2's mean motion (Kepler, WGS72 mu and radius) — independent."""
    lines = tle.read_text().splitlines()
    out = []
    for i in range(0, len(lines), 3):
        n_rad_s = float(lines[i + 2][52:63]) * 2 * math.pi / 86400
        out.append((lines[i].strip(), (398600.8 / n_rad_s**2) ** (1 / 3) - 6378.135))
    return out


def test_shell_selection_matches_hand_computed_altitudes(tmp_path: Path, shared_data: Path):
    tle = shared_data / "tle" / "starlink-2024-07-16.tle"
    r = resolve_constellation(scenario(tmp_path, tle, "{shell: {altitude_km: [565, 575]}}"))
    expected = [n for n, alt in _altitudes_by_hand(tle) if 565 <= alt <= 575]
    assert r.source_count == 6227
    assert sorted(s.name for s in r.satellites) == sorted(expected)
    assert all(69 < s.inclination_deg < 71 for s in r.satellites)


def test_name_ids_and_count(tmp_path: Path, shared_data: Path) -> None:
    tle = shared_data / "tle" / "planet-2024-07-16.tle"
    r = resolve_constellation(scenario(tmp_path, tle, "{name: 'SKYSAT*', count: 3}"))
    assert len(r.satellites) == 3 and all(s.name.startswith("SKYSAT") for s in r.satellites)
    first = r.satellites[0].norad_id
    r2 = resolve_constellation(scenario(tmp_path, tle, f"{{ids: [{first}]}}"))
    assert [s.norad_id for s in r2.satellites] == [first]


def test_visible_from_keeps_only_satellites_that_pass(tmp_path: Path, shared_data: Path):
    tle = shared_data / "tle" / "starlink-2024-07-16.tle"
    s = scenario(tmp_path, tle, "{shell: {altitude_km: [565, 575]}, visible_from: shanghai, "
                 "count: 5}")
    r = resolve_constellation(s)
    assert len(r.satellites) == 5
    from datetime import timedelta

    from testbed.constellation import ground_station
    from testbed.orbit.contacts import contact_windows
    windows = contact_windows(r.satellites, ground_station(s.ground_stations[0]), s.epoch,
                              s.epoch + timedelta(seconds=3600), step_s=5.0)
    assert {w.satellite for w in windows} == {x.name for x in r.satellites}


def test_empty_selection_names_the_filter(tmp_path: Path, shared_data: Path) -> None:
    tle = shared_data / "tle" / "planet-2024-07-16.tle"
    with pytest.raises(SelectionError, match=r"no satellite left after name='NOPE\*'"):
        resolve_constellation(scenario(tmp_path, tle, "{name: 'NOPE*'}"))
    with pytest.raises(SelectionError, match="count=500, but only 139"):
        resolve_constellation(scenario(tmp_path, tle, "{count: 500}"))
    with pytest.raises(SelectionError, match="not in the source"):
        resolve_constellation(scenario(tmp_path, tle, "{ids: [1]}"))


def test_epoch_far_from_tle_epochs_warns_with_age(tmp_path: Path, shared_data: Path) -> None:
    tle = shared_data / "tle" / "planet-2024-07-16.tle"
    s = scenario(tmp_path, tle, "{count: 2}", epoch="2024-09-14T00:00:00Z")
    with pytest.warns(TleAgeWarning, match=r"\d+\.\d days \(median\) from the TLE epochs"):
        resolve_constellation(s)
