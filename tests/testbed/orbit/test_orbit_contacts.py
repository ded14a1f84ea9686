"""Contact windows against brute force: elevation sampled every 100 ms, and a fine bisection.

The reference elevation is computed here without the code under test: sgp4 for TEME positions,
skyfield's TEME_to_ITRF with skyfield's UT1 for the Earth rotation, skyfield's WGS84 station, and
the geodetic up vector written out below.
"""

from __future__ import annotations

import numpy as np
import pytest
from skyfield.api import load, wgs84
from skyfield.sgp4lib import TEME_to_ITRF

from testbed.errors import InputError
from testbed.orbit import ContactWindow, GroundStation, Satellite, contact_windows

START = np.datetime64("2024-07-16T12:00:00", "ns")
START_JD_UTC = 2460508.0  # 2024-07-16T12:00:00 UTC
HOURS = 3.0


class ReferenceElevation:
    """Elevation (deg) of one satellite from one station at seconds after START."""

    def __init__(self, sat: Satellite, station: GroundStation) -> None:
        self.sat = sat
        self.ts = load.timescale(builtin=True)
        self.site_km = wgs84.latlon(station.lat_deg, station.lon_deg,
                                    elevation_m=station.alt_m).itrs_xyz.km
        lat, lon = np.radians(station.lat_deg), np.radians(station.lon_deg)
        self.up = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])

    def __call__(self, seconds: np.ndarray) -> np.ndarray:
        seconds = np.atleast_1d(np.asarray(seconds, dtype=np.float64))
        error, r, v = self.sat.satrec.sgp4_array(np.full(seconds.shape, START_JD_UTC),
                                                 seconds / 86_400.0)
        assert not error.any()
        t = self.ts.utc(2024, 7, 16, 12, 0, seconds)
        r_itrs, _ = TEME_to_ITRF(t.whole, r.T, v.T, fraction_ut1=t.ut1_fraction)
        rho = r_itrs.T - self.site_km
        return np.degrees(np.arcsin(rho @ self.up / np.linalg.norm(rho, axis=1)))


def _seconds(t: np.datetime64) -> float:
    return int((t - START).astype("timedelta64[ns]").astype(np.int64)) / 1e9


def _bisect(f, lo: float, hi: float, above_at_lo: bool, tol_s: float = 1e-5) -> float:  # noqa: ANN001
    while hi - lo > tol_s:
        mid = 0.5 * (lo + hi)
        if (f(mid)[0] >= 0.0) == above_at_lo:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _ternary_max(f, lo: float, hi: float, tol_s: float = 1e-4) -> float:  # noqa: ANN001
    while hi - lo > tol_s:
        m1, m2 = lo + (hi - lo) / 3.0, hi - (hi - lo) / 3.0
        if f(m1)[0] < f(m2)[0]:
            lo = m1
        else:
            hi = m2
    return 0.5 * (lo + hi)


@pytest.fixture(scope="module")
def passing(starlink_shell1: list[Satellite]) -> tuple[list[Satellite], list[ContactWindow]]:
    """Four satellites with at least one pass over Shanghai in the 3 hours, and their windows."""
    station = GroundStation("shanghai", 31.23, 121.47, 4.0, 25.0)
    end = START + np.timedelta64(int(HOURS * 3600), "s")
    windows = contact_windows(starlink_shell1[:300], station, START, end)
    chosen = sorted({w.satellite_index for w in windows})[:4]
    sats = [starlink_shell1[i] for i in chosen]
    return sats, contact_windows(sats, station, START, end)


def test_windows_match_brute_force_100ms(passing: tuple[list[Satellite], list[ContactWindow]],
                                         shanghai: GroundStation) -> None:
    sats, windows = passing
    assert len(sats) == 4
    grid_s = np.arange(0.0, HOURS * 3600.0 + 0.05, 0.1)
    for index, sat in enumerate(sats):
        reference = ReferenceElevation(sat, shanghai)
        above = reference(grid_s) >= shanghai.min_elevation_deg
        rises = grid_s[1:][np.diff(above.astype(int)) == 1]  # first sample above
        sets = grid_s[:-1][np.diff(above.astype(int)) == -1]  # last sample above
        ours = [w for w in windows if w.satellite_index == index]
        assert len(ours) == len(rises) == len(sets) > 0, sat.name
        for window, rise_s, set_s in zip(ours, rises, sets, strict=True):
            assert not (window.clipped_start or window.clipped_end)
            assert abs(_seconds(window.rise_time) - rise_s) <= 0.1
            assert abs(_seconds(window.set_time) - set_s) <= 0.1
            assert window.satellite == sat.name and window.station == "shanghai"


def test_refined_times_within_10ms_of_fine_bisection(
        passing: tuple[list[Satellite], list[ContactWindow]], shanghai: GroundStation) -> None:
    sats, windows = passing
    mask = shanghai.min_elevation_deg
    worst_ms = 0.0
    for window in windows:
        reference = ReferenceElevation(sats[window.satellite_index], shanghai)

        def f(t: float, reference: ReferenceElevation = reference) -> np.ndarray:
            return reference(t) - mask

        rise, set_ = _seconds(window.rise_time), _seconds(window.set_time)
        ref_rise = _bisect(f, rise - 1.0, rise + 1.0, above_at_lo=False)
        ref_set = _bisect(f, set_ - 1.0, set_ + 1.0, above_at_lo=True)
        ref_culmination = _ternary_max(reference, rise, set_)
        worst_ms = max(worst_ms, abs(rise - ref_rise) * 1e3, abs(set_ - ref_set) * 1e3,
                       abs(_seconds(window.culmination_time) - ref_culmination) * 1e3)
        assert abs(window.max_elevation_deg - reference(ref_culmination)[0]) < 1e-5
        assert window.max_elevation_deg >= mask
        assert window.duration_s == pytest.approx(set_ - rise, abs=1e-6)
    assert worst_ms < 10.0, f"worst {worst_ms:.2f} ms"


def test_windows_open_at_start_or_end_are_clipped(
        passing: tuple[list[Satellite], list[ContactWindow]], shanghai: GroundStation) -> None:
    sats, windows = passing
    first = windows[0]
    sat = sats[first.satellite_index]
    start = first.culmination_time  # mid-pass
    end = first.set_time - np.timedelta64(20, "s")  # still above the mask
    clipped = contact_windows([sat], shanghai, start, end)
    assert len(clipped) == 1
    only = clipped[0]
    assert only.clipped_start and only.clipped_end
    assert only.rise_time == start and only.set_time == end
    assert only.culmination_time == start  # elevation only falls after culmination

    after = contact_windows([sat], shanghai, first.rise_time - np.timedelta64(60, "s"), end)
    assert len(after) == 1 and not after[0].clipped_start and after[0].clipped_end
    assert abs(_seconds(after[0].rise_time) - _seconds(first.rise_time)) < 2e-3
    assert abs(_seconds(after[0].culmination_time) - _seconds(first.culmination_time)) < 0.01


def test_coarse_step_does_not_lose_short_passes(
        passing: tuple[list[Satellite], list[ContactWindow]], shanghai: GroundStation) -> None:
    """A 2-minute scan step still finds the same windows: passes between samples are refined."""
    sats, windows = passing
    end = START + np.timedelta64(int(HOURS * 3600), "s")
    coarse = contact_windows(sats, shanghai, START, end, step_s=120.0, tolerance_s=1e-3)
    assert len(coarse) == len(windows)
    for a, b in zip(coarse, windows, strict=True):
        assert a.satellite_index == b.satellite_index
        assert abs(_seconds(a.rise_time) - _seconds(b.rise_time)) < 2e-3
        assert abs(_seconds(a.set_time) - _seconds(b.set_time)) < 2e-3


def test_bad_arguments(starlink: list[Satellite], shanghai: GroundStation) -> None:
    with pytest.raises(InputError, match="is not after start"):
        contact_windows(starlink[:1], shanghai, START, START)
    with pytest.raises(InputError, match="tolerance_s=20"):
        contact_windows(starlink[:1], shanghai, START, START + np.timedelta64(1, "h"),
                        step_s=10.0, tolerance_s=20.0)
