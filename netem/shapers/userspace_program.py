"""What a direction of the userspace shaper replays by itself: delivery opportunities and
step series of delay and loss, all as offsets from the trace's start, looping with a period.

Owns the value model and its validation only; the worker (userspace_engine) plays it, and trace
files are parsed elsewhere (netem.traces). Offsets are integer nanoseconds so the worker does no
float arithmetic per packet; arrays are `array('q')` to keep a 120 s trace at ~4 MB.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netem.errors import NetemError

if TYPE_CHECKING:
    from netem.traces.model import DirectionSeries

OPPORTUNITY_BYTES = 1500
"""Bytes one mahimahi delivery opportunity lets through (IP bytes, as mahimahi counts on TUN)."""


@dataclass(frozen=True)
class StepSeries:
    """A piecewise-constant series: values[i] holds from t_ns[i] until t_ns[i+1].

    t_ns are offsets from the trace start, strictly increasing, starting at 0; the last value
    holds until period_ns, after which the series repeats (loop) or keeps its last value.
    """

    t_ns: array
    values: array
    period_ns: int
    loop: bool = True

    def __post_init__(self) -> None:
        n = len(self.t_ns)
        if n == 0 or n != len(self.values):
            raise NetemError(
                f"step series: {n} times and {len(self.values)} values, expected the same "
                "non-zero count"
            )
        if self.t_ns[0] != 0:
            raise NetemError(f"step series: first t_ns={self.t_ns[0]}, expected 0")
        if any(b <= a for a, b in zip(self.t_ns, self.t_ns[1:], strict=False)):
            raise NetemError("step series: t_ns not strictly increasing")
        if self.period_ns <= self.t_ns[-1]:
            raise NetemError(
                f"step series: period_ns={self.period_ns}, expected > last t_ns={self.t_ns[-1]}"
            )

    @classmethod
    def from_steps(
        cls, t_ns: Sequence[int], values: Sequence[float], period_ns: int, *, loop: bool = True,
        typecode: str = "q",
    ) -> StepSeries:
        """Build from plain sequences (ints for delays in us, floats for ratios: typecode 'd')."""
        times = array("q", (int(t) for t in t_ns))
        return cls(times, array(typecode, values), int(period_ns), loop)

    @classmethod
    def constant_bins(
        cls, bin_ns: int, values: Sequence[float], *, loop: bool = True, typecode: str = "q"
    ) -> StepSeries:
        """One value per fixed-width bin (e.g. LeoReplayer's 10 ms delay bins)."""
        if bin_ns <= 0:
            raise NetemError(f"step series: bin_ns={bin_ns}, expected > 0")
        t = range(0, bin_ns * len(values), bin_ns)
        return cls(array("q", t), array(typecode, values), bin_ns * len(values), loop)

    def at(self, offset_ns: int) -> Any:
        """The value at `offset_ns` after the start (before the start: the first value)."""
        if offset_ns < 0:
            return self.values[0]
        if offset_ns >= self.period_ns:
            if not self.loop:
                return self.values[-1]
            offset_ns %= self.period_ns
        return self.values[bisect_right(self.t_ns, offset_ns) - 1]


@dataclass(frozen=True)
class TraceProgram:
    """What one direction follows: capacity as delivery opportunities, optional delay and loss.

    opportunities_ns: sorted offsets, each lets OPPORTUNITY_BYTES through; they repeat every
    period_ns (mahimahi: period = the last timestamp). None keeps the LinkState rate.
    delay_us / loss_ratio: step series overriding the LinkState's delay_us / loss_ratio.
    """

    opportunities_ns: array | None = None
    period_ns: int = 0
    delay_us: StepSeries | None = None
    loss_ratio: StepSeries | None = None
    name: str = "trace"

    def __post_init__(self) -> None:
        opp = self.opportunities_ns
        if opp is not None:
            if len(opp) == 0:
                raise NetemError(f"trace {self.name}: no delivery opportunities")
            if opp[0] < 0 or any(b < a for a, b in zip(opp, opp[1:], strict=False)):
                raise NetemError(f"trace {self.name}: opportunity times not sorted and >= 0")
            if self.period_ns <= 0 or self.period_ns < opp[-1]:
                raise NetemError(
                    f"trace {self.name}: period_ns={self.period_ns}, expected > 0 and >= the "
                    f"last opportunity {opp[-1]}"
                )

    @classmethod
    def from_mahimahi_ms(
        cls, opportunities_ms: Sequence[int], *, delay_us: StepSeries | None = None,
        loss_ratio: StepSeries | None = None, name: str = "trace",
    ) -> TraceProgram:
        """Mahimahi semantics: one 1500-byte opportunity per entry, looping at the last ms."""
        opp = array("q", (int(ms) * 1_000_000 for ms in opportunities_ms))
        period_ns = opp[-1] if len(opp) else 0
        if period_ns == 0 and len(opp):
            period_ns = 1_000_000  # a trace whose every opportunity is at ms 0 loops each ms
        return cls(opp, period_ns, delay_us, loss_ratio, name)

    @classmethod
    def from_rate_steps(
        cls, t_ns: Sequence[int], rate_bps: Sequence[float], period_ns: int, *,
        delay_us: StepSeries | None = None, loss_ratio: StepSeries | None = None,
        name: str = "trace",
    ) -> TraceProgram:
        """Turn a piecewise-constant rate into evenly spaced 1500-byte opportunities."""
        bits = OPPORTUNITY_BYTES * 8
        ends = [*list(t_ns[1:]), period_ns]
        opp = array("q")
        sent_bits = 0.0  # cumulative capacity; an opportunity at every multiple of `bits`
        for start, end, rate in zip(t_ns, ends, rate_bps, strict=True):
            if rate < 0 or math.isnan(rate):
                raise NetemError(f"trace {name}: rate_bps={rate} at t_ns={start}, expected >= 0")
            if rate > 0:
                k = math.floor(sent_bits / bits) + 1
                while (t := start + (k * bits - sent_bits) / rate * 1e9) <= end:
                    opp.append(int(t))
                    k += 1
                sent_bits += rate * (end - start) / 1e9
        if not opp:
            raise NetemError(f"trace {name}: rate is 0 throughout, nothing could be delivered")
        return cls(opp, int(period_ns), delay_us, loss_ratio, name)

    @classmethod
    def from_series(
        cls, capacity: DirectionSeries | None, *, delay: DirectionSeries | None = None,
        loss: DirectionSeries | None = None, name: str = "trace",
    ) -> TraceProgram:
        """From netem.traces series: capacity from `capacity`'s recorded opportunities (exact)
        or its rate_bps (turned into opportunities); delay_us / loss_ratio from `delay` /
        `loss` (default: the same series, when it records them). Each part loops with its own
        series' duration. A series without the quantity contributes nothing."""
        import numpy as np

        opp = None
        period_ns = 0
        if capacity is not None and (
            capacity.opportunities_ms is not None or capacity.rate_bps is not None
        ):
            opp_ms = capacity.delivery_opportunities_ms()
            if opp_ms.size == 0:
                raise NetemError(f"trace {name}: no delivery opportunities")
            opp = array("q")
            opp.frombytes((np.asarray(opp_ms, dtype=np.int64) * 1_000_000).astype("=i8")
                          .tobytes())
            period_ns = max(int(capacity.duration_ns), opp[-1], 1_000_000)
        delay = delay if delay is not None else capacity
        loss = loss if loss is not None else capacity
        delay_steps = loss_steps = None
        if delay is not None and delay.delay_us is not None:
            delay_steps = StepSeries.from_steps(
                delay.t_ns.tolist(), np.rint(delay.delay_us).astype(np.int64).tolist(),
                delay.duration_ns)
        if loss is not None and loss.loss_ratio is not None:
            loss_steps = StepSeries.from_steps(loss.t_ns.tolist(), loss.loss_ratio.tolist(),
                                               loss.duration_ns, typecode="d")
        return cls(opp, period_ns, delay_steps, loss_steps, name)

    @property
    def capacity_bps(self) -> float:
        """Mean capacity over one period."""
        if self.opportunities_ns is None:
            return math.nan
        return len(self.opportunities_ns) * OPPORTUNITY_BYTES * 8 / (self.period_ns / 1e9)
