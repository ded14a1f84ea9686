"""The userspace shaper's per-direction engine on a simulated clock (no root, no sockets).

References are computed independently here: serialisation times from the rate, mahimahi's
opportunity rule by hand, binomial bounds for loss.
"""

from __future__ import annotations

import math
import random
from array import array

import pytest

from netem.linkstate import GilbertElliott, LinkState
from netem.shapers.userspace_engine import ETH_HEADER_BYTES, Direction, Histogram
from netem.shapers.userspace_program import StepSeries, TraceProgram

MS = 1_000_000


def frame(ip_bytes: int, tag: int = 0) -> bytes:
    """An Ethernet frame carrying `ip_bytes` of IP packet; the tag makes frames distinguishable."""
    return tag.to_bytes(4, "big") + bytes(ETH_HEADER_BYTES + ip_bytes - 4)


class Sim:
    """Drives one Direction exactly at its requested event times; records (time, tag) sent."""

    def __init__(self, state: LinkState, *, seed: int = 1, queue_limit_bytes: int | None = None):
        self.now = 0
        self.sent: list[tuple[int, int]] = []
        self.d = Direction("x", self._send, state, rng=random.Random(seed),
                           queue_limit_bytes=queue_limit_bytes, early_ns=0)

    def _send(self, data: bytes) -> None:
        self.sent.append((self.now, int.from_bytes(data[:4], "big")))

    def run_until(self, t_ns: int) -> None:
        while (nxt := self.d.next_event_ns()) is not None and nxt <= t_ns:
            self.now = max(self.now, nxt)
            self.d.service(self.now)
        self.now = max(self.now, t_ns)
        self.d.service(self.now)

    def arrive(self, t_ns: int, data: bytes) -> bool:
        self.run_until(t_ns)
        ok = self.d.on_frame(data, t_ns)
        self.d.service(t_ns)
        return ok


def test_rate_serialises_back_to_back_frames() -> None:
    sim = Sim(LinkState(rate_bps=8_000_000, delay_us=5_000))
    for i in range(10):
        sim.arrive(0, frame(1000 - ETH_HEADER_BYTES, i))  # 1000-byte frames: 1 ms each at 8 Mb/s
    sim.run_until(100 * MS)
    assert [tag for _, tag in sim.sent] == list(range(10))
    assert [t for t, _ in sim.sent] == [(k + 1) * MS + 5 * MS for k in range(10)]


def test_rate_zero_holds_frames_until_rate_returns() -> None:
    sim = Sim(LinkState(rate_bps=0))
    sim.arrive(0, frame(986, 1))
    sim.run_until(50 * MS)
    assert sim.sent == []
    sim.d.set_state(LinkState(rate_bps=8_000_000), 50 * MS)
    sim.run_until(100 * MS)
    assert sim.sent == [(51 * MS, 1)]


def test_opportunities_follow_mahimahi_rule() -> None:
    # two opportunities at 1 ms, one at 3 ms, period 3 ms; 1500-byte IP packets use one each
    program = TraceProgram.from_mahimahi_ms([1, 1, 3])
    sim = Sim(LinkState(rate_bps=1))
    sim.d.follow(program, t0_ns=0, now_ns=0)
    for i in range(6):
        sim.arrive(0, frame(1500, i))
    sim.run_until(20 * MS)
    # loop k adds 3 ms: opportunities at 1,1,3 | 4,4,6 | ...
    assert [t for t, _ in sim.sent] == [1 * MS, 1 * MS, 3 * MS, 4 * MS, 4 * MS, 6 * MS]
    assert sim.d.counters.opportunities_used == 6


def test_large_packet_spans_opportunities_and_small_ones_share() -> None:
    program = TraceProgram.from_mahimahi_ms(list(range(1, 11)))
    sim = Sim(LinkState(rate_bps=1))
    sim.d.follow(program, t0_ns=0, now_ns=0)
    sim.arrive(0, frame(3000, 1))  # needs two opportunities: leaves at the 2nd (2 ms)
    sim.arrive(0, frame(700, 2))  # 3 ms opportunity carries both 700-byte packets
    sim.arrive(0, frame(700, 3))
    sim.run_until(10 * MS)
    assert sim.sent == [(2 * MS, 1), (3 * MS, 2), (3 * MS, 3)]


def test_unused_opportunities_are_lost() -> None:
    program = TraceProgram.from_mahimahi_ms(list(range(1, 101)))
    sim = Sim(LinkState(rate_bps=1))
    sim.d.follow(program, t0_ns=0, now_ns=0)
    sim.arrive(50 * MS + 1, frame(1500, 7))
    sim.run_until(100 * MS)
    assert sim.sent == [(51 * MS, 7)]


def test_delay_drop_keeps_order_then_new_delay_holds() -> None:
    sim = Sim(LinkState(rate_bps=1_000_000_000, delay_us=10_000))
    for i in range(40):
        if i == 20:
            sim.d.set_state(LinkState(rate_bps=1_000_000_000, delay_us=2_000), sim.now)
        sim.arrive(i * MS, frame(86, i))
    sim.run_until(200 * MS)
    tags = [tag for _, tag in sim.sent]
    times = dict((tag, t) for t, tag in sim.sent)
    assert tags == list(range(40))  # never reordered
    assert all(b >= a for a, b in zip([t for t, _ in sim.sent], [t for t, _ in sim.sent][1:],
                                      strict=False))
    # frames sent after the drop wait for the last old-delay frame (19 ms + 10 ms = 29 ms) ...
    assert times[20] == times[19]
    # ... and once the backlog has passed (by 29 ms), the new delay holds exactly
    serial_ns = (86 + ETH_HEADER_BYTES) * 8
    for i in range(28, 40):
        assert times[i] == i * MS + serial_ns + 2 * MS


def test_delay_rise_applies_at_once() -> None:
    sim = Sim(LinkState(rate_bps=1_000_000_000, delay_us=2_000))
    sim.arrive(0, frame(86, 0))
    sim.run_until(1 * MS)
    sim.d.set_state(LinkState(rate_bps=1_000_000_000, delay_us=30_000), 1 * MS)
    sim.arrive(1 * MS, frame(86, 1))
    sim.run_until(100 * MS)
    serial_ns = 100 * 8
    assert sim.sent == [(2 * MS + serial_ns, 0), (31 * MS + serial_ns, 1)]


def test_random_loss_within_binomial_bounds() -> None:
    n, p = 20_000, 0.1
    sim = Sim(LinkState(rate_bps=10_000_000_000, loss_ratio=p), seed=7)
    kept = sum(sim.arrive(i * 10_000, frame(86, i)) for i in range(n))
    dropped = n - kept
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(dropped - n * p) < 4 * sigma
    assert sim.d.counters.dropped_loss == dropped


def test_gilbert_elliott_mean_and_burst_length() -> None:
    ge = GilbertElliott(p_enter_bad=0.01, p_exit_bad=0.25)
    n = 100_000
    sim = Sim(LinkState(rate_bps=10_000_000_000, burst_loss=ge), seed=3)
    outcome = []
    for i in range(n):
        before = sim.d.counters.dropped_loss
        sim.arrive(i * 1000, frame(86, 0))
        outcome.append(sim.d.counters.dropped_loss == before)
    lost = outcome.count(False)
    assert sim.d.counters.dropped_queue == 0
    assert abs(lost / n - ge.mean_loss_ratio) < 0.25 * ge.mean_loss_ratio
    bursts = [len(run) for run in "".join("x" if not o else "." for o in outcome).split(".")
              if run]
    mean_burst = sum(bursts) / len(bursts)
    assert 3.0 < mean_burst < 5.0  # 1 / p_exit_bad = 4 packets


def test_queue_limit_in_packets_and_bytes() -> None:
    sim = Sim(LinkState(rate_bps=8_000, queue_limit_packets=10))
    results = [sim.arrive(0, frame(986, i)) for i in range(25)]
    assert results.count(True) == 10 and sim.d.counters.dropped_queue == 15
    sim_b = Sim(LinkState(rate_bps=8_000), queue_limit_bytes=5_000)
    results_b = [sim_b.arrive(0, frame(986, i)) for i in range(25)]
    assert results_b.count(True) == 5  # 1000-byte frames
    assert sim_b.d.queue_bytes == 5_000


def test_queue_delay_counted() -> None:
    sim = Sim(LinkState(rate_bps=8_000_000))
    for i in range(5):
        sim.arrive(0, frame(986, i))
    sim.run_until(50 * MS)
    h = sim.d.counters.queue_delay
    assert h.n == 5 and h.max_ns == 5 * MS
    assert sim.d.counters.forwarded_packets == 5
    assert sim.d.counters.forwarded_bytes == 5_000


def test_delay_series_from_program() -> None:
    delay = StepSeries.constant_bins(10 * MS, [5_000, 20_000])  # 5 ms then 20 ms, period 20 ms
    program = TraceProgram(delay_us=delay, name="d")
    sim = Sim(LinkState(rate_bps=10_000_000_000))
    sim.d.follow(program, t0_ns=0, now_ns=0)
    sim.arrive(1 * MS, frame(86, 1))
    sim.arrive(12 * MS, frame(86, 2))
    sim.arrive(21 * MS, frame(86, 3))  # the series loops: 5 ms again
    sim.run_until(100 * MS)
    got = {tag: t for t, tag in sim.sent}
    assert abs(got[1] - 6 * MS) < 1000
    assert abs(got[2] - 32 * MS) < 1000
    assert abs(got[3] - 32 * MS) < 1000  # 26 ms clamped behind frame 2 (FIFO)


def test_jitter_never_reorders() -> None:
    sim = Sim(LinkState(rate_bps=10_000_000_000, delay_us=10_000, jitter_us=3_000))
    for i in range(500):
        sim.arrive(i * 100_000, frame(86, i))
    sim.run_until(200 * MS)
    assert [tag for _, tag in sim.sent] == list(range(500))


def test_histogram_percentiles() -> None:
    h = Histogram(bucket_ns=10)
    for v in range(1000):
        h.add(v)
    assert h.percentile_ns(0.5) == 500
    assert h.percentile_ns(0.99) == 990
    assert h.summary_us()["max_us"] == pytest.approx(0.999)


def test_rate_steps_become_even_opportunities() -> None:
    # 12 Mbit/s for 1 s then 24 Mbit/s for 1 s: 1000 then 2000 opportunities
    program = TraceProgram.from_rate_steps([0, 10**9], [12e6, 24e6], 2 * 10**9)
    opp = program.opportunities_ns
    assert opp is not None
    first = sum(1 for t in opp if t <= 10**9)
    # an opportunity falls where the cumulative capacity reaches a multiple of 12,000 bits
    assert first == 1000 and len(opp) - first == 2000
    assert opp[0] == 1_000_000 and opp[999] == 10**9 and opp[1000] == 10**9 + 500_000
    assert opp[-1] == 2 * 10**9
    assert program.capacity_bps == pytest.approx(18e6)


def test_step_series_lookup_and_validation() -> None:
    s = StepSeries.from_steps([0, 5, 9], [1, 2, 3], period_ns=10)
    assert [s.at(t) for t in (0, 4, 5, 9, 10, 15, -3)] == [1, 1, 2, 3, 1, 2, 1]
    held = StepSeries.from_steps([0, 5], [1, 2], period_ns=10, loop=False)
    assert held.at(25) == 2
    from netem.errors import NetemError

    with pytest.raises(NetemError, match="strictly increasing"):
        StepSeries.from_steps([0, 5, 5], [1, 2, 3], period_ns=10)
    with pytest.raises(NetemError, match="no delivery opportunities"):
        TraceProgram.from_mahimahi_ms([])
    with pytest.raises(NetemError, match="period_ns=5"):
        TraceProgram(array("q", [0, 10]), period_ns=5)
