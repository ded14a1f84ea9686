"""A seedable synthetic Starlink link, fitted to the shipped recorded traces.

Capacity and base delay are piecewise-constant over the 15-second slots that start at seconds
12, 27, 42 and 57 of every UTC minute (given the trace's UTC start), with within-slot noise,
and at every slot boundary a recorded event (outage, capacity ramp, delay spike) plus a loss
burst. The numbers come from `traces/starlink-synth-params.json`, written by
`traces/fit_starlink_synth.py` (see `netem.traces.fit` for the model). Same parameters, seed,
start and duration give the same trace, bit for bit.

Owns generation only; it does not read recorded traces.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import lfilter
from scipy.special import ndtr

from netem.errors import NetemError
from netem.traces.model import DirectionSeries, Trace

#: Where the fitted parameters live in a checkout (the library does not depend on it).
DEFAULT_PARAMS_PATH = Path(__file__).resolve().parents[2] / "traces" / "starlink-synth-params.json"
DEFAULT_START_UTC = datetime(2024, 7, 16, 0, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class SynthParams:
    """Fitted parameters: slot schedule and per-profile, per-direction models (see fit.py)."""

    slot_seconds: tuple[float, ...]
    profiles: dict[str, dict[str, Any]]
    raw: dict[str, Any] = field(repr=False)
    sha256: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any], sha256: str = "") -> SynthParams:
        try:
            slot_seconds = tuple(float(s) for s in raw["slots"]["boundaries_s_of_minute"])
            profiles = dict(raw["profiles"])
        except (KeyError, TypeError) as exc:
            raise NetemError(f"synth parameters lack {exc}; regenerate them with "
                             "traces/fit_starlink_synth.py") from None
        if not slot_seconds or any(not 0 <= s < 60 for s in slot_seconds):
            raise NetemError(f"slot boundaries {slot_seconds}, expected seconds in [0, 60)")
        return cls(slot_seconds=slot_seconds, profiles=profiles, raw=raw, sha256=sha256)

    @classmethod
    def load(cls, path: str | Path | None = None) -> SynthParams:
        """Read the JSON written by the fit script (default: the checkout's traces/ folder)."""
        p = Path(path) if path is not None else DEFAULT_PARAMS_PATH
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise NetemError(f"cannot read synth parameters {p}: {exc.strerror or exc}; "
                             "run `python traces/fit_starlink_synth.py`") from exc
        try:
            raw = json.loads(data)
        except json.JSONDecodeError as exc:
            raise NetemError(f"synth parameters {p} are not JSON: {exc}") from exc
        return cls.from_dict(raw, hashlib.sha256(data).hexdigest())

    def with_slot_seconds(self, slot_seconds: tuple[float, ...]) -> SynthParams:
        """The same models on another slot schedule (what-ifs, and tests that must fail)."""
        raw = {**self.raw, "slots": {**self.raw["slots"],
                                     "boundaries_s_of_minute": list(slot_seconds)}}
        return SynthParams.from_dict(raw, sha256="")

    def profile(self, name: str) -> dict[str, Any]:
        try:
            return self.profiles[name]
        except KeyError:
            raise NetemError(f"unknown synth profile '{name}'; choose: "
                             f"{', '.join(sorted(self.profiles))}") from None


def slot_boundaries_s(start_utc: datetime, duration_s: float,
                      slot_seconds: tuple[float, ...]) -> np.ndarray:
    """Instants (s from start) in [0, duration) whose UTC second-of-minute is a slot start."""
    if start_utc.tzinfo is None:
        raise NetemError(f"start time {start_utc.isoformat()} has no time zone, expected UTC")
    t = start_utc.astimezone(UTC)
    sec0 = t.second + t.microsecond / 1e6
    out = []
    for s in slot_seconds:
        first = (s - sec0) % 60.0
        out.append(np.arange(first, duration_s, 60.0))
    return np.unique(np.round(np.concatenate(out), 9))


def _ar1_uniform(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Uniform(0,1) marginals with AR(1) correlation `phi` of their normal scores."""
    phi = float(np.clip(phi, 0.0, 0.999))
    scale = np.sqrt(1.0 - phi * phi)
    e = rng.standard_normal(n)
    e[0] /= scale
    return ndtr(lfilter([scale], [1.0, -phi], e))


def _from_quantiles(u: np.ndarray, quantiles: list[float]) -> np.ndarray:
    q = np.asarray(quantiles, dtype=np.float64)
    return np.interp(u, np.linspace(0.0, 1.0, q.size), q)


def _generate_direction(p: dict[str, Any], duration_s: float, boundaries: np.ndarray,
                        rng: np.random.Generator) -> DirectionSeries:
    step_ms = float(p["step_ms"])
    step_s = step_ms / 1000.0
    n = int(np.ceil(duration_s / step_s - 1e-9))
    t = np.arange(n) * step_s
    slot = np.searchsorted(boundaries, t, side="right")
    n_slots = boundaries.size + 1
    rate = delay = None
    if "capacity" in p:
        c = p["capacity"]
        slot_mbps = np.exp(rng.normal(c["slot_mean_mbps_log_mu"], c["slot_mean_mbps_log_sigma"],
                                      n_slots))
        per = max(1, int(round(float(c["block_ms"]) / step_ms)))
        n_blocks = -(-n // per)
        ratio = _from_quantiles(_ar1_uniform(rng, n_blocks, c["within_lag1"]),
                                c["within_ratio_quantiles"])
        rate = slot_mbps[slot] * 1e6 * np.repeat(ratio, per)[:n]
    if "delay" in p:
        d = p["delay"]
        base_ms = rng.normal(d["slot_base_ms_mean"], d["slot_base_ms_std"], n_slots)
        residual = _from_quantiles(_ar1_uniform(rng, n, d["within_lag1"]),
                                   d["within_residual_ms_quantiles"])
        delay = base_ms[slot] + residual
    burst = np.zeros(n, dtype=bool)
    events = p["events"]
    picks = rng.integers(0, len(events), boundaries.size)
    for b, k in zip(boundaries, picks, strict=True):
        ev = events[int(k)]
        lo_s = hi_s = b
        if rate is not None and "outage_ms" in ev:
            start = b + ev["outage_lag_ms"] / 1000.0
            end = start + ev["outage_ms"] / 1000.0
            rate[(t >= start - 1e-9) & (t < end - 1e-9)] = 0.0
            ramp_s = ev["ramp_ms"] / 1000.0
            if ramp_s > 0:
                sel = (t >= end - 1e-9) & (t < end + ramp_s)
                rate[sel] *= np.clip((t[sel] - end + step_s / 2) / ramp_s, 0.0, 1.0)
            lo_s, hi_s = min(lo_s, start), max(hi_s, end)
        if delay is not None and ev.get("spike_extra_ms"):
            i0 = int(round((b + ev["spike_lag_ms"] / 1000.0) / step_s))
            extra = np.asarray(ev["spike_extra_ms"], dtype=np.float64)
            idx = np.arange(i0, i0 + extra.size)
            keep = (idx >= 0) & (idx < n)
            delay[idx[keep]] = base_ms[slot[idx[keep]]] + extra[keep]
            lo_s = min(lo_s, i0 * step_s)
            hi_s = max(hi_s, (i0 + extra.size) * step_s)
        burst[(t >= lo_s - 1e-9) & (t < hi_s - 1e-9)] = True
    loss = np.full(n, float(p["loss"]["base_ratio"]))
    loss[burst] = float(p["loss"]["burst_ratio"])
    if delay is not None:
        res = float(p["delay"]["resolution_ms"])
        if res > 0:
            delay = np.round(delay / res) * res
        delay = np.maximum(delay, float(p["delay"]["min_ms"]))
    return DirectionSeries.uniform(
        int(round(step_ms * 1e6)),
        rate_bps=None if rate is None else np.maximum(rate, 0.0),
        delay_us=None if delay is None else delay * 1000.0,
        loss_ratio=loss,
        duration_ns=int(round(duration_s * 1e9)),
    )


def generate_starlink(duration_s: float, seed: int, start_utc: datetime = DEFAULT_START_UTC,
                      profile: str = "leocc", params: SynthParams | None = None) -> Trace:
    """A synthetic Starlink trace of `duration_s` seconds starting at `start_utc` (UTC).

    profile: which recorded link the models were fitted to ('leocc': downlink capacity and
    delay; 'lagos': both directions). seed: any int; each direction draws from its own stream.

    >>> tr = generate_starlink(60, seed=1)
    >>> tr.directions, tr.duration_s
    (('down',), 60.0)
    """
    if not duration_s > 0:
        raise NetemError(f"synth duration_s={duration_s}, expected > 0")
    params = params if params is not None else SynthParams.load()
    prof = params.profile(profile)
    boundaries = slot_boundaries_s(start_utc, duration_s, params.slot_seconds)
    streams = np.random.SeedSequence(int(seed)).spawn(2)
    series = {}
    for i, direction in enumerate(("down", "up")):
        if direction in prof["directions"]:
            rng = np.random.default_rng(streams[i])
            series[direction] = _generate_direction(prof["directions"][direction], duration_s,
                                                    boundaries, rng)
    meta = {
        "generator": "netem.traces.synth.generate_starlink",
        "profile": profile,
        "seed": int(seed),
        "start_utc": start_utc.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "params_sha256": params.sha256,
        "slot_seconds": list(params.slot_seconds),
    }
    return Trace(**series, meta=meta)
