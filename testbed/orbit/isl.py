"""Inter-satellite links: the +Grid pattern and, per instant, link length and line-of-sight state.

Owns which satellite pairs are linked (+Grid: two intra-plane neighbours, slot +-1 around the
ring, and two cross-plane neighbours in the planes +-1 by RAAN) and whether a link is usable at
an instant: cut when longer than `max_range_km` or when the straight segment between the two
satellites passes below `grazing_altitude_km` (the WGS84 ellipsoid raised by that altitude, so the
atmosphere does not block it). Capacity and delay come from linkbudget.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from testbed.errors import InputError
from testbed.orbit.geodesy import WGS84_A_KM, WGS84_F
from testbed.orbit.planes import PlaneAssignment

WGS84_B_KM = WGS84_A_KM * (1.0 - WGS84_F)


def _ring_pairs(members: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive members of an ordered ring (closing it when there are at least 3)."""
    k = members.size
    pairs = [(int(members[i]), int(members[i + 1])) for i in range(k - 1)]
    if k >= 3:
        pairs.append((int(members[-1]), int(members[0])))
    return pairs


def _cross_pairs(assignment: PlaneAssignment, p: int, q: int) -> list[tuple[int, int]]:
    """Cross-plane partners between planes p and q: same slot (Walker) or a one-to-one matching
    that minimises the argument-of-latitude differences (real TLE sets)."""
    a = np.flatnonzero(assignment.plane == p)
    b = np.flatnonzero(assignment.plane == q)
    if assignment.walker:
        by_slot = {int(assignment.slot[i]): int(i) for i in b}
        return [(int(i), by_slot[int(assignment.slot[i])]) for i in a
                if int(assignment.slot[i]) in by_slot]
    diff = np.abs(assignment.arg_latitude_deg[a][:, None] - assignment.arg_latitude_deg[b][None, :])
    cost = np.minimum(diff, 360.0 - diff)
    rows, cols = linear_sum_assignment(cost)
    return [(int(a[r]), int(b[c])) for r, c in zip(rows, cols, strict=True)]


def _circular_mean_deg(angles_deg: np.ndarray) -> float:
    rad = np.radians(angles_deg)
    return float(np.degrees(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())) % 360.0)


def plus_grid(assignment: PlaneAssignment) -> np.ndarray:
    """+Grid link pairs, shape (M, 2) int64, each row (i, j) with i < j, rows sorted, unique.

    A Walker shell of P >= 3 planes of S >= 3 satellites gives exactly 2 P S links (4 per
    satellite). Recovered planes with unequal populations leave some satellites with fewer
    cross-plane partners.

    >>> from testbed.orbit.walker import walker_delta
    >>> from testbed.orbit.planes import walker_planes
    >>> sats = walker_delta(1584, 72, 1, 550.0, 53.0, "2024-07-16T00:00:00Z")
    >>> plus_grid(walker_planes(sats)).shape
    (3168, 2)
    """
    pairs: list[tuple[int, int]] = []
    for p in range(assignment.plane_count):
        members = np.flatnonzero(assignment.plane == p)
        pairs += _ring_pairs(members[np.argsort(assignment.slot[members])])
    for g in np.unique(assignment.group):
        planes = np.unique(assignment.plane[assignment.group == g])
        raan = [_circular_mean_deg(assignment.raan_deg[assignment.plane == p]) for p in planes]
        ordered = planes[np.argsort(raan)]
        neighbours = [(ordered[i], ordered[i + 1]) for i in range(ordered.size - 1)]
        if ordered.size >= 3:
            neighbours.append((ordered[-1], ordered[0]))
        for p, q in neighbours:
            pairs += _cross_pairs(assignment, int(p), int(q))
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    array = np.sort(np.array(pairs, dtype=np.int64), axis=1)
    return np.unique(array, axis=0)


@dataclass(frozen=True)
class IslState:
    """State of M links at T instants (or at one instant: shapes (M,)).

    distance_km: centre-to-centre length (NaN where a position is NaN); up: usable;
    too_long: longer than max_range_km; grazing: line of sight below the grazing altitude.
    """

    distance_km: np.ndarray
    up: np.ndarray
    too_long: np.ndarray
    grazing: np.ndarray


def isl_state(
    positions_km: np.ndarray,
    pairs: np.ndarray,
    *,
    max_range_km: float = 3000.0,
    grazing_altitude_km: float = 80.0,
) -> IslState:
    """Length and usability of links `pairs` (M, 2) between Earth-fixed positions (N, [T,] 3).

    >>> pos = np.array([[7000.0, 0.0, 0.0], [-7000.0, 0.0, 0.0], [7000.0, 100.0, 0.0]])
    >>> s = isl_state(pos, np.array([[0, 1], [0, 2]]))
    >>> s.distance_km.tolist(), s.up.tolist(), s.grazing.tolist()
    ([14000.0, 100.0], [False, True], [True, False])
    """
    if not max_range_km > 0:
        raise InputError(f"max_range_km={max_range_km}, expected > 0", field="max_range_km")
    if not grazing_altitude_km >= 0:
        raise InputError(f"grazing_altitude_km={grazing_altitude_km}, expected >= 0",
                         field="grazing_altitude_km")
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    positions = np.asarray(positions_km, dtype=np.float64)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= positions.shape[0]):
        raise InputError(f"pairs index satellites {pairs.min()}..{pairs.max()}, expected "
                         f"0..{positions.shape[0] - 1}", field="pairs")
    # Scale z so the raised ellipsoid (a+h, a+h, b+h) becomes a sphere of radius a+h: segments
    # stay segments, so the closest approach to the centre decides.
    radius_km = WGS84_A_KM + grazing_altitude_km
    scale = np.array([1.0, 1.0, radius_km / (WGS84_B_KM + grazing_altitude_km)])
    a = positions[pairs[:, 0]]
    b = positions[pairs[:, 1]]
    delta = b - a
    distance = np.linalg.norm(delta, axis=-1)
    a_s, d_s = a * scale, delta * scale
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.clip(-np.einsum("...k,...k->...", a_s, d_s) / np.einsum("...k,...k->...", d_s, d_s),
                    0.0, 1.0)
    t = np.nan_to_num(t, nan=0.0)
    closest = np.linalg.norm(a_s + t[..., None] * d_s, axis=-1)
    finite = np.isfinite(distance)
    with np.errstate(invalid="ignore"):
        too_long = finite & (distance > max_range_km)
        grazing = finite & (closest < radius_km)
    return IslState(distance_km=distance, up=finite & ~too_long & ~grazing, too_long=too_long,
                    grazing=grazing)
