"""WGS84 geodesy on arrays: geodetic <-> Earth-fixed (ITRS) coordinates and local ENU axes.

Owns the ellipsoid constants and the conversions; knows nothing about satellites or time.
Positions are in km, heights of stations in m (as surveyors give them), angles in degrees.
"""

from __future__ import annotations

import numpy as np

WGS84_A_KM = 6378.137
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)


def geodetic_to_ecef_km(lat_deg: np.ndarray | float, lon_deg: np.ndarray | float,
                        alt_m: np.ndarray | float = 0.0) -> np.ndarray:
    """Earth-fixed (x, y, z) in km, shape (..., 3), of WGS84 geodetic points.

    >>> geodetic_to_ecef_km(0.0, 0.0, 0.0).round(3).tolist()
    [6378.137, 0.0, 0.0]
    """
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    h_km = np.asarray(alt_m, dtype=np.float64) / 1000.0
    sin_lat = np.sin(lat)
    n_km = WGS84_A_KM / np.sqrt(1.0 - WGS84_E2 * sin_lat**2)
    x = (n_km + h_km) * np.cos(lat) * np.cos(lon)
    y = (n_km + h_km) * np.cos(lat) * np.sin(lon)
    z = (n_km * (1.0 - WGS84_E2) + h_km) * sin_lat
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1)


def ecef_to_geodetic(xyz_km: np.ndarray, iterations: int = 4) -> tuple[np.ndarray, ...]:
    """(lat_deg, lon_deg, alt_km) of Earth-fixed points, shape (..., 3) -> three (...) arrays.

    Fixed-point iteration on latitude; four rounds reach well below a millimetre from the ground
    to GEO. NaN positions give NaN.
    """
    xyz = np.asarray(xyz_km, dtype=np.float64)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    p = np.hypot(x, y)
    lat = np.arctan2(z, p * (1.0 - WGS84_E2))
    for _ in range(iterations):
        sin_lat = np.sin(lat)
        n_km = WGS84_A_KM / np.sqrt(1.0 - WGS84_E2 * sin_lat**2)
        h_km = p * np.cos(lat) + z * sin_lat - WGS84_A_KM * np.sqrt(1.0 - WGS84_E2 * sin_lat**2)
        lat = np.arctan2(z, p * (1.0 - WGS84_E2 * n_km / (n_km + h_km)))
    sin_lat = np.sin(lat)
    h_km = p * np.cos(lat) + z * sin_lat - WGS84_A_KM * np.sqrt(1.0 - WGS84_E2 * sin_lat**2)
    return np.degrees(lat), np.degrees(np.arctan2(y, x)), h_km


def enu_rotation(lat_deg: float, lon_deg: float) -> np.ndarray:
    """3x3 matrix whose rows are the local east, north and up unit vectors in Earth-fixed axes.

    `enu = ecef_vector @ enu_rotation(lat, lon).T`; up is the ellipsoid normal (geodetic).
    """
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    sl, cl, so, co = np.sin(lat), np.cos(lat), np.sin(lon), np.cos(lon)
    return np.array([
        [-so, co, 0.0],
        [-sl * co, -sl * so, cl],
        [cl * co, cl * so, sl],
    ])
