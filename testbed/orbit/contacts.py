"""Contact windows between satellites and one ground station: rise, culmination and set times.

Owns the search: a coarse vectorised scan of elevation every `step_s` for all satellites, then,
per satellite, vectorised bisection of every threshold crossing (to `tolerance_s`, default 1 ms)
and of the elevation maximum (zero of the symmetric elevation difference). A pass whose samples
all stay below the mask can still reach it between two samples: coarse local maxima within
GRAZING_MARGIN_DEG of the mask are refined too, so short grazing passes are not lost.
Windows already open at `start` or still open at `end` are clipped there and flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sgp4.api import Satrec

from testbed.errors import InputError
from testbed.orbit.frames import gmst_rad, rotate_teme_to_itrs
from testbed.orbit.propagate import propagate
from testbed.orbit.times import (
    NS_PER_S,
    TimeLike,
    as_datetime64,
    julian_utc,
    ut1_minus_utc_s,
)
from testbed.orbit.tle import Satellite
from testbed.orbit.visibility import GroundStation, elevation_deg

GRAZING_MARGIN_DEG = 5.0  # coarse maxima this close below the mask are refined
CULMINATION_HALF_STEP_S = 0.05  # half-width of the symmetric difference locating the maximum


@dataclass(frozen=True)
class ContactWindow:
    """One pass of a satellite above a station's elevation mask (times datetime64[ns] UTC)."""

    satellite: str
    satellite_index: int
    station: str
    rise_time: np.datetime64
    culmination_time: np.datetime64
    set_time: np.datetime64
    max_elevation_deg: float
    clipped_start: bool
    clipped_end: bool

    @property
    def duration_s(self) -> float:
        """Seconds from rise to set."""
        return int((self.set_time - self.rise_time).astype("timedelta64[ns]").astype(np.int64)) \
            / NS_PER_S


class _ElevationOfOne:
    """Elevation (degrees) of one satellite at arbitrary seconds after `start`; NaN on failure."""

    def __init__(self, satrec: Satrec, station: GroundStation, start: np.datetime64,
                 grid_s: np.ndarray, dut1_s: np.ndarray) -> None:
        jd0, fr0 = julian_utc(np.array([start]))
        self._satrec, self._station = satrec, station
        self._jd0, self._fr0 = float(jd0[0]), float(fr0[0])
        self._grid_s, self._dut1_s = grid_s, dut1_s

    def __call__(self, t_s: np.ndarray) -> np.ndarray:
        jd = np.full(t_s.shape, self._jd0)
        fr = self._fr0 + t_s / 86_400.0
        error, r, _ = self._satrec.sgp4_array(jd, fr)
        theta = gmst_rad(jd, fr, np.interp(t_s, self._grid_s, self._dut1_s))
        elevation = elevation_deg(rotate_teme_to_itrs(r, theta), self._station)
        elevation[error != 0] = np.nan
        return elevation


def _bisect_crossings(f: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray,
                      lo_above: np.ndarray, tolerance_s: float) -> np.ndarray:
    """Instants where f changes sign (>= 0 counts as above) inside each [lo, hi], to tolerance."""
    lo, hi = lo.copy(), hi.copy()
    while lo.size and float((hi - lo).max()) > tolerance_s:
        mid = 0.5 * (lo + hi)
        same = (f(mid) >= 0.0) == lo_above
        lo = np.where(same, mid, lo)
        hi = np.where(same, hi, mid)
    return 0.5 * (lo + hi)


def _maximise(f: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray,
              tolerance_s: float) -> np.ndarray:
    """Instant of the maximum of a unimodal f inside each [lo, hi] (the bounds when monotonic)."""
    h = CULMINATION_HALF_STEP_S

    def slope_up(t: np.ndarray) -> np.ndarray:
        both = f(np.concatenate([t + h, t - h]))
        return both[: t.size] - both[t.size :] > 0.0

    result = np.empty_like(lo)
    rising_at_lo = slope_up(lo)
    rising_at_hi = slope_up(hi)
    at_lo, at_hi = ~rising_at_lo, rising_at_hi & rising_at_lo
    inner = rising_at_lo & ~rising_at_hi
    result[at_lo], result[at_hi] = lo[at_lo], hi[at_hi]
    a, b = lo[inner], hi[inner]
    while a.size and float((b - a).max()) > tolerance_s:
        mid = 0.5 * (a + b)
        up = slope_up(mid)
        a = np.where(up, mid, a)
        b = np.where(up, b, mid)
    result[inner] = 0.5 * (a + b)
    return result


def _windows_of_one(elev: Callable[[np.ndarray], np.ndarray], coarse_deg: np.ndarray,
                    grid_s: np.ndarray, mask_deg: float, tolerance_s: float
                    ) -> list[tuple[float, float, float, float, bool, bool]]:
    """(rise_s, culmination_s, set_s, max_elevation_deg, clipped_start, clipped_end) per pass."""
    above = coarse_deg >= mask_deg  # NaN (failed) counts as below
    change = np.diff(above.astype(np.int8))
    rise_k = np.flatnonzero(change == 1)
    set_k = np.flatnonzero(change == -1)

    # Passes that cross the mask only between two samples: refine near-mask coarse maxima.
    inner = np.arange(1, len(coarse_deg) - 1)
    with np.errstate(invalid="ignore"):
        peak = (
            (coarse_deg[inner] >= coarse_deg[inner - 1])
            & (coarse_deg[inner] >= coarse_deg[inner + 1])
            & (coarse_deg[inner] < mask_deg)
            & (coarse_deg[inner] > mask_deg - GRAZING_MARGIN_DEG)
        )
    peaks = inner[peak]
    extra_rise = extra_set = np.empty(0)
    if peaks.size:
        t_max = _maximise(elev, grid_s[peaks - 1], grid_s[peaks + 1], tolerance_s)
        reaches = elev(t_max) >= mask_deg
        if reaches.any():
            lo, hi, tm = grid_s[peaks - 1][reaches], grid_s[peaks + 1][reaches], t_max[reaches]
            extra_rise = _bisect_crossings(lambda t: elev(t) - mask_deg, lo, tm,
                                           np.zeros(tm.size, bool), tolerance_s)
            extra_set = _bisect_crossings(lambda t: elev(t) - mask_deg, tm, hi,
                                          np.ones(tm.size, bool), tolerance_s)

    lo = np.concatenate([grid_s[rise_k], grid_s[set_k]])
    hi = np.concatenate([grid_s[rise_k + 1], grid_s[set_k + 1]])
    lo_above = np.concatenate([np.zeros(rise_k.size, bool), np.ones(set_k.size, bool)])
    crossings = _bisect_crossings(lambda t: elev(t) - mask_deg, lo, hi, lo_above, tolerance_s)
    events = sorted(
        [(t, 1) for t in crossings[: rise_k.size]] + [(t, -1) for t in crossings[rise_k.size :]]
        + [(t, 1) for t in extra_rise] + [(t, -1) for t in extra_set]
    )

    spans: list[tuple[float, float, bool, bool]] = []
    open_at: float | None = float(grid_s[0]) if above[0] else None
    clipped = bool(above[0])
    for t, kind in events:
        if kind == 1 and open_at is None:
            open_at, clipped = float(t), False
        elif kind == -1 and open_at is not None:
            spans.append((open_at, float(t), clipped, False))
            open_at = None
    if open_at is not None:
        spans.append((open_at, float(grid_s[-1]), clipped, True))
    if not spans:
        return []

    rise = np.array([s[0] for s in spans])
    set_ = np.array([s[1] for s in spans])
    step_s = float(grid_s[1] - grid_s[0]) if len(grid_s) > 1 else float(set_.max() - rise.min())
    lo_c, hi_c = rise.copy(), set_.copy()
    for i, (r, s) in enumerate(zip(rise, set_, strict=True)):
        inside = np.flatnonzero((grid_s >= r) & (grid_s <= s))
        if inside.size:
            k = inside[np.nanargmax(coarse_deg[inside])] if np.isfinite(
                coarse_deg[inside]).any() else inside[0]
            lo_c[i] = max(r, grid_s[k] - step_s)
            hi_c[i] = min(s, grid_s[k] + step_s)
    culmination = _maximise(elev, lo_c, hi_c, tolerance_s)
    max_elevation = elev(culmination)
    return [
        (float(rise[i]), float(culmination[i]), float(set_[i]), float(max_elevation[i]),
         spans[i][2], spans[i][3])
        for i in range(len(spans))
    ]


def contact_windows(
    satellites: Sequence[Satellite],
    station: GroundStation,
    start: TimeLike,
    end: TimeLike,
    *,
    step_s: float = 10.0,
    tolerance_s: float = 1e-3,
    chunk_satellites: int = 256,
    interpolation_step_s: float | None = None,
) -> list[ContactWindow]:
    """Every pass of every satellite above `station.min_elevation_deg` in [start, end], sorted by
    rise time. Times are within `tolerance_s`/2 of the crossing of the sgp4 + GMST model.

    step_s: coarse scan step (a pass must last about 2*step_s to be sure of being found, shorter
    ones are found when their coarse maximum is within GRAZING_MARGIN_DEG of the mask);
    interpolation_step_s: passed to propagate for the coarse scan only (refinement is exact).
    Satellites that sgp4 fails on are below the mask while they fail.
    """
    start64, end64 = as_datetime64(start), as_datetime64(end)
    span_s = int((end64 - start64).astype(np.int64)) / NS_PER_S
    if not span_s > 0:
        raise InputError(f"end {end64} is not after start {start64}", field="end")
    if not step_s > 0:
        raise InputError(f"step_s={step_s}, expected > 0", field="step_s")
    if not 0 < tolerance_s < step_s:
        raise InputError(f"tolerance_s={tolerance_s}, expected 0 < tolerance_s < step_s",
                         field="tolerance_s")
    grid_s = np.arange(0.0, span_s, step_s)
    grid_s = np.append(grid_s, span_s) if grid_s[-1] < span_s else grid_s
    times = start64 + np.round(grid_s * NS_PER_S).astype("timedelta64[ns]")
    dut1_s = ut1_minus_utc_s(times)

    windows: list[ContactWindow] = []
    for first in range(0, len(satellites), chunk_satellites):
        chunk = satellites[first : first + chunk_satellites]
        coarse = elevation_deg(
            propagate(chunk, times, interpolation_step_s=interpolation_step_s).positions_km,
            station,
        )
        for j, sat in enumerate(chunk):
            elev = _ElevationOfOne(sat.satrec, station, start64, grid_s, dut1_s)
            for rise, culm, set_, max_el, c_start, c_end in _windows_of_one(
                elev, coarse[j], grid_s, station.min_elevation_deg, tolerance_s
            ):
                windows.append(ContactWindow(
                    satellite=sat.name,
                    satellite_index=first + j,
                    station=station.name,
                    rise_time=_at(start64, rise),
                    culmination_time=_at(start64, culm),
                    set_time=_at(start64, set_),
                    max_elevation_deg=max_el,
                    clipped_start=c_start,
                    clipped_end=c_end,
                ))
    windows.sort(key=lambda w: (w.rise_time, w.satellite_index))
    return windows


def _at(start: np.datetime64, offset_s: float) -> np.datetime64:
    return start + np.timedelta64(round(offset_s * NS_PER_S), "ns")
