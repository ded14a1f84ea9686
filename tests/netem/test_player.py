"""LinkPlayer: instants, records, speed, stop, bounded waiting — on a fake clock (exact) and on
the real monotonic clock (lateness and CPU use measured)."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Mapping

import pytest

from netem.errors import LinkStateError, NetemError
from netem.linkstate import GilbertElliott, LinkState
from netem.player import (
    AppliedChange,
    LinkPlayer,
    MonotonicClock,
    merge_timelines,
    schedule_from_trace,
)
from netem.shapers.base import Shaper

MS = 1_000_000


class FakeClock:
    """Time moves only when slept (or by `read_step_ns` per reading); sleeps are recorded."""

    def __init__(self, start_ns: int = 1_000_000_000, read_step_ns: int = 0) -> None:
        self.t = start_ns
        self.read_step_ns = read_step_ns
        self.sleeps: list[int] = []
        self.reads = 0

    def now_ns(self) -> int:
        self.reads += 1
        self.t += self.read_step_ns
        return self.t

    def sleep_ns(self, duration_ns: int) -> None:
        self.sleeps.append(duration_ns)
        self.t += max(0, duration_ns)


class FakeShaper(Shaper):
    """Records each apply_many with the clock time; applying costs `cost_ns` of clock time."""

    def __init__(self, clock, initial: Mapping[str, LinkState], cost_ns: int = 0,
                 fail_on_call: int | None = None) -> None:
        self.clock = clock
        self.states = dict(initial)
        self.cost_ns = cost_ns
        self.calls: list[tuple[int, dict[str, LinkState]]] = []
        self.fail_on_call = fail_on_call

    def apply_many(self, changes: Mapping[str, LinkState]) -> None:
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise NetemError("kernel said no")
        self.calls.append((self.clock.now_ns(), dict(changes)))
        if self.cost_ns and isinstance(self.clock, FakeClock):
            self.clock.t += self.cost_ns
        self.states.update(changes)

    def current(self, direction: str) -> LinkState:
        return self.states[direction]

    def close(self) -> None:
        pass


def test_changes_land_at_their_instants_with_records():
    clock = FakeClock()
    shaper = FakeShaper(clock, {"a": LinkState(10_000_000)}, cost_ns=300_000)
    schedule = [(0, {"a": LinkState(10_000_000)}),  # no change: not applied, not recorded
                (5 * MS, {"a": LinkState(5_000_000)}),
                (12 * MS, {"a": LinkState(5_000_000, queue_limit_packets=20)})]
    start = clock.t
    records = LinkPlayer(shaper, schedule, clock).run(start_ns=start)
    assert [t for t, _ in shaper.calls] == [start + 5 * MS, start + 12 * MS]
    assert records == [
        AppliedChange("a", 5 * MS, start + 5 * MS, start + 5 * MS, start + 5 * MS + 300_000,
                      {"rate_bps": 5_000_000}),
        AppliedChange("a", 12 * MS, start + 12 * MS, start + 12 * MS, start + 12 * MS + 300_000,
                      {"queue_limit_packets": 20}),
    ]
    assert records[0].lateness_ns == 300_000


def test_sleeps_are_bounded_then_spins_briefly():
    clock = FakeClock(read_step_ns=1_000)  # each clock reading costs 1 µs
    shaper = FakeShaper(clock, {"a": LinkState(1_000_000)})
    player = LinkPlayer(shaper, [(100 * MS, {"a": LinkState(2_000_000)})], clock,
                        spin_ns=200_000, max_sleep_ns=20 * MS)
    start = clock.t
    player.run(start_ns=start)
    assert max(clock.sleeps) <= 20 * MS  # slices, so stop() is honoured quickly
    assert sum(clock.sleeps) >= 100 * MS - 200_000 - 10 * 1_000  # slept almost all the way
    applied_at = shaper.calls[0][0]
    assert start + 100 * MS <= applied_at <= start + 100 * MS + 2_000  # spun to the instant
    assert clock.reads < 300  # spinning read the clock ~200 times (200 µs at 1 µs), no more


def test_speed_factor_compresses_scenario_time():
    clock = FakeClock()
    shaper = FakeShaper(clock, {"a": LinkState(1_000_000)})
    start = clock.t
    LinkPlayer(shaper, [(10_000 * MS, {"a": LinkState(2_000_000)})], clock, speed=4.0).run(start)
    assert shaper.calls[0][0] == start + 2_500 * MS
    with pytest.raises(NetemError, match="speed=0"):
        LinkPlayer(shaper, [], clock, speed=0)


def test_directions_at_one_instant_go_in_one_batch_and_only_changed_ones():
    clock = FakeClock()
    shaper = FakeShaper(clock, {"a": LinkState(1_000_000), "b": LinkState(1_000_000),
                                "c": LinkState(1_000_000)})
    timelines = {
        "a": [(0, LinkState(1_000_000)), (MS, LinkState(3_000_000))],
        "b": [(MS, LinkState(4_000_000))],
        "c": [(MS, LinkState(1_000_000)), (2 * MS, LinkState(1_000_000, delay_us=10))],
    }
    records = LinkPlayer(shaper, merge_timelines(timelines), clock).run()
    assert [sorted(c) for _, c in shaper.calls] == [["a", "b"], ["c"]]
    assert [(r.direction, r.changed) for r in records] == [
        ("a", {"rate_bps": 3_000_000}), ("b", {"rate_bps": 4_000_000}), ("c", {"delay_us": 10})]


def test_backwards_schedule_is_an_error_naming_the_entry():
    clock = FakeClock()
    shaper = FakeShaper(clock, {"a": LinkState(1_000_000)})
    schedule = [(0, {"a": LinkState(2_000_000)}), (5 * MS, {"a": LinkState(3_000_000)}),
                (4 * MS, {"a": LinkState(4_000_000)})]
    player = LinkPlayer(shaper, schedule, clock)
    with pytest.raises(LinkStateError, match=r"entry 2: t_ns=4000000 is before the previous"):
        player.run()
    assert len(player.records) == 2  # what was applied stays recorded


def test_shaper_error_stops_play_and_keeps_records():
    clock = FakeClock()
    shaper = FakeShaper(clock, {"a": LinkState(1_000_000)}, fail_on_call=1)
    player = LinkPlayer(shaper, [(0, {"a": LinkState(2_000_000)}),
                                 (MS, {"a": LinkState(3_000_000)})], clock)
    with pytest.raises(NetemError, match="kernel said no"):
        player.run()
    assert [r.changed for r in player.records] == [{"rate_bps": 2_000_000}]
    with pytest.raises(NetemError, match="runs once"):
        player.run()


def test_until_and_records_are_json_ready():
    clock = FakeClock()
    ge = GilbertElliott(0.01, 0.2)
    shaper = FakeShaper(clock, {"a": LinkState(1_000_000)})
    schedule = [(MS, {"a": LinkState(1_000_000, burst_loss=ge)}),
                (9 * MS, {"a": LinkState(9_000_000)})]
    records = LinkPlayer(shaper, schedule, clock).run(until_t_ns=5 * MS)
    assert len(records) == 1
    row = json.loads(json.dumps(records[0].to_dict()))
    assert row["changed"] == {"burst_loss": {"p_enter_bad": 0.01, "p_exit_bad": 0.2,
                                             "loss_in_bad": 1.0, "loss_in_good": 0.0}}
    assert row["lateness_ns"] == 0 and row["scenario_t_ns"] == MS


def test_schedule_from_a_real_trace_object():
    from netem.traces import DirectionSeries, Trace

    trace = Trace(down=DirectionSeries.uniform(100 * MS, rate_bps=[1e6, 1e6, 2e6]),
                  up=DirectionSeries.uniform(150 * MS, rate_bps=[5e5, 7e5]))
    schedule = list(schedule_from_trace(trace, {"gs/down": "down", "gs/up": "up"}))
    assert [(t, {k: s.rate_bps for k, s in states.items()}) for t, states in schedule] == [
        (0, {"gs/down": 1_000_000, "gs/up": 500_000}),
        (150 * MS, {"gs/up": 700_000}),
        (200 * MS, {"gs/down": 2_000_000}),
    ]


def test_stop_from_another_thread_returns_promptly():
    clock = MonotonicClock()
    shaper = FakeShaper(clock, {"a": LinkState(1_000_000)})
    player = LinkPlayer(shaper, [(10_000 * MS, {"a": LinkState(2_000_000)})], clock)
    timer = threading.Timer(0.05, player.stop)
    t0 = time.monotonic()
    timer.start()
    try:
        records = player.run()
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 0.5 and records == []


def test_real_clock_lateness_and_no_busy_waiting():
    """20 changes 15 ms apart on time.monotonic_ns: small lateness, little CPU."""
    clock = MonotonicClock()
    shaper = FakeShaper(clock, {"a": LinkState(1_000_000)})
    schedule = [((i + 1) * 15 * MS, {"a": LinkState(1_000_000 + i + 1)}) for i in range(20)]
    cpu0, wall0 = time.thread_time(), time.monotonic()
    records = LinkPlayer(shaper, schedule, clock).run()
    cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
    lateness_us = sorted(r.lateness_ns / 1e3 for r in records)
    assert len(records) == 20 and min(r.applied_ns - r.scheduled_ns for r in records) >= 0
    assert statistics.median(lateness_us) < 1_000, lateness_us  # generous: 2 shared cores
    assert cpu < 0.25 * wall, f"player used {cpu:.3f} s CPU in {wall:.3f} s"
