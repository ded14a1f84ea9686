"""Benchmark: how many link changes per second the run clock sustains with p99 lateness <= 2 ms.

A real 27-satellite network (namespaces, OVS, os-ken, userspace shaper) is brought up once;
then synthetic timelines are played through `Network.apply_events` at increasing rates: an
instant every 5 ms, each changing k ISLs (delay and rate updates), and every 20th instant also
flipping one ISL down and back up (a topology change: routes recomputed and installed by the
controller, off the clock's thread). The clock runs as `testbed run` runs it (SCHED_FIFO
priority CLOCK_RT_PRIORITY). Lateness is the clock's own record: applied (shaper changes done)
minus scheduled. Target (issue 4): report the highest rate with p99 <= 2 ms.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from netem.player import MonotonicClock
from testbed.ledger import Ledger, teardown
from testbed.lifecycle.clock import RunClock
from testbed.lifecycle.network import Network
from testbed.lifecycle.session import CLOCK_RT_PRIORITY, prepare
from testbed.sysrun import Runner
from testbed.timeline.model import LinkEvent
from tests.testbed.lifecycle.conftest import SMALL

pytestmark = [pytest.mark.bench, pytest.mark.root, pytest.mark.ovs, pytest.mark.slow]

TARGET_P99_MS = 2.0
INSTANT_EVERY_MS = 5
PLAY_S = 3.0
LINKS_PER_INSTANT = [1, 4, 16, 48]


def synthetic_events(isls: list[str], k: int, start_t_ns: int) -> list[LinkEvent]:
    """Instants every 5 ms for PLAY_S seconds: k ISL updates each, a down/up flip every 20th."""
    events: list[LinkEvent] = []
    step_ns = INSTANT_EVERY_MS * 1_000_000
    flip = isls[-1]
    for i in range(int(PLAY_S * 1000 / INSTANT_EVERY_MS)):
        t = start_t_ns + i * step_ns
        for j in range(k):
            name = isls[(i * k + j) % (len(isls) - 1)]
            a, b = name.split("--")
            events.append(LinkEvent(t, "update", name, "isl", a, b,
                                    delay_us=15_000 + 10 * (i % 7), rate_bps=50_000_000 - i % 3))
        if i % 20 == 10:
            a, b = flip.split("--")
            up = (i // 20) % 2 == 1
            events.append(LinkEvent(t, "up" if up else "down", flip, "isl", a, b,
                                    delay_us=15_000 if up else None,
                                    rate_bps=50_000_000 if up else None))
    return events


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.mark.timeout(900)
def test_bench_clock_link_changes_per_second(tmp_path: Path, unique_prefix: str) -> None:
    path = tmp_path / "clock.yaml"
    path.write_text(SMALL.format(name=f"clk-{unique_prefix}", duration=3600, speed=1.0, isl="",
                                 agents="on-demand",
                                 out=tmp_path / "runs"))
    prep = prepare(path)
    rows = []
    with Ledger(prep.run_dir.ledger) as ledger:
        net = None
        try:
            net = Network.up(prep.scenario, prep.timeline, prep.run_dir, Runner(), ledger)
            net.start_clock(time.monotonic_ns())
            net.apply_events([e for e in prep.timeline.events if e.t_ns == 0])  # links at t=0
            isls = [n for n, r in net.book.records.items() if r.kind == "isl" and r.up]
            t0_s = 10.0  # scenario time of the synthetic instants (after the real start)
            for k in LINKS_PER_INSTANT:
                events = synthetic_events(isls, k, int(t0_s * 1e9))
                clock = RunClock(events, net.apply_events, MonotonicClock(),
                                 rt_priority=CLOCK_RT_PRIORITY)
                start_ns = time.monotonic_ns() + 200_000_000 - int(t0_s * 1e9)
                applied = clock.run(start_ns, int((t0_s + PLAY_S) * 1e9))
                assert net.pusher.drain(30)
                late = [a.lateness_ns / 1e6 for a in applied]
                rate = len(events) / PLAY_S
                rows.append((k, rate, statistics.median(late), percentile(late, 0.99),
                             max(late)))
            routes = net.pusher.summary()
        finally:
            try:
                if net is not None:
                    net.stop_processes()
            finally:
                report = teardown(ledger, Runner())
    assert report.ok, report.summary()
    assert not routes["errors"], routes["errors"]
    print(f"\nrun clock on a live 27-satellite network: an instant every {INSTANT_EVERY_MS} ms, "
          f"{PLAY_S:.0f} s per row; target p99 <= {TARGET_P99_MS} ms")
    print("| ISLs changed per instant | link changes/s | lateness p50 ms | p99 ms | max ms | met |")
    print("|---|---|---|---|---|---|")
    for k, rate, p50, p99, mx in rows:
        print(f"| {k} | {rate:.0f} | {p50:.3f} | {p99:.3f} | {mx:.2f} | "
              f"{'yes' if p99 <= TARGET_P99_MS else 'NO'} |")
    best = max((rate for _, rate, _, p99, _ in rows if p99 <= TARGET_P99_MS), default=0.0)
    inst = routes["install_ms"] or {}
    print(f"highest rate with p99 <= {TARGET_P99_MS} ms: {best:.0f} link changes/s; "
          f"route changes {routes['submitted']} ({routes['superseded']} superseded), "
          f"in effect p50 {inst.get('p50', float('nan')):.1f} / p99 "
          f"{inst.get('p99', float('nan')):.1f} ms after their instant")
    assert rows[0][3] <= TARGET_P99_MS * 5, "even the slowest rate is far behind"
