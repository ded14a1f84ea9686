"""How close two traces are: distribution distances and slot-boundary positions.

Owns the comparison used to check the synthetic generator against recorded traces (and usable
for any two traces): Kolmogorov-Smirnov distance of per-100 ms capacity and of delay at the
traces' own steps, and the offset between a trace's detected slot phase and an expected one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import ks_2samp

from netem.traces.model import DirectionSeries
from netem.traces.slots import SLOT_PERIOD_S, circular_offset_s, find_slots

CAPACITY_STEP_NS = 100_000_000


@dataclass(frozen=True)
class Distances:
    """KS distances (0 = same distribution, 1 = disjoint); None when a side lacks it."""

    capacity_100ms: float | None
    delay: float | None


def _capacity_100ms(series: DirectionSeries) -> np.ndarray:
    per = series.resample(CAPACITY_STEP_NS).rate_bps
    full = int(series.duration_ns // CAPACITY_STEP_NS)
    return per[:full] if full else per  # type: ignore[index,return-value]


def ks_distances(a: DirectionSeries, b: DirectionSeries) -> Distances:
    """KS distance of per-100 ms capacity and of delay samples between two series."""
    cap = None
    if a.rate_bps is not None and b.rate_bps is not None:
        cap = float(ks_2samp(_capacity_100ms(a), _capacity_100ms(b)).statistic)
    delay = None
    if a.delay_us is not None and b.delay_us is not None:
        delay = float(ks_2samp(a.delay_us, b.delay_us).statistic)
    return Distances(capacity_100ms=cap, delay=delay)


def phase_offset_s(series: DirectionSeries, expected_first_boundary_s: float,
                   period_s: float = SLOT_PERIOD_S) -> float:
    """Detected slot phase minus the expected one, on the period's circle (seconds)."""
    return circular_offset_s(find_slots(series, period_s).phase_s, expected_first_boundary_s,
                             period_s)
