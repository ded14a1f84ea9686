"""Time arrays for the orbit engine: UTC instants as numpy datetime64[ns], Julian dates, UT1.

Owns the conversion from what callers hold (datetimes, ISO strings, datetime64 arrays, a start +
step + count) to what sgp4 and the Earth-rotation model need (split Julian dates in UTC, UT1-UTC).
UT1-UTC comes from skyfield's *builtin* timescale (IERS tables shipped in the wheel): nothing is
downloaded. Leap-second instants (23:59:60) cannot be expressed in datetime64 and are not handled.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import numpy as np

from testbed.errors import InputError

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
JD_UNIX_EPOCH = 2440587.5  # Julian date of 1970-01-01T00:00:00 UTC

TimeLike = datetime | np.datetime64 | str


def as_datetime64(value: TimeLike) -> np.datetime64:
    """One UTC instant as datetime64[ns]; naive datetimes and strings are read as UTC.

    >>> str(as_datetime64("2024-07-16T00:00:00Z"))
    '2024-07-16T00:00:00.000000000'
    """
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[ns]")
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return np.datetime64(value, "ns")
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1]
        elif text.endswith("+00:00"):
            text = text[: -len("+00:00")]
        try:
            return np.datetime64(text, "ns")
        except ValueError as exc:
            raise InputError(
                f"time {value!r} is not an ISO 8601 UTC instant ({exc})", field="time"
            ) from None
    raise InputError(
        f"time {value!r} has type {type(value).__name__}, expected datetime, "
        "numpy.datetime64 or ISO 8601 string",
        field="time",
    )


def as_times(values: Iterable[TimeLike] | np.ndarray | TimeLike) -> np.ndarray:
    """A 1-D datetime64[ns] array from one instant or a sequence of them."""
    if isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.datetime64):
        return np.atleast_1d(values.astype("datetime64[ns]"))
    if isinstance(values, datetime | np.datetime64 | str):
        return np.array([as_datetime64(values)])
    return np.array([as_datetime64(v) for v in values], dtype="datetime64[ns]")


def time_grid(start: TimeLike, step_s: float, count: int) -> np.ndarray:
    """`count` instants from `start` every `step_s` seconds, as datetime64[ns].

    >>> str(time_grid("2024-07-16T00:00:00", 30.0, 3)[-1])
    '2024-07-16T00:01:00.000000000'
    """
    if not step_s > 0:
        raise InputError(f"step_s={step_s}, expected > 0", field="step_s")
    if count < 1:
        raise InputError(f"count={count}, expected >= 1", field="count")
    start64 = as_datetime64(start)
    offsets_ns = np.round(np.arange(count, dtype=np.float64) * step_s * NS_PER_S)
    return start64 + offsets_ns.astype("timedelta64[ns]")


def seconds_between(times: np.ndarray, origin: np.datetime64) -> np.ndarray:
    """Seconds (float64) from `origin` to each instant of `times`."""
    return (as_times(times) - as_datetime64(origin)).astype(np.int64) / NS_PER_S


def julian_utc(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split Julian dates (whole .5 days, fraction) in UTC, as sgp4's `sgp4(jd, fr)` wants them."""
    ns = as_times(times).astype(np.int64)
    days, rem_ns = np.divmod(ns, NS_PER_DAY)
    return JD_UNIX_EPOCH + days.astype(np.float64), rem_ns / NS_PER_DAY


@functools.cache
def _builtin_timescale():  # noqa: ANN202 - skyfield Timescale
    """skyfield's timescale from the tables in its wheel (never downloads)."""
    from skyfield.api import load

    return load.timescale(builtin=True)


def ut1_minus_utc_s(times: np.ndarray) -> np.ndarray:
    """UT1 - UTC (s) at each instant: IERS values bundled with skyfield, then its predictions."""
    ns = as_times(times).astype(np.int64)
    days, rem_ns = np.divmod(ns, NS_PER_DAY)
    ts = _builtin_timescale()
    t = ts.utc(1970, 1, 1 + days, 0, 0, rem_ns / NS_PER_S)
    return np.atleast_1d(np.asarray(t.dut1, dtype=np.float64))


def datetime64_to_datetime(value: np.datetime64) -> datetime:
    """A timezone-aware UTC datetime (microsecond resolution) from a datetime64."""
    us = int(np.datetime64(value, "us").astype(np.int64))
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
