"""+Grid topology, plane recovery on the real Starlink shell, and ISL distance / line-of-sight."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.errors import InputError
from testbed.orbit import (
    Satellite,
    isl_state,
    plane_assignment,
    plus_grid,
    propagate,
    recover_planes,
    time_grid,
    walker_delta,
    walker_planes,
)
from testbed.orbit.geodesy import WGS84_A_KM


@pytest.fixture(scope="module")
def shell() -> list[Satellite]:
    return walker_delta(1584, 72, 1, 550.0, 53.0, "2024-07-16T00:00:00Z")


def test_plus_grid_on_walker_gives_four_links_each(shell: list[Satellite]) -> None:
    pairs = plus_grid(walker_planes(shell))
    assert pairs.shape == (2 * 1584, 2)
    assert (np.bincount(pairs.ravel(), minlength=1584) == 4).all()
    assert (pairs[:, 0] < pairs[:, 1]).all() and np.unique(pairs, axis=0).shape == pairs.shape
    plane = np.array([s.plane for s in shell])
    slot = np.array([s.slot for s in shell])
    same_plane = plane[pairs[:, 0]] == plane[pairs[:, 1]]
    # Intra-plane: slots differ by 1 around the ring of 22.
    ds = (slot[pairs[same_plane, 1]] - slot[pairs[same_plane, 0]]) % 22
    assert set(ds.tolist()) <= {1, 21} and same_plane.sum() == 1584
    # Cross-plane: same slot, planes differ by 1 around the ring of 72.
    cross = ~same_plane
    assert (slot[pairs[cross, 0]] == slot[pairs[cross, 1]]).all()
    assert set(((plane[pairs[cross, 1]] - plane[pairs[cross, 0]]) % 72).tolist()) <= {1, 71}


def test_small_shells_have_no_duplicate_links() -> None:
    two_planes = walker_delta(6, 2, 0, 550.0, 53.0, "2024-07-16T00:00:00Z")
    pairs = plus_grid(walker_planes(two_planes))
    # 2 rings of 3 (3 links each) + 3 cross links (planes 0-1 once, not twice).
    assert pairs.shape == (9, 2)
    assert plus_grid(walker_planes(walker_delta(1, 1, 0, 550.0, 53.0,
                                                "2024-07-16T00:00:00Z"))).shape == (0, 2)


def test_isl_distances_equal_position_differences(shell: list[Satellite]) -> None:
    pairs = plus_grid(walker_planes(shell))
    positions = propagate(shell, time_grid("2024-07-16T00:00:00Z", 300.0, 4)).positions_km
    state = isl_state(positions, pairs)
    assert state.distance_km.shape == (pairs.shape[0], 4)
    for k in (0, 1000, 2500, 3167):
        a, b = pairs[k]
        expected = np.sqrt(((positions[a] - positions[b]) ** 2).sum(axis=1))
        np.testing.assert_allclose(state.distance_km[k], expected, rtol=1e-12)
    # Intra-plane neighbours of a 22-satellite ring at 550 km: 2 (R + h) sin(pi / 22).
    r_km = np.linalg.norm(positions, axis=-1).mean()
    plane = np.array([s.plane for s in shell])
    intra = plane[pairs[:, 0]] == plane[pairs[:, 1]]
    np.testing.assert_allclose(state.distance_km[intra].mean(),
                               2 * r_km * np.sin(np.pi / 22), rtol=0.01)
    assert state.up[intra].all()  # 1,900 km: shorter than 3,000 km and above the atmosphere
    single = isl_state(positions[:, 0], pairs)
    np.testing.assert_array_equal(single.distance_km, state.distance_km[:, 0])


def test_grazing_cut_on_constructed_geometry() -> None:
    radius = WGS84_A_KM
    # Opposite sides of the Earth: the segment crosses the planet.
    opposite = np.array([[radius + 550.0, 0.0, 0.0], [-(radius + 550.0), 0.0, 0.0]])
    # Two points in the equatorial plane whose chord's closest point is at altitude h:
    # (R + h, +-y): the midpoint (R + h, 0, 0) is the closest point to the centre.
    def chord(h_km: float) -> np.ndarray:
        return np.array([[radius + h_km, 1200.0, 0.0], [radius + h_km, -1200.0, 0.0]])

    positions = np.concatenate([opposite, chord(70.0), chord(90.0)])
    pairs = np.array([[0, 1], [2, 3], [4, 5]])
    state = isl_state(positions, pairs, max_range_km=20_000.0)
    assert state.grazing.tolist() == [True, True, False]
    assert state.up.tolist() == [False, False, True]
    assert not state.too_long.any()
    # Over the pole the ellipsoid is 21 km flatter: a chord 70 km above the polar radius passes.
    polar = WGS84_A_KM * (1 - 1 / 298.257223563)
    over_pole = np.array([[1200.0, 0.0, polar + 90.0], [-1200.0, 0.0, polar + 90.0]])
    assert isl_state(over_pole, np.array([[0, 1]])).up.tolist() == [True]
    with_altitude = isl_state(over_pole, np.array([[0, 1]]), grazing_altitude_km=100.0)
    assert with_altitude.grazing.tolist() == [True]


def test_max_range_cut_and_failed_positions() -> None:
    positions = np.array([[7000.0, 0.0, 0.0], [7000.0, 2999.0, 0.0], [7000.0, -3001.0, 0.0],
                          [np.nan, np.nan, np.nan]])
    state = isl_state(positions, np.array([[0, 1], [0, 2], [0, 3]]))
    assert state.too_long.tolist() == [False, True, False]
    assert state.up.tolist() == [True, False, False]
    assert np.isnan(state.distance_km[2])
    with pytest.raises(InputError, match="pairs index satellites"):
        isl_state(positions, np.array([[0, 4]]))
    with pytest.raises(InputError, match="max_range_km=0"):
        isl_state(positions, np.array([[0, 1]]), max_range_km=0)


def test_recovered_planes_of_real_starlink_shell(starlink_shell1: list[Satellite]) -> None:
    """Starlink shell 1 (53 deg, 550 km): planes share RAAN, slots follow the orbit."""
    assignment = recover_planes(starlink_shell1, "2024-07-16T12:00:00Z")
    assert assignment.plane_count == 72  # the shell's published design: 72 planes of 22
    for p in range(assignment.plane_count):
        members = assignment.plane == p
        raan = assignment.raan_deg[members]
        spread = np.ptp(np.unwrap(np.radians(raan)))
        assert np.degrees(spread) < 2.0, f"plane {p}: RAAN spread {np.degrees(spread):.2f} deg"
        # Slots are the order of the argument of latitude.
        u = assignment.arg_latitude_deg[members][np.argsort(assignment.slot[members])]
        assert (np.diff(u) > 0).all()
    # Neighbouring planes are about 360/72 = 5 deg apart.
    centres = np.sort([np.degrees(np.angle(np.exp(1j * np.radians(
        assignment.raan_deg[assignment.plane == p])).mean())) % 360.0
        for p in range(assignment.plane_count)])
    gaps = np.diff(np.append(centres, centres[0] + 360.0))
    assert np.median(gaps) == pytest.approx(5.0, abs=0.3)

    pairs = plus_grid(assignment)
    degree = np.bincount(pairs.ravel(), minlength=len(starlink_shell1))
    assert degree.max() <= 4 and np.median(degree) == 4
    positions = propagate(starlink_shell1, np.array(["2024-07-16T12:00:00"],
                                                    dtype="datetime64[ns]")).positions_km
    state = isl_state(positions[:, 0], pairs)
    same = assignment.plane[pairs[:, 0]] == assignment.plane[pairs[:, 1]]
    # Most intra- and cross-plane links are usable, as in the Walker shell.
    assert state.up[same].mean() > 0.9 and state.up[~same].mean() > 0.9


def test_recovery_agrees_with_walker_truth(shell: list[Satellite]) -> None:
    """recover_planes on Walker satellites finds the generator's planes (as a partition)."""
    recovered = recover_planes(shell)
    truth = np.array([s.plane for s in shell])
    assert recovered.plane_count == 72
    for p in range(72):
        assert np.unique(truth[recovered.plane == p]).size == 1
    assert plane_assignment(shell).walker and not recovered.walker
