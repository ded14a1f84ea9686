"""Ground-link policies on hand-made elevation tables (expected answers worked out by hand) and on
real passes over Shanghai (invariants checked against the elevation array)."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.errors import InputError
from testbed.orbit import (
    GROUND_LINK_POLICIES,
    NO_SATELLITE,
    GroundStation,
    Satellite,
    assign_ground_links,
    elevation_deg,
    handovers,
    propagate,
    time_grid,
)
from testbed.orbit.groundlinks import remaining_visible_instants

# Three satellites over six instants, mask 25 deg:
#   sat 0 rises first and sets at t4; sat 1 rises at t1, highest from t2, visible to t5;
#   sat 2 is visible only at t2-t3, slightly above sat 1 at t3.
ELEVATION = np.array([
    [30.0, 40.0, 35.0, 30.0, 20.0, 10.0],
    [10.0, 26.0, 50.0, 51.0, 45.0, 30.0],
    [np.nan, 20.0, 49.0, 52.0, 24.0, 10.0],
])


def test_highest_elevation_switches_to_the_highest() -> None:
    assert assign_ground_links(ELEVATION, 25.0, "highest-elevation").tolist() == [0, 0, 1, 2, 1, 1]


def test_hysteresis_keeps_the_serving_satellite_until_clearly_beaten() -> None:
    # At t3 sat 2 is 1 deg above sat 1: with 2 deg hysteresis no switch.
    served = assign_ground_links(ELEVATION, 25.0, "highest-elevation", hysteresis_deg=2.0)
    assert served.tolist() == [0, 0, 1, 1, 1, 1]
    # 20 deg: sat 0 is kept at t2 (15 deg lower) but not at t3 (22 deg lower than sat 2).
    served = assign_ground_links(ELEVATION, 25.0, "highest-elevation", hysteresis_deg=20.0)
    assert served.tolist() == [0, 0, 0, 2, 1, 1]
    # 25 deg: sat 0 is kept until it sets at t4.
    served = assign_ground_links(ELEVATION, 25.0, "highest-elevation", hysteresis_deg=25.0)
    assert served.tolist() == [0, 0, 0, 0, 1, 1]


def test_hold_until_set_and_longest_remaining() -> None:
    assert assign_ground_links(ELEVATION, 25.0, "hold-until-set").tolist() == [0, 0, 0, 0, 1, 1]
    # When sat 0 sets at t4, only sat 1 is visible; at t0 only sat 0 is.
    assert assign_ground_links(ELEVATION, 25.0, "longest-remaining").tolist() == [0, 0, 0, 0, 1, 1]
    # A table where the highest is not the longest: at t0 sat 0 is higher but sets at t1.
    table = np.array([[60.0, 30.0, 0.0, 0.0], [30.0, 35.0, 40.0, 45.0]])
    assert assign_ground_links(table, 25.0, "hold-until-set").tolist() == [0, 0, 1, 1]
    assert assign_ground_links(table, 25.0, "longest-remaining").tolist() == [1, 1, 1, 1]


def test_no_visible_satellite_gives_minus_one() -> None:
    served = assign_ground_links(np.full((2, 3), 5.0), 25.0, "highest-elevation")
    assert served.tolist() == [NO_SATELLITE] * 3
    assert assign_ground_links(np.empty((0, 4)), 25.0).tolist() == [NO_SATELLITE] * 4


def test_remaining_visible_instants() -> None:
    visible = np.array([[True, True, False, True], [False, True, True, True]])
    assert remaining_visible_instants(visible).tolist() == [[2, 1, 0, 1], [0, 3, 2, 1]]


def test_handovers() -> None:
    changes = handovers(np.array([-1, 0, 0, 1, 1, -1]))
    assert changes.instant_index.tolist() == [1, 3, 5]
    assert changes.from_satellite.tolist() == [-1, 0, 1]
    assert changes.to_satellite.tolist() == [0, 1, -1]


def test_unknown_policy_lists_the_valid_names() -> None:
    with pytest.raises(InputError) as caught:
        assign_ground_links(ELEVATION, 25.0, "highest_elevation")
    message = str(caught.value)
    assert "unknown ground-link policy 'highest_elevation'; choose: " in message
    for name in ("highest-elevation", "hold-until-set", "longest-remaining"):
        assert name in message
    assert caught.value.field == "policy"
    assert all(name == name.lower() and "_" not in name for name in GROUND_LINK_POLICIES)


def test_policies_on_real_passes(starlink_shell1: list[Satellite],
                                 shanghai: GroundStation) -> None:
    """Invariants on one hour of the real shell: served satellites are visible, highest-elevation
    serves the maximum, holding policies hand over only when the serving satellite sets."""
    positions = propagate(starlink_shell1, time_grid("2024-07-16T12:00:00Z", 5.0, 720),
                          interpolation_step_s=20.0).positions_km
    elevation = elevation_deg(positions, shanghai)
    visible = elevation >= shanghai.min_elevation_deg
    instants = np.arange(elevation.shape[1])
    assert visible.any(axis=0).mean() > 0.5  # the shell covers Shanghai most of the time
    for policy in GROUND_LINK_POLICIES:
        served = assign_ground_links(elevation, shanghai.min_elevation_deg, policy)
        on = served != NO_SATELLITE
        assert (on == visible.any(axis=0)).all(), policy
        assert visible[served[on], instants[on]].all(), policy
        if policy == "highest-elevation":
            best = np.nanmax(np.where(visible, elevation, np.nan)[:, on], axis=0)
            np.testing.assert_array_equal(elevation[served[on], instants[on]], best)
        else:
            change = handovers(served)
            for k, old in zip(change.instant_index, change.from_satellite, strict=True):
                assert old == NO_SATELLITE or not visible[old, k], (policy, k)
    fewer = [handovers(assign_ground_links(elevation, 25.0, name)).instant_index.size
             for name in ("highest-elevation", "hold-until-set")]
    assert fewer[1] < fewer[0]
