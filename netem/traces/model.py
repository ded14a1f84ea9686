"""The in-memory trace: per direction, piecewise-constant capacity, one-way delay and loss.

Owns the value model (validation, resampling, slicing, looping, turning a series into LinkState
changes). Reading and writing files is `netem.traces.formats`; applying states is the shapers'.

A direction is a grid of intervals: interval i starts at `t_ns[i]` and ends at `t_ns[i + 1]`
(the last one at `duration_ns`). Each quantity is one value per interval, or None when the source
did not record it (a delay file has no capacity). mahimahi-type traces also keep their exact
delivery opportunities (`opportunities_ms`, one per 1500-byte packet) so a userspace shaper can
replay them exactly rather than from the rounded per-interval rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from netem.errors import LinkStateError, NetemError
from netem.linkstate import LinkState

#: Bits carried by one mahimahi delivery opportunity (one 1500-byte packet).
OPPORTUNITY_BITS = 1500 * 8
DIRECTIONS = ("down", "up")
QUANTITIES = ("rate_bps", "delay_us", "loss_ratio")
_NS_PER_MS = 1_000_000


def _as_array(name: str, values: Any, dtype: type, n: int | None) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(values, dtype=dtype))
    if arr.ndim != 1:
        raise LinkStateError(f"trace {name}: expected a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise LinkStateError(
            f"trace {name}: has {arr.shape[0]} values, expected {n} (one per t_ns)"
        )
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class DirectionSeries:
    """One direction of a trace: interval starts `t_ns` and one value per interval.

    t_ns: int64, starts at 0, strictly increasing; duration_ns: end of the last interval;
    rate_bps, delay_us, loss_ratio: float64 or None (not recorded);
    opportunities_ms: int64 delivery-opportunity instants, non-decreasing, or None.
    """

    t_ns: np.ndarray
    duration_ns: int
    rate_bps: np.ndarray | None = None
    delay_us: np.ndarray | None = None
    loss_ratio: np.ndarray | None = None
    opportunities_ms: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = _as_array("t_ns", self.t_ns, np.int64, None)
        object.__setattr__(self, "t_ns", t)
        object.__setattr__(self, "duration_ns", int(self.duration_ns))
        if t.size == 0:
            raise LinkStateError("trace t_ns: no intervals, expected at least one")
        if t[0] != 0:
            raise LinkStateError(f"trace t_ns[0]={t[0]}, expected 0 (times are relative)")
        steps = np.diff(t)
        if steps.size and steps.min() <= 0:
            i = int(np.argmin(steps)) + 1
            raise LinkStateError(
                f"trace t_ns[{i}]={t[i]} after {t[i - 1]}, expected strictly increasing"
            )
        if self.duration_ns <= t[-1]:
            raise LinkStateError(
                f"trace duration_ns={self.duration_ns}, expected > last interval start {t[-1]}"
            )
        for name in QUANTITIES:
            values = getattr(self, name)
            if values is None:
                continue
            arr = _as_array(name, values, np.float64, t.size)
            bad = ~np.isfinite(arr) | (arr < 0)
            if name == "loss_ratio":
                bad |= arr > 1
            if bad.any():
                i = int(np.argmax(bad))
                expected = "a ratio in [0, 1]" if name == "loss_ratio" else "a finite value >= 0"
                raise LinkStateError(f"trace {name}[{i}]={arr[i]}, expected {expected}")
            object.__setattr__(self, name, arr)
        if self.opportunities_ms is not None:
            opp = _as_array("opportunities_ms", self.opportunities_ms, np.int64, None)
            if opp.size and (opp[0] < 0 or np.diff(opp).min(initial=0) < 0):
                raise LinkStateError(
                    "trace opportunities_ms: expected non-negative, non-decreasing"
                )
            object.__setattr__(self, "opportunities_ms", opp)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def uniform(
        cls,
        step_ns: int,
        *,
        rate_bps: Any = None,
        delay_us: Any = None,
        loss_ratio: Any = None,
        duration_ns: int | None = None,
    ) -> DirectionSeries:
        """A series on a uniform grid of `step_ns` (the last interval may be shorter)."""
        n = next(len(v) for v in (rate_bps, delay_us, loss_ratio) if v is not None)
        t = np.arange(n, dtype=np.int64) * int(step_ns)
        return cls(
            t_ns=t,
            duration_ns=int(duration_ns if duration_ns is not None else n * int(step_ns)),
            rate_bps=rate_bps,
            delay_us=delay_us,
            loss_ratio=loss_ratio,
        )

    @classmethod
    def from_opportunities(
        cls, opportunities_ms: Any, step_ms: int = 10, duration_ms: int | None = None
    ) -> DirectionSeries:
        """Capacity from delivery opportunities, counted per `step_ms` interval.

        duration_ms defaults to the last opportunity (mahimahi's loop period).
        """
        opp = np.asarray(opportunities_ms, dtype=np.int64)
        if opp.size == 0:
            raise LinkStateError("trace opportunities_ms: empty, expected at least one")
        end_ms = int(duration_ms if duration_ms is not None else max(int(opp[-1]), 1))
        if step_ms <= 0:
            raise LinkStateError(f"trace step_ms={step_ms}, expected > 0")
        starts_ms = np.arange(0, end_ms, step_ms, dtype=np.int64)
        edges_ms = np.append(starts_ms, end_ms)
        # An opportunity at exactly the end belongs to the last interval (mahimahi's last line
        # is both the last delivery and the loop period).
        inside = opp[opp <= end_ms]
        bins = np.minimum(np.searchsorted(starts_ms, inside, side="right") - 1, starts_ms.size - 1)
        counts = np.bincount(bins, minlength=starts_ms.size)
        lengths_s = np.diff(edges_ms) / 1000.0
        return cls(
            t_ns=starts_ms * _NS_PER_MS,
            duration_ns=end_ms * _NS_PER_MS,
            rate_bps=counts * OPPORTUNITY_BITS / lengths_s,
            opportunities_ms=opp,
        )

    # ---- properties ---------------------------------------------------------------------
    @property
    def end_ns(self) -> np.ndarray:
        """End of each interval."""
        return np.append(self.t_ns[1:], self.duration_ns)

    @property
    def quantities(self) -> tuple[str, ...]:
        """Names of the quantities this series records."""
        return tuple(q for q in QUANTITIES if getattr(self, q) is not None)

    def mean(self, quantity: str) -> float:
        """Time-weighted mean of a quantity over the whole series."""
        values = self._require(quantity)
        lengths = np.diff(np.append(self.t_ns, self.duration_ns)).astype(np.float64)
        return float(np.dot(values, lengths) / lengths.sum())

    def _require(self, quantity: str) -> np.ndarray:
        if quantity not in QUANTITIES:
            raise NetemError(
                f"unknown trace quantity '{quantity}'; choose: {', '.join(QUANTITIES)}"
            )
        values = getattr(self, quantity)
        if values is None:
            raise NetemError(f"trace has no {quantity} (it has: {', '.join(self.quantities)})")
        return values

    # ---- transformations ----------------------------------------------------------------
    def on_grid(self, t_ns: np.ndarray, duration_ns: int) -> DirectionSeries:
        """Time-weighted average of each quantity over the intervals of a new grid.

        Exact for piecewise-constant data (averages of the cumulative integral), so capacity in
        bits is conserved. Opportunities are kept unchanged.
        """
        new_t = np.asarray(t_ns, dtype=np.int64)
        if int(duration_ns) == self.duration_ns and np.array_equal(new_t, self.t_ns):
            return self  # same grid: values stay bit-exact
        edges = np.append(new_t, int(duration_ns)).astype(np.float64)
        old_edges = np.append(self.t_ns, self.duration_ns).astype(np.float64)
        values: dict[str, np.ndarray | None] = {}
        for q in QUANTITIES:
            v = getattr(self, q)
            if v is None:
                values[q] = None
                continue
            # Beyond the series' end the last value holds (used when grids are merged).
            ext_edges = np.append(old_edges, max(edges[-1], old_edges[-1]) + 1.0)
            ext_v = np.append(v, v[-1])
            cum = np.concatenate(([0.0], np.cumsum(ext_v * np.diff(ext_edges))))
            integral = np.interp(edges, ext_edges, cum)
            values[q] = np.diff(integral) / np.diff(edges)
        return DirectionSeries(
            t_ns=new_t,
            duration_ns=int(duration_ns),
            opportunities_ms=self.opportunities_ms,
            **values,
        )

    def resample(self, step_ns: int) -> DirectionSeries:
        """The same series on a uniform grid of `step_ns` (last interval possibly shorter)."""
        if step_ns <= 0:
            raise LinkStateError(f"resample step_ns={step_ns}, expected > 0")
        return self.on_grid(np.arange(0, self.duration_ns, int(step_ns), dtype=np.int64),
                            self.duration_ns)

    def value_at(self, quantity: str, t_ns: Any) -> np.ndarray:
        """Value of a quantity at instants `t_ns` (array), piecewise-constant lookup."""
        values = self._require(quantity)
        idx = np.searchsorted(self.t_ns, np.asarray(t_ns, dtype=np.int64), side="right") - 1
        return values[np.clip(idx, 0, values.size - 1)]

    def slice(self, start_ns: int, end_ns: int) -> DirectionSeries:
        """The part in [start_ns, end_ns), re-based so that it starts at 0."""
        start_ns, end_ns = int(start_ns), int(min(end_ns, self.duration_ns))
        if not 0 <= start_ns < end_ns:
            raise LinkStateError(
                f"trace slice [{start_ns}, {end_ns}) ns, expected 0 <= start < end <= "
                f"{self.duration_ns}"
            )
        first = int(np.searchsorted(self.t_ns, start_ns, side="right")) - 1
        last = int(np.searchsorted(self.t_ns, end_ns, side="left"))
        t = self.t_ns[first:last].copy()
        t[0] = start_ns
        values = {q: (None if getattr(self, q) is None else getattr(self, q)[first:last])
                  for q in QUANTITIES}
        opp = None
        if self.opportunities_ms is not None:
            lo_ms, hi_ms = start_ns / _NS_PER_MS, end_ns / _NS_PER_MS
            o = self.opportunities_ms
            opp = o[(o >= lo_ms) & (o < hi_ms)] - int(np.ceil(lo_ms))
        return DirectionSeries(t_ns=t - start_ns, duration_ns=end_ns - start_ns,
                               opportunities_ms=opp, **values)

    def loop(self, total_ns: int) -> DirectionSeries:
        """Repeat the series end to end until `total_ns` (cut there), like mahimahi does."""
        if total_ns <= 0:
            raise LinkStateError(f"trace loop total_ns={total_ns}, expected > 0")
        reps = int(-(-int(total_ns) // self.duration_ns))
        offsets = np.arange(reps, dtype=np.int64) * self.duration_ns
        t = (self.t_ns[None, :] + offsets[:, None]).ravel()
        values = {q: (None if getattr(self, q) is None else np.tile(getattr(self, q), reps))
                  for q in QUANTITIES}
        opp = None
        if self.opportunities_ms is not None:
            period_ms = self.duration_ns // _NS_PER_MS
            opp = (self.opportunities_ms[None, :] + (np.arange(reps) * period_ms)[:, None]).ravel()
        looped = DirectionSeries(t_ns=t, duration_ns=reps * self.duration_ns,
                                 opportunities_ms=opp, **values)
        return looped if reps * self.duration_ns == total_ns else looped.slice(0, int(total_ns))

    def states(self, base: LinkState | None = None) -> Iterator[tuple[int, LinkState]]:
        """Yield `(t_ns, LinkState)` at 0 and then only when the state changes.

        Quantities the series lacks come from `base` (required when it has no rate_bps).
        Rates round to whole bit/s and delays to whole microseconds, as LinkState holds them.
        """
        if self.rate_bps is None and base is None:
            raise NetemError(
                f"trace has no rate_bps (it has: {', '.join(self.quantities)}); "
                "pass base=LinkState(rate_bps=...) to supply it"
            )
        base = base if base is not None else LinkState(rate_bps=0)
        n = self.t_ns.size
        cols: dict[str, np.ndarray] = {}
        if self.rate_bps is not None:
            cols["rate_bps"] = np.rint(self.rate_bps).astype(np.int64)
        if self.delay_us is not None:
            cols["delay_us"] = np.rint(self.delay_us).astype(np.int64)
        if self.loss_ratio is not None:
            cols["loss_ratio"] = self.loss_ratio
        changed = np.zeros(n, dtype=bool)
        changed[0] = True
        for arr in cols.values():
            changed[1:] |= arr[1:] != arr[:-1]
        for i in np.flatnonzero(changed):
            fields_now: dict[str, Any] = {}
            for name, arr in cols.items():
                v = arr[i]
                fields_now[name] = float(v) if name == "loss_ratio" else int(v)
            yield int(self.t_ns[i]), replace(base, **fields_now)

    def delivery_opportunities_ms(self) -> np.ndarray:
        """Opportunity instants: the recorded ones, else derived from rate_bps.

        Derived ones fall (rounded up to whole ms) where the cumulative capacity crosses each
        multiple of 1500 bytes, so the long-run rate matches the trace exactly (fractions carry
        over between intervals).
        """
        if self.opportunities_ms is not None:
            return self.opportunities_ms
        rate = self._require("rate_bps")
        edges_s = np.append(self.t_ns, self.duration_ns) / 1e9
        cum_bits = np.concatenate(([0.0], np.cumsum(rate * np.diff(edges_s))))
        n_opp = int(np.floor(cum_bits[-1] / OPPORTUNITY_BITS + 1e-9))
        targets = np.arange(1, n_opp + 1, dtype=np.float64) * OPPORTUNITY_BITS
        # Invert the piecewise-linear cumulative capacity; flat (zero-rate) parts are skipped
        # because searchsorted takes the first interval that reaches each target.
        j = np.clip(np.searchsorted(cum_bits, targets - 1e-6, side="left"), 1, rate.size)
        seg_rate = rate[j - 1]
        t_s = edges_s[j - 1] + np.where(
            seg_rate > 0, (targets - cum_bits[j - 1]) / np.where(seg_rate > 0, seg_rate, 1), 0.0
        )
        # An opportunity exists once its packet's worth of capacity has accrued: round up.
        return np.ceil(t_s * 1000.0 - 1e-6).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Trace:
    """A recorded or synthetic link trace: a DirectionSeries per direction (down, up).

    meta holds provenance (source file, its sha256, format, generator seed); it is not compared.

    >>> tr = Trace(down=DirectionSeries.uniform(100_000_000, rate_bps=[1e6, 2e6]))
    >>> tr.duration_s, [(t, s.rate_bps) for t, s in tr.states("down")]
    (0.2, [(0, 1000000), (100000000, 2000000)])
    """

    down: DirectionSeries | None = None
    up: DirectionSeries | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.down is None and self.up is None:
            raise LinkStateError("trace has no direction, expected down and/or up")

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(d for d in DIRECTIONS if getattr(self, d) is not None)

    def direction(self, name: str) -> DirectionSeries:
        """The series of `name` ('down' or 'up'); error naming what exists otherwise."""
        if name not in DIRECTIONS:
            raise NetemError(f"unknown direction '{name}'; choose: {', '.join(DIRECTIONS)}")
        series = getattr(self, name)
        if series is None:
            raise NetemError(
                f"trace has no '{name}' direction (it has: {', '.join(self.directions)})"
            )
        return series

    @property
    def duration_ns(self) -> int:
        """Longest direction's duration."""
        return max(self.direction(d).duration_ns for d in self.directions)

    @property
    def duration_s(self) -> float:
        return self.duration_ns / 1e9

    def _map(self, fn: Any, **meta: Any) -> Trace:
        new = {d: fn(self.direction(d)) for d in self.directions}
        return Trace(**new, meta={**self.meta, **meta})

    def resample(self, step_ns: int) -> Trace:
        """Every direction on a uniform grid of `step_ns` (time-weighted averages)."""
        return self._map(lambda s: s.resample(step_ns))

    def slice(self, start_ns: int, end_ns: int) -> Trace:
        """The part in [start_ns, end_ns), re-based to start at 0."""
        return self._map(lambda s: s.slice(start_ns, end_ns))

    def loop(self, total_ns: int) -> Trace:
        """Each direction repeated end to end up to `total_ns`."""
        return self._map(lambda s: s.loop(total_ns))

    def states(self, direction: str = "down",
               base: LinkState | None = None) -> Iterator[tuple[int, LinkState]]:
        """`(t_ns, LinkState)` for one direction, only when something changed."""
        return self.direction(direction).states(base)

    def merge(self, other: Trace) -> Trace:
        """Combine quantities from two traces (e.g. a capacity file and a delay file).

        Per direction, the result lives on the union of both grids (exact for piecewise-constant
        data); a quantity present in both is an error rather than a silent choice.
        """
        out: dict[str, DirectionSeries] = {}
        for d in DIRECTIONS:
            a, b = getattr(self, d), getattr(other, d)
            if a is None or b is None:
                if a is not None or b is not None:
                    out[d] = a if a is not None else b  # type: ignore[assignment]
                continue
            both = set(a.quantities) & set(b.quantities)
            if both or (a.opportunities_ms is not None and b.opportunities_ms is not None):
                raise NetemError(
                    f"cannot merge traces: both give {d} "
                    f"{', '.join(sorted(both)) or 'opportunities'}"
                )
            duration = max(a.duration_ns, b.duration_ns)
            grid = np.union1d(a.t_ns, b.t_ns)
            ra, rb = a.on_grid(grid, duration), b.on_grid(grid, duration)
            vals = {q: getattr(ra, q) if getattr(a, q) is not None else getattr(rb, q)
                    for q in QUANTITIES}
            opp = a.opportunities_ms if a.opportunities_ms is not None else b.opportunities_ms
            out[d] = DirectionSeries(t_ns=grid, duration_ns=duration, opportunities_ms=opp, **vals)
        return Trace(**out, meta={"merged": [self.meta, other.meta]})

    def equals(self, other: Trace, rtol: float = 1e-9) -> bool:
        """Same directions, grids and values (floats within `rtol`), meta ignored."""
        if self.directions != other.directions:
            return False
        for d in self.directions:
            a, b = self.direction(d), other.direction(d)
            if a.duration_ns != b.duration_ns or not np.array_equal(a.t_ns, b.t_ns):
                return False
            for q in QUANTITIES:
                va, vb = getattr(a, q), getattr(b, q)
                if (va is None) != (vb is None):
                    return False
                if va is not None and not np.allclose(va, vb, rtol=rtol, atol=1e-9):
                    return False
            oa, ob = a.opportunities_ms, b.opportunities_ms
            if (oa is None) != (ob is None) or (oa is not None and not np.array_equal(oa, ob)):
                return False
        return True
