"""Fitting the synthetic Starlink generator's parameters to recorded traces.

Owns the statistics only (slot means, within-slot noise, boundary events); which files are fitted
and where the numbers are written is `traces/fit_starlink_synth.py`'s job. The model fitted is the
one `netem.traces.synth` generates from:

- per slot: capacity mean ~ lognormal(mu, sigma) [Mbit/s]; base delay ~ normal(mean, std) [ms];
- within a slot: capacity = slot mean x ratio, delay = base + residual, where ratio and residual
  follow the empirical quantiles of the recorded ones and are correlated in time through a
  Gaussian AR(1) with the recorded lag-1 correlation (of their normal scores);
- at each boundary, one recorded event replayed as it was: capacity outage (ms), linear
  capacity ramp back up (ms), and the delay spike (lag after the boundary, extra delay per step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

from netem.errors import NetemError
from netem.traces.model import DirectionSeries

N_QUANTILES = 101
#: Boundary neighbourhood left out of the within-slot statistics (events are fitted there).
EXCLUDE_BEFORE_S = 0.2
EXCLUDE_AFTER_S = 1.0
OUTAGE_FRACTION = 0.05
SPIKE_MIN_MS = 5.0


def _normal_scores(x: np.ndarray) -> np.ndarray:
    return ndtri((rankdata(x) - 0.5) / x.size)


def _lag1(values: np.ndarray, slot: np.ndarray, clean: np.ndarray) -> float:
    """Lag-1 correlation of normal scores over consecutive clean samples of the same slot."""
    z = np.full(values.size, np.nan)
    z[clean] = _normal_scores(values[clean])
    pair = clean[:-1] & clean[1:] & (slot[:-1] == slot[1:])
    if pair.sum() < 10:
        return 0.0
    a, b = z[:-1][pair], z[1:][pair]
    return float(np.clip(np.corrcoef(a, b)[0, 1], 0.0, 0.999))


def _quantiles(x: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in np.quantile(x, np.linspace(0.0, 1.0, N_QUANTILES))]


def _masks(n: int, step_s: float, boundaries_s: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(n) * step_s
    slot = np.searchsorted(np.asarray(boundaries_s), t, side="right")
    clean = np.ones(n, dtype=bool)
    for b in boundaries_s:
        clean &= ~((t >= b - EXCLUDE_BEFORE_S) & (t < b + EXCLUDE_AFTER_S))
    return slot, clean


def fit_capacity(rate_bps: np.ndarray, step_s: float, boundaries_s: Sequence[float],
                 block_s: float, min_clean_s: float = 3.0) -> dict[str, Any]:
    """Slot-mean lognormal and within-slot ratio model of capacity sampled every `block_s`."""
    per = int(round(block_s / step_s))
    n_blocks = rate_bps.size // per
    blocks = rate_bps[: n_blocks * per].reshape(n_blocks, per).mean(axis=1)
    slot, clean = _masks(n_blocks, block_s, boundaries_s)
    means: dict[int, float] = {}
    for s in np.unique(slot):
        sel = clean & (slot == s)
        if sel.sum() * block_s >= min_clean_s:
            means[int(s)] = float(blocks[sel].mean())
    if len(means) < 3:
        raise NetemError(f"capacity: only {len(means)} slots with {min_clean_s:g} s of clean "
                         "data, need 3 to fit")
    usable = clean & np.isin(slot, list(means))
    ratio = blocks[usable] / np.array([means[int(s)] for s in slot[usable]])
    ratio_full = np.zeros(n_blocks)
    ratio_full[usable] = ratio
    log_means = np.log(np.array(list(means.values())) / 1e6)
    return {
        "block_ms": block_s * 1000.0,
        "slot_mean_mbps_log_mu": float(log_means.mean()),
        "slot_mean_mbps_log_sigma": float(log_means.std(ddof=1)),
        "slot_means_mbps": [round(v / 1e6, 3) for v in means.values()],
        "within_ratio_quantiles": _quantiles(ratio),
        "within_lag1": _lag1(ratio_full, slot, usable),
    }


def fit_delay(delay_us: np.ndarray, step_s: float, boundaries_s: Sequence[float],
              min_clean_s: float = 3.0) -> dict[str, Any]:
    """Slot base delay (median) normal model and within-slot residual model, in ms."""
    d_ms = delay_us / 1000.0
    slot, clean = _masks(d_ms.size, step_s, boundaries_s)
    bases: dict[int, float] = {}
    for s in np.unique(slot):
        sel = clean & (slot == s)
        if sel.sum() * step_s >= min_clean_s:
            bases[int(s)] = float(np.median(d_ms[sel]))
    if len(bases) < 3:
        raise NetemError(f"delay: only {len(bases)} slots with {min_clean_s:g} s of clean data")
    usable = clean & np.isin(slot, list(bases))
    base_arr = np.array([bases.get(int(s), 0.0) for s in slot])
    residual = d_ms - base_arr
    values = np.array(list(bases.values()))
    nonzero_frac = np.abs(d_ms - np.rint(d_ms)) > 1e-9
    return {
        "slot_base_ms_mean": float(values.mean()),
        "slot_base_ms_std": float(values.std(ddof=1)),
        "slot_bases_ms": [round(v, 3) for v in values],
        "within_residual_ms_quantiles": _quantiles(residual[usable]),
        "within_lag1": _lag1(residual, slot, usable),
        "min_ms": float(d_ms.min()),
        # Recorders quantise; whole-ms files are reproduced as whole ms.
        "resolution_ms": 1.0 if not nonzero_frac.any() else 0.0,
    }


def fit_events(series: DirectionSeries, step_s: float, boundaries_s: Sequence[float],
               margin_s: float = 3.0) -> list[dict[str, Any]]:
    """One record per boundary with `margin_s` of data on both sides (see module docstring)."""
    events = []
    duration_s = series.duration_ns / 1e9
    n = series.t_ns.size
    t = np.arange(n) * step_s
    rate = series.rate_bps
    delay_ms = None if series.delay_us is None else series.delay_us / 1000.0
    for b in boundaries_s:
        if b - margin_s < 0 or b + margin_s > duration_s:
            continue
        ev: dict[str, Any] = {"at_s": round(float(b), 3)}
        if rate is not None:
            before = rate[(t >= b - margin_s) & (t < b - EXCLUDE_BEFORE_S)].mean()
            after = rate[(t >= b + EXCLUDE_AFTER_S) & (t < b + margin_s)].mean()
            near = (t >= b - EXCLUDE_BEFORE_S) & (t < b + 0.5)
            low = rate[near] < OUTAGE_FRACTION * before
            outage_ms, outage_start = 0.0, b
            if low.any():
                edges = np.diff(np.r_[0, low.astype(int), 0])
                starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
                k = int(np.argmax(ends - starts))
                outage_ms = float((ends[k] - starts[k]) * step_s * 1000.0)
                outage_start = float(t[near][starts[k]])
            recovered = outage_start + outage_ms / 1000.0
            window = (t >= recovered) & (t < recovered + 2.0)
            # Signed, so that noise around the new mean cancels instead of adding up.
            deficit_s = max(0.0, float(np.sum(1.0 - rate[window] / after)) * step_s)
            ev.update({
                "outage_lag_ms": round((outage_start - b) * 1000.0, 3),
                "outage_ms": round(outage_ms, 3),
                # A linear ramp from 0 to the new mean over R loses R/2 of capacity.
                "ramp_ms": round(2.0 * deficit_s * 1000.0, 3),
            })
        if delay_ms is not None:
            base = float(np.median(delay_ms[(t >= b - margin_s) & (t < b - EXCLUDE_BEFORE_S)]))
            after_base = float(np.median(delay_ms[(t >= b + EXCLUDE_AFTER_S)
                                                  & (t < b + margin_s)]))
            near = (t >= b - EXCLUDE_BEFORE_S) & (t < b + 0.6)
            above = np.flatnonzero(delay_ms[near] > max(base, after_base) + SPIKE_MIN_MS)
            if above.size:
                first, last = int(above[0]), int(above[-1])
                idx = np.flatnonzero(near)[first: last + 1]
                ref = np.where(t[idx] < b, base, after_base)
                ev.update({
                    "spike_lag_ms": round(float(t[idx[0]] - b) * 1000.0, 3),
                    "spike_extra_ms": [round(float(v), 3) for v in delay_ms[idx] - ref],
                })
            else:
                ev.update({"spike_lag_ms": 0.0, "spike_extra_ms": []})
        events.append(ev)
    if not events:
        raise NetemError("no slot boundary with enough data around it to fit events")
    return events


def fit_direction(series: DirectionSeries, step_ms: float, boundaries_s: Sequence[float],
                  block_ms: float) -> dict[str, Any]:
    """All parameters of one direction; `series` must be on a uniform `step_ms` grid."""
    step_s = step_ms / 1000.0
    out: dict[str, Any] = {"step_ms": step_ms}
    if series.rate_bps is not None:
        out["capacity"] = fit_capacity(series.rate_bps, step_s, boundaries_s, block_ms / 1000.0)
    if series.delay_us is not None:
        out["delay"] = fit_delay(series.delay_us, step_s, boundaries_s)
    out["events"] = fit_events(series, step_s, boundaries_s)
    return out
