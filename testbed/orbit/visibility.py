"""Ground stations and what they see: elevation, azimuth and range of N satellites at T instants.

Owns the `GroundStation` value (WGS84 geodetic site with an elevation mask) and the look-angle
array math on Earth-fixed (ITRS) positions. Geometric line of sight only: no refraction, no
terrain. Contact windows are in contacts.py, ground-link choice in groundlinks.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from testbed.errors import InputError
from testbed.orbit.geodesy import enu_rotation, geodetic_to_ecef_km


@dataclass(frozen=True)
class GroundStation:
    """A ground station: WGS84 latitude/longitude (degrees), height above the ellipsoid (m), and
    the minimum elevation (degrees) above which it can talk to a satellite.

    >>> GroundStation("shanghai", 31.23, 121.47, 0.0, 25.0).ecef_km.round(1).tolist()
    [-2849.8, 4655.9, 3287.7]
    """

    name: str
    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0
    min_elevation_deg: float = 10.0

    def __post_init__(self) -> None:
        checks = (
            ("lat_deg", self.lat_deg, -90.0 <= self.lat_deg <= 90.0, "-90 to 90"),
            ("lon_deg", self.lon_deg, -180.0 <= self.lon_deg <= 360.0, "-180 to 360"),
            ("alt_m", self.alt_m, -12_000.0 <= self.alt_m <= 100_000.0, "-12000 to 100000"),
            ("min_elevation_deg", self.min_elevation_deg,
             -90.0 <= self.min_elevation_deg <= 90.0, "-90 to 90"),
        )
        for name, value, ok, expected in checks:
            if not (ok and math.isfinite(value)):
                raise InputError(f"ground station {self.name!r}: {name}={value}, "
                                 f"expected {expected}", field=name)

    @property
    def ecef_km(self) -> np.ndarray:
        """Earth-fixed position (km), shape (3,)."""
        return geodetic_to_ecef_km(self.lat_deg, self.lon_deg, self.alt_m)

    @property
    def enu_rotation(self) -> np.ndarray:
        """Rows: local east, north, up unit vectors in Earth-fixed axes."""
        return enu_rotation(self.lat_deg, self.lon_deg)


@dataclass(frozen=True)
class LookAngles:
    """Look angles from one station, each shaped like the positions without their last axis."""

    elevation_deg: np.ndarray
    azimuth_deg: np.ndarray
    range_km: np.ndarray


def look_angles(positions_km: np.ndarray, station: GroundStation) -> LookAngles:
    """Elevation, azimuth (from north through east, 0-360) and range of ITRS positions (..., 3).

    NaN positions (failed propagation) give NaN angles.
    """
    rho = np.asarray(positions_km, dtype=np.float64) - station.ecef_km
    enu = rho @ station.enu_rotation.T
    range_km = np.linalg.norm(rho, axis=-1)
    elevation = np.degrees(np.arcsin(np.clip(enu[..., 2] / range_km, -1.0, 1.0)))
    azimuth = np.degrees(np.arctan2(enu[..., 0], enu[..., 1])) % 360.0
    return LookAngles(elevation_deg=elevation, azimuth_deg=azimuth, range_km=range_km)


def elevation_deg(positions_km: np.ndarray, station: GroundStation) -> np.ndarray:
    """Elevation (degrees) only: cheaper than look_angles when azimuth is not needed."""
    rho = np.asarray(positions_km, dtype=np.float64) - station.ecef_km
    up = rho @ station.enu_rotation[2]
    return np.degrees(np.arcsin(np.clip(up / np.linalg.norm(rho, axis=-1), -1.0, 1.0)))


def visible(positions_km: np.ndarray, station: GroundStation) -> np.ndarray:
    """Boolean mask: at or above the station's minimum elevation (False where NaN)."""
    return elevation_deg(positions_km, station) >= station.min_elevation_deg
