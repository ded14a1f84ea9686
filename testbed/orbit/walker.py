"""Walker-delta constellations as `Satellite` objects, with sgp4 models built from the elements.

Owns the i:T/P/F pattern (Walker 1984): P planes with RAANs 360/P apart, T/P satellites per plane
evenly phased, and a phase offset of F*360/T between adjacent planes. Orbits are circular, with no
drag, at the given mean altitude. Plane and slot numbers are recorded on each satellite.
"""

from __future__ import annotations

import math
from datetime import datetime

from sgp4.api import WGS72, Satrec

from testbed.errors import InputError
from testbed.orbit.times import JD_UNIX_EPOCH, NS_PER_DAY, TimeLike, as_datetime64
from testbed.orbit.tle import Satellite, mean_motion_rev_per_day

JD_SGP4_EPOCH_ZERO = 2433281.5  # sgp4init counts epoch days from 1949-12-31 00:00 UT
MAX_ALPHA5_CATALOGUE = 339_999  # largest catalogue number a TLE (alpha-5) can hold


def walker_delta(
    total: int,
    planes: int,
    phasing: int,
    altitude_km: float,
    inclination_deg: float,
    epoch: TimeLike | datetime,
    name_prefix: str = "walker",
    *,
    first_norad_id: int = 90_000,
) -> list[Satellite]:
    """Satellites of a Walker-delta i:total/planes/phasing shell, plane-major then slot order.

    Satellite `p * (total // planes) + s` is in plane p (RAAN 360 p / planes) at slot s (mean
    anomaly 360 s / per_plane + 360 phasing p / total), named `{name_prefix}-p{p}-s{s}`.

    >>> sats = walker_delta(1584, 72, 1, 550.0, 53.0, "2024-07-16T00:00:00Z")
    >>> len(sats), sats[23].plane, sats[23].slot, round(sats[0].altitude_km, 3)
    (1584, 1, 1, 550.0)
    """
    _check(total >= 1, "total", total, ">= 1")
    _check(planes >= 1, "planes", planes, ">= 1")
    _check(total % planes == 0, "total", total, f"a multiple of planes={planes}")
    _check(0 <= phasing < planes, "phasing", phasing, f"0 <= phasing < planes={planes}")
    _check(altitude_km > 0, "altitude_km", altitude_km, "> 0")
    _check(0.0 <= inclination_deg <= 180.0, "inclination_deg", inclination_deg, "0 to 180")
    last_id = first_norad_id + total - 1
    _check(first_norad_id >= 1 and last_id <= MAX_ALPHA5_CATALOGUE, "first_norad_id",
           first_norad_id, f"1 to {MAX_ALPHA5_CATALOGUE - total + 1} for {total} satellites")

    epoch64 = as_datetime64(epoch)
    epoch_days = (JD_UNIX_EPOCH - JD_SGP4_EPOCH_ZERO) + int(epoch64.astype("int64")) / NS_PER_DAY
    per_plane = total // planes
    no_kozai_rad_min = mean_motion_rev_per_day(altitude_km) * 2.0 * math.pi / 1440.0
    sats: list[Satellite] = []
    for p in range(planes):
        raan_deg = 360.0 * p / planes
        for s in range(per_plane):
            mean_anomaly_deg = (360.0 * s / per_plane + 360.0 * phasing * p / total) % 360.0
            index = p * per_plane + s
            satrec = Satrec()
            satrec.sgp4init(
                WGS72, "i", first_norad_id + index, epoch_days,
                0.0, 0.0, 0.0,  # bstar, ndot, nddot: no drag
                0.0,  # eccentricity: circular
                0.0,  # argument of perigee
                math.radians(inclination_deg),
                math.radians(mean_anomaly_deg),
                no_kozai_rad_min,
                math.radians(raan_deg),
            )
            sats.append(Satellite.from_satrec(satrec, f"{name_prefix}-p{p}-s{s}", plane=p,
                                              slot=s))
    return sats


def _check(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise InputError(f"{name}={value!r}, expected {expected}", field=name)
