"""Starlink's 15-second reallocation slots: where they fall, and finding them in a trace.

Starlink reassigns satellites on a global schedule at seconds 12, 27, 42 and 57 of every minute;
capacity and delay jump there, often with a short outage and a delay spike. Recorded traces
usually carry relative time only, so the slot phase (seconds from the trace start to its first
boundary) is found from the data: a change score is computed at every instant and folded
modulo the period; the phase whose boundaries score highest wins, moved back to the first sign
of the disruption (a capacity outage precedes the delay spike by tens of ms in the LeoCC trace).

Owns slot arithmetic and detection; knows nothing about files or shapers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from netem.errors import NetemError
from netem.traces.model import DirectionSeries

SLOT_PERIOD_S = 15.0
#: How far before the folded peak a boundary's onset is looked for.
ONSET_LOOKBACK_MS = 100.0
#: A delay rise counts as an onset above this many robust z per step (noise stays below).
ONSET_MIN_RISE_Z = 3.0
#: A folded onset peak counts as clear above this multiple of the folded onset's median.
ONSET_CLEAR_RATIO = 5.0
#: Half-width of the window in which one boundary's own evidence is taken (the boundaries of
#: a recorded trace wander by tens of ms around the folded phase).
LOCAL_WINDOW_MS = 50.0
#: Seconds of the minute at which Starlink slots start.
STARLINK_SLOT_SECONDS: tuple[float, ...] = (12.0, 27.0, 42.0, 57.0)


def first_boundary_s(start_utc: datetime, slot_seconds: tuple[float, ...] = STARLINK_SLOT_SECONDS,
                     ) -> float:
    """Seconds from `start_utc` to the first slot boundary at or after it.

    >>> first_boundary_s(datetime(2024, 7, 16, 0, 0, 3, 260000, tzinfo=UTC))
    8.74
    """
    if start_utc.tzinfo is None:
        raise NetemError(f"start time {start_utc.isoformat()} has no time zone, expected UTC")
    t = start_utc.astimezone(UTC)
    second = t.second + t.microsecond / 1e6
    return round(min((s - second) % 60.0 for s in slot_seconds), 6)


def circular_offset_s(a_s: float, b_s: float, period_s: float = SLOT_PERIOD_S) -> float:
    """Signed smallest difference a - b on a circle of `period_s` (in (-period/2, period/2])."""
    d = (a_s - b_s) % period_s
    return d - period_s if d > period_s / 2 else d


@dataclass(frozen=True)
class BoundaryEvidence:
    """What happened at one slot boundary (t_s from the trace start)."""

    t_s: float
    rate_before_bps: float | None
    rate_after_bps: float | None
    outage_ms: float | None
    delay_before_us: float | None
    delay_spike_us: float | None
    #: the boundary's strongest change score (within LOCAL_WINDOW_MS) over the trace's mean
    score_ratio: float


@dataclass(frozen=True)
class SlotFit:
    """Result of find_slots: phase (first boundary, s), period, strength, per-boundary evidence.

    contrast: mean folded score at the chosen phase over the median over all phases. Slot-free
    noise gives about 2 (the best of many phases); the shipped Starlink traces 3 to 22.
    """

    phase_s: float
    period_s: float
    contrast: float
    resolution_ms: float
    boundaries: tuple[BoundaryEvidence, ...]

    @property
    def boundaries_s(self) -> list[float]:
        return [b.t_s for b in self.boundaries]


def _robust_z(x: np.ndarray) -> np.ndarray:
    med = np.median(x)
    mad = np.median(np.abs(x - med)) * 1.4826
    if mad <= 0:
        mad = np.std(x) or 1.0
    return (x - med) / mad


def _rolling_before_after(x: np.ndarray, w: int, stat: str) -> tuple[np.ndarray, np.ndarray]:
    """`stat` (mean or median) of x[i-w:i] and of x[i:i+w] for every i (edges reflected)."""
    pad = np.pad(x, (w, w), mode="reflect")
    if stat == "mean":
        cum = np.concatenate(([0.0], np.cumsum(pad)))
        sums = cum[w:] - cum[:-w]  # sums[j] = pad[j:j+w].sum()
        return sums[: x.size] / w, sums[w: w + x.size] / w
    windows = np.lib.stride_tricks.sliding_window_view(pad, w)
    return np.median(windows[: x.size], axis=1), np.median(windows[w: w + x.size], axis=1)


def change_scores(series: DirectionSeries, resolution_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-grid-instant evidence that a slot boundary sits there: (level, onset) scores.

    level: over capacity (log) and delay, the jump between the means of the 1 s before and
    after (robust z, winsorised at 3 so that spikes and outages do not dominate; the mean's
    triangular response peaks at a step, where a median's would be flat).
    onset: sharp markers of a disruption's first instant: the delay's rises of more than
    ONSET_MIN_RISE_Z robust z from one instant to the next (spike onsets, halved) and capacity
    falling into an outage (below 5 % of the preceding 1 s median; 3 points).
    """
    # Instants rounded to whole ns (a period need not be a whole number of ns per step).
    starts = np.rint(np.arange(0.0, series.duration_ns, resolution_ms * 1e6)).astype(np.int64)
    grid = series.on_grid(starts, series.duration_ns)
    w = max(3, int(round(1000.0 / resolution_ms)))
    n = grid.t_ns.size
    level, onset = np.zeros(n), np.zeros(n)
    if grid.rate_bps is not None:
        rate = grid.rate_bps
        logc = np.clip(_robust_z(np.log(rate + max(1.0, 0.01 * float(np.median(rate))))), -3, 3)
        before, after = _rolling_before_after(logc, w, "mean")
        level += np.abs(after - before)
        rate_before, _ = _rolling_before_after(rate, w, "median")
        falls = (rate < 0.05 * rate_before) & np.r_[True, rate[:-1] >= 0.05 * rate_before[:-1]]
        onset += 3.0 * falls
    if grid.delay_us is not None:
        z = _robust_z(grid.delay_us)
        before, after = _rolling_before_after(np.clip(z, -3, 3), w, "mean")
        level += np.abs(after - before)
        rise = np.r_[0.0, np.diff(z)]
        onset += np.where(rise > ONSET_MIN_RISE_Z, np.minimum(rise, 10.0), 0.0) / 2.0
    return level, onset


def change_score(series: DirectionSeries, resolution_ms: float) -> np.ndarray:
    """level + onset (see change_scores): one number per grid instant."""
    level, onset = change_scores(series, resolution_ms)
    return level + onset


def _fold_mean(score: np.ndarray, bins: int) -> np.ndarray:
    folded = np.zeros(bins)
    counts = np.zeros(bins)
    for k in range(-(-score.size // bins)):
        part = score[k * bins:(k + 1) * bins]
        folded[: part.size] += part
        counts[: part.size] += 1
    return folded / np.maximum(counts, 1)


def fold(score: np.ndarray, bins: int, lookback_bins: int = 0,
         onset: np.ndarray | None = None) -> tuple[int, float]:
    """Fold a change score modulo `bins` samples: (best offset, contrast over the median).

    The peak of the folded score is the boundary. When `onset` (sharp first-instant markers,
    same length as score) is given and, folded, shows a clear peak within `lookback_bins`
    before (or 1 bin after) that peak, the boundary moves to the earliest bin there holding at
    least half of that onset peak: a capacity outage often starts tens of ms before the delay
    spike, and a disruption begins at its first sign.
    """
    folded = _fold_mean(score, bins)
    # Tolerate one bin of jitter: a boundary's evidence may straddle two grid instants.
    smooth = np.maximum(folded, np.maximum(np.roll(folded, 1), np.roll(folded, -1)) * 0.8)
    peak = int(np.argmax(smooth))
    best = peak
    if onset is not None and lookback_bins > 0:
        f_on = _fold_mean(onset, bins)
        offsets = np.arange(-min(lookback_bins, bins // 4), 2)
        window = f_on[(peak + offsets) % bins]
        if window.max() > ONSET_CLEAR_RATIO * max(float(np.median(f_on)), 1e-12):
            first = int(np.flatnonzero(window >= 0.5 * window.max())[0])
            best = int((peak + offsets[first]) % bins)
    med = float(np.median(folded))
    top = float(max(folded[best], folded[peak]))
    return best, (top / med if med > 0 else float("inf"))


def find_slots(series: DirectionSeries, period_s: float = SLOT_PERIOD_S,
               resolution_ms: float | None = None) -> SlotFit:
    """Find the slot phase of a series from its data (capacity and/or delay).

    resolution_ms defaults to the series' own step, at least 10 ms. Raises NetemError when
    the series is shorter than two periods (a phase needs repetitions to be meaningful).
    """
    if series.duration_ns < 2 * period_s * 1e9:
        raise NetemError(
            f"trace lasts {series.duration_ns / 1e9:g} s; finding {period_s:g} s slots needs "
            f"at least {2 * period_s:g} s"
        )
    if resolution_ms is None:
        steps = np.diff(series.t_ns)
        native_ms = float(np.median(steps)) / 1e6 if steps.size else 10.0
        resolution_ms = min(max(10.0, native_ms), 1000.0)
    # A whole number of grid steps per period, so that folding is exact.
    bins = max(2, int(round(period_s * 1000.0 / resolution_ms)))
    resolution_ms = period_s * 1000.0 / bins
    level, onset = change_scores(series, resolution_ms)
    score = level + onset
    best, contrast = fold(score, bins, int(round(ONSET_LOOKBACK_MS / resolution_ms)), onset)
    phase_s = best * resolution_ms / 1000.0
    evidence = tuple(
        _evidence(series, t, score, resolution_ms)
        for t in np.arange(phase_s, series.duration_ns / 1e9, period_s)
    )
    return SlotFit(phase_s=round(phase_s, 6), period_s=period_s, contrast=contrast,
                   resolution_ms=resolution_ms, boundaries=evidence)


def _evidence(series: DirectionSeries, t_s: float, score: np.ndarray,
              resolution_ms: float) -> BoundaryEvidence:
    def window(q: str, a_s: float, b_s: float) -> np.ndarray | None:
        values = getattr(series, q)
        if values is None:
            return None
        lo, hi = max(0.0, t_s + a_s), min(series.duration_ns / 1e9, t_s + b_s)
        if hi <= lo:
            return None
        ts = np.arange(lo, hi, resolution_ms / 1000.0)
        return series.value_at(q, np.rint(ts * 1e9).astype(np.int64))

    before_r, after_r = window("rate_bps", -3.0, -0.3), window("rate_bps", 0.7, 3.0)
    near_r = window("rate_bps", -0.3, 0.7)
    outage_ms = None
    if near_r is not None and before_r is not None and before_r.size:
        low = near_r < 0.05 * float(np.median(before_r))
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, low.astype(int), 0])))[::2]
        outage_ms = float(runs.max() * resolution_ms) if runs.size else 0.0
    before_d, near_d = window("delay_us", -3.0, -0.1), window("delay_us", -0.1, 0.5)
    spike = None
    if before_d is not None and near_d is not None and before_d.size and near_d.size:
        spike = float(near_d.max() - np.median(before_d))
    i = int(round(t_s * 1000.0 / resolution_ms))
    half = max(1, int(round(LOCAL_WINDOW_MS / resolution_ms)))
    local = float(score[max(0, i - half): i + half + 1].max()) if i < score.size else 0.0
    mean = float(score.mean()) or 1.0
    return BoundaryEvidence(
        t_s=round(float(t_s), 6),
        rate_before_bps=None if before_r is None or not before_r.size else float(before_r.mean()),
        rate_after_bps=None if after_r is None or not after_r.size else float(after_r.mean()),
        outage_ms=outage_ms,
        delay_before_us=None if before_d is None or not before_d.size else float(
            np.median(before_d)),
        delay_spike_us=spike,
        score_ratio=local / mean,
    )
