"""TEME (sgp4's output frame) to the Earth-fixed frame (ITRS), on arrays of positions and times.

The rotation is the one of Vallado et al., AIAA 2006-6753 Appendix C, also used by skyfield's
`TEME_to_ITRF`: a z rotation by GMST 1982 evaluated at UT1. Polar motion (<~15 m at the surface)
is neglected, as skyfield does by default. Owns only this rotation.
"""

from __future__ import annotations

import numpy as np
from skyfield.sgp4lib import theta_GMST1982

from testbed.orbit.times import julian_utc, ut1_minus_utc_s


def gmst_rad(jd_utc: np.ndarray, fr_utc: np.ndarray, ut1_minus_utc: np.ndarray) -> np.ndarray:
    """GMST 1982 angle (radians) at split UTC Julian dates, shifted to UT1 by UT1-UTC seconds."""
    theta, _ = theta_GMST1982(np.asarray(jd_utc), np.asarray(fr_utc) + ut1_minus_utc / 86_400.0)
    return np.asarray(theta)


def rotate_teme_to_itrs(r_teme_km: np.ndarray, theta_rad: np.ndarray) -> np.ndarray:
    """Rotate positions (..., T, 3) by the per-instant GMST angles (T,) into ITRS (a new array)."""
    r = np.asarray(r_teme_km, dtype=np.float64)
    c = np.cos(theta_rad)
    s = np.sin(theta_rad)
    out = np.empty_like(r)
    x, y = r[..., 0], r[..., 1]
    out[..., 0] = c * x + s * y
    out[..., 1] = c * y - s * x
    out[..., 2] = r[..., 2]
    return out


def teme_to_itrs(r_teme_km: np.ndarray, times: np.ndarray) -> np.ndarray:
    """ITRS positions (km) of TEME positions shaped (N, T, 3) or (T, 3) at the T UTC `times`."""
    jd, fr = julian_utc(times)
    theta = gmst_rad(jd, fr, ut1_minus_utc_s(times))
    return rotate_teme_to_itrs(r_teme_km, theta)
