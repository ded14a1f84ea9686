"""Orbital planes and slots of a constellation: known for Walker shells, recovered for real TLEs.

Owns grouping satellites into planes and ordering them within a plane. For real TLE sets the
satellites are propagated with sgp4 to one common epoch (their TLE epochs differ by days, over
which J2 turns a 53 deg / 550 km plane by about 4.5 deg/day), their osculating inclination, RAAN
and argument of latitude are read from the state vectors, planes are clusters in inclination,
then in RAAN (split where neighbours in sorted order are more than a gap apart), and slots are
the order by argument of latitude. Select one shell first (altitude and inclination):
satellites still raising their orbit drift between planes and would blur the clusters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from testbed.errors import InputError
from testbed.orbit.propagate import propagate_teme, satrec_array
from testbed.orbit.times import TimeLike, as_datetime64
from testbed.orbit.tle import Satellite


@dataclass(frozen=True)
class PlaneAssignment:
    """Plane and slot of each of N satellites, and the elements they were derived from.

    plane, slot: (N,) int (plane numbers ordered by RAAN within an inclination group, slots by
    argument of latitude); raan_deg, inclination_deg, arg_latitude_deg: (N,) at `epoch`;
    walker: True when plane/slot came from a Walker generator (same slot index pairs across
    planes), False when recovered (cross-plane neighbours are matched by argument of latitude);
    group: (N,) inclination group; planes in different groups are not neighbours.
    """

    plane: np.ndarray
    slot: np.ndarray
    raan_deg: np.ndarray
    inclination_deg: np.ndarray
    arg_latitude_deg: np.ndarray
    group: np.ndarray
    epoch: np.datetime64
    walker: bool

    @property
    def plane_count(self) -> int:
        """Number of planes."""
        return int(self.plane.max()) + 1 if self.plane.size else 0


def osculating_angles(satellites: Sequence[Satellite], epoch: TimeLike
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inclination_deg, raan_deg, arg_latitude_deg), each (N,), from sgp4 TEME states at epoch.

    Satellites sgp4 fails on at `epoch` get NaN.
    """
    r, v, error = propagate_teme(satrec_array(satellites), np.array([as_datetime64(epoch)]))
    r, v = r[:, 0, :], v[:, 0, :]
    r[error[:, 0] != 0] = np.nan
    h = np.cross(r, v)
    inclination = np.degrees(np.arccos(h[:, 2] / np.linalg.norm(h, axis=1)))
    raan = np.degrees(np.arctan2(h[:, 0], -h[:, 1])) % 360.0
    raan_rad, inc_rad = np.radians(raan), np.radians(inclination)
    u = np.arctan2(r[:, 2] / np.sin(inc_rad),
                   r[:, 0] * np.cos(raan_rad) + r[:, 1] * np.sin(raan_rad))
    return inclination, raan, np.degrees(u) % 360.0


def _split_linear(values: np.ndarray, gap: float) -> np.ndarray:
    """Cluster labels (0..) of 1-D values, split where sorted neighbours are more than gap apart."""
    order = np.argsort(values)
    breaks = np.concatenate([[0], (np.diff(values[order]) > gap).astype(np.int64)])
    labels = np.empty(values.size, dtype=np.int64)
    labels[order] = np.cumsum(breaks)
    return labels


def _split_circular(angles_deg: np.ndarray, gap_deg: float) -> np.ndarray:
    """Like _split_linear on a circle: the cut starts at the widest gap; labels follow angle."""
    if angles_deg.size == 1:
        return np.zeros(1, dtype=np.int64)
    order = np.argsort(angles_deg)
    ordered = angles_deg[order]
    gaps = np.diff(np.append(ordered, ordered[0] + 360.0))
    widest = int(np.argmax(gaps))
    start = (widest + 1) % ordered.size  # first angle after the widest gap
    rolled = np.roll(order, -start)
    unwrapped = np.unwrap(np.radians(angles_deg[rolled]))
    breaks = np.concatenate([[0], (np.degrees(np.diff(unwrapped)) > gap_deg).astype(np.int64)])
    labels = np.empty(angles_deg.size, dtype=np.int64)
    labels[rolled] = np.cumsum(breaks)
    return labels


def recover_planes(
    satellites: Sequence[Satellite],
    epoch: TimeLike | None = None,
    *,
    raan_gap_deg: float = 2.0,
    inclination_gap_deg: float = 0.1,
) -> PlaneAssignment:
    """Planes and slots of real TLE satellites (see module docstring for the method).

    epoch: common instant (default: the latest TLE epoch). raan_gap_deg: neighbouring RAANs
    further apart than this start a new plane (Starlink's 53 deg shell: planes 5 deg apart,
    spread within a plane < 1 deg). Raises InputError for satellites sgp4 fails on at `epoch`.
    """
    if len(satellites) == 0:
        raise InputError("no satellites to group into planes", field="satellites")
    at = as_datetime64(epoch if epoch is not None else max(s.epoch for s in satellites))
    inclination, raan, u = osculating_angles(satellites, at)
    failed = np.flatnonzero(~np.isfinite(raan))
    if failed.size:
        names = ", ".join(satellites[i].name for i in failed[:5])
        raise InputError(f"sgp4 fails at {at} for {failed.size} satellites ({names}); "
                         "drop decayed satellites before recovering planes", field="satellites")
    group = _split_linear(inclination, inclination_gap_deg)
    plane = np.empty(len(satellites), dtype=np.int64)
    next_plane = 0
    for g in range(int(group.max()) + 1):
        members = np.flatnonzero(group == g)
        labels = _split_circular(raan[members], raan_gap_deg)
        plane[members] = labels + next_plane
        next_plane += int(labels.max()) + 1
    slot = np.empty(len(satellites), dtype=np.int64)
    for p in range(next_plane):
        members = np.flatnonzero(plane == p)
        slot[members[np.argsort(u[members])]] = np.arange(members.size)
    return PlaneAssignment(plane=plane, slot=slot, raan_deg=raan, inclination_deg=inclination,
                           arg_latitude_deg=u, group=group, epoch=at, walker=False)


def walker_planes(satellites: Sequence[Satellite]) -> PlaneAssignment:
    """Planes and slots recorded by walker_delta (elements at each satellite's own epoch)."""
    missing = [s.name for s in satellites if s.plane is None or s.slot is None]
    if missing or len(satellites) == 0:
        raise InputError(f"satellites without plane/slot: {', '.join(missing[:5]) or 'none given'}"
                         "; use recover_planes for real TLE sets", field="satellites")
    return PlaneAssignment(
        plane=np.array([s.plane for s in satellites], dtype=np.int64),
        slot=np.array([s.slot for s in satellites], dtype=np.int64),
        raan_deg=np.array([s.raan_deg for s in satellites]),
        inclination_deg=np.array([s.inclination_deg for s in satellites]),
        arg_latitude_deg=np.array([(s.arg_perigee_deg + s.mean_anomaly_deg) % 360.0
                                   for s in satellites]),
        group=np.zeros(len(satellites), dtype=np.int64),
        epoch=as_datetime64(satellites[0].epoch),
        walker=True,
    )


def plane_assignment(satellites: Sequence[Satellite], epoch: TimeLike | None = None,
                     **recover_options: float) -> PlaneAssignment:
    """walker_planes when every satellite knows its plane and slot, else recover_planes."""
    if satellites and all(s.plane is not None and s.slot is not None for s in satellites):
        return walker_planes(satellites)
    return recover_planes(satellites, epoch, **recover_options)
