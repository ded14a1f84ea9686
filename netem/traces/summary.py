"""A trace's summary: duration, capacity and delay statistics, loss, 15-second slot structure.

Owns the numbers `testbed trace inspect` prints (as a JSON-able dict); formatting is the CLI's.
Capacity statistics are over per-100 ms averages, the resolution the fidelity checks use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netem.errors import NetemError
from netem.traces.model import DirectionSeries, Trace
from netem.traces.slots import SLOT_PERIOD_S, find_slots

CAPACITY_STEP_NS = 100_000_000
#: Fold contrast above which a 15 s slot structure is reported as present. Slot-free noise
#: (correlated noise on 10 ms and 100 ms grids, 20 seeds each) gives 1.6-2.3; the shipped
#: Starlink traces give 3.2 (Lagos, whose rows are not quite 100 ms) and 11.8 (LeoCC).
SLOT_CONTRAST_MIN = 3.0
#: A boundary counts as a detected change point when its change score is this many times the
#: trace's mean score. Slot-free noise (the 40 traces above, 300 grid instants): median 1.6,
#: p99 6.2; the shipped LeoCC boundaries score 12-18 (capacity and delay together), its delay
#: file alone 6.0-30, synthetic leocc boundaries 6.8-17.
BOUNDARY_SCORE_MIN = 6.0


def _pct(values: np.ndarray, qs: tuple[int, ...]) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) for q in qs}


def summarize_direction(series: DirectionSeries, period_s: float = SLOT_PERIOD_S,
                        ) -> dict[str, Any]:
    """Statistics of one direction (units in the keys)."""
    out: dict[str, Any] = {"duration_s": series.duration_ns / 1e9,
                           "intervals": int(series.t_ns.size)}
    steps = np.diff(series.t_ns)
    out["step_ms"] = float(np.median(steps)) / 1e6 if steps.size else series.duration_ns / 1e6
    if series.rate_bps is not None:
        per100 = series.resample(CAPACITY_STEP_NS)
        full = per100.rate_bps[: series.duration_ns // CAPACITY_STEP_NS]  # type: ignore[index]
        cap = full if full.size else per100.rate_bps
        out["capacity_mbps"] = {"mean": series.mean("rate_bps") / 1e6,
                                **{k: v / 1e6 for k, v in _pct(cap, (5, 50, 95)).items()},
                                "min_100ms": float(cap.min()) / 1e6,
                                "max_100ms": float(cap.max()) / 1e6}
    if series.opportunities_ms is not None:
        out["opportunities"] = int(series.opportunities_ms.size)
    if series.delay_us is not None:
        d_ms = series.delay_us / 1000.0
        out["delay_ms"] = {"mean": series.mean("delay_us") / 1000.0, "min": float(d_ms.min()),
                           **_pct(d_ms, (5, 50, 95, 99)), "max": float(d_ms.max())}
    if series.loss_ratio is not None:
        out["loss_ratio"] = {"mean": series.mean("loss_ratio"),
                             "max": float(series.loss_ratio.max())}
    else:
        out["loss_ratio"] = None
    try:
        slots = find_slots(series, period_s=period_s)
    except NetemError as exc:
        out["slots"] = {"error": str(exc)}
        return out
    out["slots"] = {
        "period_s": period_s,
        "phase_s": slots.phase_s,
        "contrast": slots.contrast,
        "present": slots.contrast >= SLOT_CONTRAST_MIN,
        "resolution_ms": slots.resolution_ms,
        "boundaries": [
            {
                "t_s": b.t_s,
                "detected": b.score_ratio >= BOUNDARY_SCORE_MIN,
                "score_ratio": b.score_ratio,
                "rate_before_mbps": None if b.rate_before_bps is None else b.rate_before_bps / 1e6,
                "rate_after_mbps": None if b.rate_after_bps is None else b.rate_after_bps / 1e6,
                "outage_ms": b.outage_ms,
                "delay_spike_ms": None if b.delay_spike_us is None else b.delay_spike_us / 1e3,
            }
            for b in slots.boundaries
        ],
    }
    return out


def summarize(trace: Trace, period_s: float = SLOT_PERIOD_S) -> dict[str, Any]:
    """Summary of every direction plus the trace's provenance (meta)."""
    return {
        "duration_s": trace.duration_s,
        "meta": {k: v for k, v in trace.meta.items() if isinstance(v, str | int | float)},
        "directions": {d: summarize_direction(trace.direction(d), period_s)
                       for d in trace.directions},
    }
