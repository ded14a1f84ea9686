"""Propagation against independent references: sgp4's verification table (tcppver.out, shipped in
the sgp4 wheel), skyfield's own TEME -> ITRS pipeline, and exact sgp4 for the interpolated mode."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest
from skyfield.api import EarthSatellite, load
from skyfield.framelib import itrs

from testbed.errors import InputError
from testbed.orbit import Satellite, iter_propagate, propagate, time_grid, walker_delta

# Near-earth with drag, deep space (12 h Molniya, 24 h GEO-like), sun-synchronous, and one that
# decays during the table (22312: the table stops at 474 min, sgp4 fails afterwards).
VERIFICATION_IDS = ("00005", "04632", "06251", "08195", "28057", "22312")


def _sgp4_file(name: str) -> str:
    return (importlib.resources.files("sgp4") / name).read_text()


def _verification_tles() -> dict[str, tuple[str, str]]:
    lines = [line for line in _sgp4_file("SGP4-VER.TLE").splitlines()
             if line[:2] in ("1 ", "2 ")]
    return {l1[2:7]: (l1[:69], l2[:69]) for l1, l2 in zip(lines[::2], lines[1::2], strict=True)}


def _reference_table() -> dict[int, np.ndarray]:
    """tcppver.out: per satellite, rows of (tsince_min, x, y, z) in TEME km."""
    table: dict[int, list[list[float]]] = {}
    current: list[list[float]] | None = None
    for line in _sgp4_file("tcppver.out").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1] == "xx":
            current = table.setdefault(int(fields[0]), []) if int(fields[0]) not in table \
                else None  # 20413 appears twice; keep the first block
            continue
        if current is not None and len(fields) >= 4:
            current.append([float(v) for v in fields[:4]])
    return {k: np.array(v) for k, v in table.items()}


def _times_after_epoch(sat: Satellite, minutes: np.ndarray) -> np.ndarray:
    epoch_ns = np.int64(round((sat.satrec.jdsatepoch - 2440587.5) * 86_400e9)) + np.int64(
        round(sat.satrec.jdsatepochF * 86_400e9))
    return (epoch_ns + np.round(minutes * 60e9).astype(np.int64)).astype("datetime64[ns]")


@pytest.mark.parametrize("norad", VERIFICATION_IDS)
def test_teme_positions_match_sgp4_verification_table(norad: str) -> None:
    line1, line2 = _verification_tles()[norad]
    sat = Satellite.from_tle(line1, line2)
    reference = _reference_table()[int(norad)]
    minutes, expected_km = reference[:, 0], reference[:, 1:4]
    result = propagate([sat], _times_after_epoch(sat, minutes), frame="teme")
    assert not result.error_mask.any()
    error_mm = np.linalg.norm(result.positions_km[0] - expected_km, axis=1) * 1e6
    # The table prints 8 decimals (0.01 mm); the instants are rounded to 1 ns (< 0.01 mm).
    assert error_mm.max() < 0.1, f"{norad}: worst {error_mm.max():.3f} mm"


def test_decayed_satellite_is_masked_not_invented() -> None:
    line1, line2 = _verification_tles()["22312"]
    sat = Satellite.from_tle(line1, line2)
    ok = Satellite.from_tle(*_verification_tles()["06251"])
    times = _times_after_epoch(sat, np.array([474.2028672, 600.0, 1440.0]))
    result = propagate([sat, ok], times)
    assert result.error_mask[0].tolist() == [False, True, True]
    assert result.failed.tolist() == [True, False]
    assert np.isnan(result.positions_km[0, 1:]).all()
    assert np.isfinite(result.positions_km[0, 0]).all()
    assert np.isfinite(result.positions_km[1]).all()
    # Interpolated mode never hides a failure: instants next to a failed node are failed too.
    grid = _times_after_epoch(sat, np.arange(400.0, 520.0, 0.5))
    exact = propagate([sat], grid)
    interpolated = propagate([sat], grid, interpolation_step_s=20.0)
    assert exact.error_mask.any() and not exact.error_mask.all()
    assert (interpolated.error_mask >= exact.error_mask).all()
    assert np.isnan(interpolated.positions_km[interpolated.error_mask]).all()


def test_itrs_positions_match_skyfield(starlink: list[Satellite], planet: list[Satellite]) -> None:
    """skyfield's EarthSatellite -> ITRS frame (its own time scales and rotations)."""
    ts = load.timescale(builtin=True)
    sats = starlink[::1500] + planet[::40]
    seconds = np.arange(0.0, 86_400.0, 3_600.0) + 0.25
    t = ts.utc(2024, 7, 16, 0, 0, seconds)
    ours = propagate(sats, time_grid("2024-07-16T00:00:00.25Z", 3600.0, len(seconds)))
    for i, sat in enumerate(sats):
        theirs = EarthSatellite.from_satrec(sat.satrec, ts).at(t).frame_xyz(itrs).km.T
        assert np.abs(ours.positions_km[i] - theirs).max() < 1e-6  # km: 1 mm


def test_interpolated_mode_matches_exact_sgp4(starlink: list[Satellite]) -> None:
    sats = starlink[::300]
    times = time_grid("2024-07-16T12:00:00.3Z", 1.0, 1800)
    exact = propagate(sats, times)
    for step_s, limit_mm in ((20.0, 0.1), (30.0, 1.0)):
        interpolated = propagate(sats, times, interpolation_step_s=step_s)
        error_mm = np.linalg.norm(exact.positions_km - interpolated.positions_km, axis=-1) * 1e6
        assert np.nanmax(error_mm) < limit_mm, f"step {step_s}s: {np.nanmax(error_mm):.4f} mm"
        assert (exact.error_mask == interpolated.error_mask).all()


def test_chunks_equal_one_call(starlink: list[Satellite]) -> None:
    sats = starlink[:40]
    times = time_grid("2024-07-16T00:00:00Z", 7.0, 100)
    whole = propagate(sats, times)
    parts = np.concatenate(
        [p.positions_km for _, p in iter_propagate(sats, times, chunk_instants=33)], axis=1)
    np.testing.assert_array_equal(parts, whole.positions_km)


def test_walker_geometry_from_propagated_positions() -> None:
    """RAAN spacing, phasing and altitude read back from sgp4 states (not from the elements)."""
    sats = walker_delta(24, 6, 1, 700.0, 60.0, "2024-07-16T00:00:00Z")
    result = propagate(sats, np.array(["2024-07-16T00:00:00"], dtype="datetime64[ns]"),
                       frame="teme")
    r = result.positions_km[:, 0]
    later = propagate(sats, np.array(["2024-07-16T00:00:01"], dtype="datetime64[ns]"),
                      frame="teme").positions_km[:, 0]
    h = np.cross(r, later - r)
    raan = np.degrees(np.arctan2(h[:, 0], -h[:, 1])) % 360.0
    inclination = np.degrees(np.arccos(h[:, 2] / np.linalg.norm(h, axis=1)))
    np.testing.assert_allclose(inclination, 60.0, atol=0.05)
    expected_raan = np.repeat(np.arange(6) * 60.0, 4)
    assert np.abs((raan - expected_raan + 180.0) % 360.0 - 180.0).max() < 0.1
    # Argument of latitude: slots 90 deg apart, planes offset by F*360/T = 15 deg.
    node = np.stack([np.cos(np.radians(raan)), np.sin(np.radians(raan)), np.zeros(24)], axis=1)
    u = np.degrees(np.arctan2(np.einsum("ij,ij->i", np.cross(node, r), h / np.linalg.norm(
        h, axis=1)[:, None]), np.einsum("ij,ij->i", node, r))) % 360.0
    expected_u = (np.tile(np.arange(4) * 90.0, 6) + np.repeat(np.arange(6) * 15.0, 4)) % 360.0
    assert np.abs((u - expected_u + 180.0) % 360.0 - 180.0).max() < 0.2
    altitude = np.linalg.norm(r, axis=1) - 6378.135
    assert np.abs(altitude - 700.0).max() < 15.0


def test_bad_options_are_rejected(starlink: list[Satellite]) -> None:
    times = time_grid("2024-07-16T00:00:00Z", 1.0, 2)
    with pytest.raises(InputError, match="unknown frame 'gcrs'; choose: itrs, teme"):
        propagate(starlink[:1], times, frame="gcrs")
    with pytest.raises(InputError, match="interpolation_step_s=0"):
        propagate(starlink[:1], times, interpolation_step_s=0)
    with pytest.raises(InputError, match="no satellites"):
        propagate([], times)
    with pytest.raises(InputError, match="step_s=-1"):
        time_grid("2024-07-16T00:00:00Z", -1.0, 2)
    with pytest.raises(InputError, match="not an ISO 8601"):
        time_grid("16/07/2024", 1.0, 2)
