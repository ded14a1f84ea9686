"""Geodesy and look angles against skyfield's WGS84 and topocentric (alt/az) computations."""

from __future__ import annotations

import numpy as np
import pytest
from skyfield.api import EarthSatellite, load, wgs84
from skyfield.framelib import itrs

from testbed.errors import InputError
from testbed.orbit import (
    GroundStation,
    Satellite,
    ecef_to_geodetic,
    elevation_deg,
    geodetic_to_ecef_km,
    look_angles,
    propagate,
    time_grid,
    visible,
)

SITES = [(31.23, 121.47, 4.0), (-33.9, 18.4, 1500.0), (78.2, 15.6, 0.0), (0.0, -180.0, 0.0),
         (-89.9, 45.0, 2800.0)]


@pytest.mark.parametrize(("lat", "lon", "alt_m"), SITES)
def test_station_position_matches_skyfield_wgs84(lat: float, lon: float, alt_m: float) -> None:
    ours = geodetic_to_ecef_km(lat, lon, alt_m)
    theirs = wgs84.latlon(lat, lon, elevation_m=alt_m).itrs_xyz.km
    assert np.abs(ours - theirs).max() < 1e-9


def test_geodetic_round_trip_from_ground_to_geo() -> None:
    rng = np.random.default_rng(7)
    lat = rng.uniform(-89.99, 89.99, 500)
    lon = rng.uniform(-179.99, 179.99, 500)
    alt_km = rng.uniform(-1.0, 36_000.0, 500)
    back = ecef_to_geodetic(geodetic_to_ecef_km(lat, lon, alt_km * 1000.0))
    np.testing.assert_allclose(back[0], lat, atol=1e-9)
    np.testing.assert_allclose(back[1], lon, atol=1e-9)
    np.testing.assert_allclose(back[2], alt_km, atol=1e-6)  # 1 mm


def test_subpoint_matches_skyfield(starlink: list[Satellite]) -> None:
    ts = load.timescale(builtin=True)
    t = ts.utc(2024, 7, 16, 6, 0, np.arange(0.0, 6000.0, 600.0))
    sats = starlink[::2000]
    ours = propagate(sats, time_grid("2024-07-16T06:00:00Z", 600.0, 10))
    lat, lon, alt_km = ecef_to_geodetic(ours.positions_km)
    for i, sat in enumerate(sats):
        position = EarthSatellite.from_satrec(sat.satrec, ts).at(t)
        geo = wgs84.geographic_position_of(position)
        np.testing.assert_allclose(lat[i], geo.latitude.degrees, atol=1e-7)
        np.testing.assert_allclose(lon[i], geo.longitude.degrees, atol=1e-7)
        np.testing.assert_allclose(alt_km[i], geo.elevation.km, atol=1e-5)


def test_look_angles_match_skyfield_altaz(starlink: list[Satellite],
                                          shanghai: GroundStation) -> None:
    """Elevation, azimuth and range of satellites over Shanghai vs skyfield's (sat - topos)."""
    ts = load.timescale(builtin=True)
    seconds = np.arange(0.0, 3 * 3600.0, 20.0)
    t = ts.utc(2024, 7, 16, 12, 0, seconds)
    topos = wgs84.latlon(shanghai.lat_deg, shanghai.lon_deg, elevation_m=shanghai.alt_m)
    sats = starlink[::400]
    positions = propagate(sats, time_grid("2024-07-16T12:00:00Z", 20.0, seconds.size)).positions_km
    ours = look_angles(positions, shanghai)
    checked = 0
    for i, sat in enumerate(sats):
        alt, az, distance = (EarthSatellite.from_satrec(sat.satrec, ts) - topos).at(t).altaz()
        up = alt.degrees > -5.0  # compare where azimuth is well defined and the pass matters
        np.testing.assert_allclose(ours.elevation_deg[i], alt.degrees, atol=1e-5)
        np.testing.assert_allclose(ours.range_km[i], distance.km, atol=1e-5)
        daz = (ours.azimuth_deg[i][up] - az.degrees[up] + 180.0) % 360.0 - 180.0
        assert np.abs(daz).max(initial=0.0) < 1e-4
        checked += int(up.sum())
    assert checked > 50  # some satellites do pass
    np.testing.assert_allclose(elevation_deg(positions, shanghai), ours.elevation_deg, atol=1e-9)
    assert (visible(positions, shanghai) == (ours.elevation_deg >= 25.0)).all()


def test_itrs_frame_used_by_skyfield_is_ours(starlink: list[Satellite]) -> None:
    ts = load.timescale(builtin=True)
    t = ts.utc(2024, 7, 16, 0, 0, 30.0)
    ours = propagate(starlink[:1], time_grid("2024-07-16T00:00:30Z", 1.0, 1)).positions_km[0, 0]
    theirs = EarthSatellite.from_satrec(starlink[0].satrec, ts).at(t).frame_xyz(itrs).km
    assert np.abs(ours - theirs).max() < 1e-6


def test_nan_positions_give_nan_angles(shanghai: GroundStation) -> None:
    angles = look_angles(np.full((2, 3, 3), np.nan), shanghai)
    assert np.isnan(angles.elevation_deg).all() and np.isnan(angles.range_km).all()
    assert not visible(np.full((1, 2, 3), np.nan), shanghai).any()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"lat_deg": 95.0}, "lat_deg"), ({"lon_deg": 400.0}, "lon_deg"),
     ({"min_elevation_deg": 91.0}, "min_elevation_deg"), ({"lat_deg": float("nan")}, "lat_deg")],
)
def test_station_validation(kwargs: dict[str, float], field: str) -> None:
    values = {"lat_deg": 31.0, "lon_deg": 121.0, "alt_m": 0.0, "min_elevation_deg": 10.0}
    values.update(kwargs)
    with pytest.raises(InputError, match=f"ground station 'gs1': {field}=") as caught:
        GroundStation("gs1", **values)
    assert caught.value.field == field
