"""Figures: the land outline from the bundled mask is geographically right, PNGs are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from testbed.orbit import GroundStation, Satellite, contact_windows, propagate, time_grid
from testbed.orbit.plot import land_fraction_grid, plot_contact_gantt, plot_ground_tracks

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cell(lat_deg: float, lon_deg: float) -> tuple[int, int]:
    lat, lon, _ = land_fraction_grid()
    return int(np.argmin(np.abs(lat - lat_deg))), int(np.argmin(np.abs(lon - lon_deg)))


def test_land_grid_knows_continents_and_oceans() -> None:
    lat, lon, land = land_fraction_grid()
    assert land.shape == (360, 720) and lat[0] > 89 and lon[0] < -179
    for name, la, lo in (("Paris", 48.85, 2.35), ("Shanghai inland", 31.3, 120.6),
                         ("Sahara", 23.0, 10.0), ("Brasilia", -15.8, -47.9),
                         ("Antarctica", -80.0, 0.0)):
        assert land[_cell(la, lo)] > 0.5, name
    for name, la, lo in (("mid Pacific", 0.0, -150.0), ("south Atlantic", -30.0, -15.0),
                         ("Indian Ocean", -20.0, 80.0)):
        assert land[_cell(la, lo)] < 0.05, name
    # Land covers about 29 % of the Earth's surface (lakes count as land in this mask).
    weights = np.cos(np.radians(lat))[:, None] * np.ones_like(land)
    assert 0.27 < (land * weights).sum() / weights.sum() < 0.33


def test_plots_are_written(tmp_path: Path, planet: list[Satellite]) -> None:
    sats = planet[:4]
    station = GroundStation("shanghai", 31.23, 121.47, 0.0, 10.0)
    positions = propagate(sats, time_grid("2024-07-16T00:00:00Z", 60.0, 100)).positions_km
    tracks = plot_ground_tracks(positions, tmp_path / "tracks.png", names=[s.name for s in sats],
                                stations=[station])
    windows = contact_windows(sats, station, "2024-07-16T00:00:00Z", "2024-07-17T00:00:00Z")
    assert windows
    gantt = plot_contact_gantt(windows, tmp_path / "gantt.png")
    empty = plot_contact_gantt([], tmp_path / "empty.png")
    for path in (tracks, gantt, empty):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, path
