"""The run clock on netem's player loop: instants grouped, applied at their wall instants
(speed-scaled), recorded with lateness; observers told each instant; stop() ends it early."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from netem.errors import LinkStateError
from netem.player import play_instants
from testbed.lifecycle.clock import AppliedInstant, RunClock
from testbed.lifecycle.observers import Observers, RunObserver
from testbed.timeline.model import LinkEvent


class FakeClock:
    """Time moves only when slept: lateness is exactly what apply() costs."""

    def __init__(self) -> None:
        self.t_ns = 0

    def now_ns(self) -> int:
        return self.t_ns

    def sleep_ns(self, duration_ns: int) -> None:
        self.t_ns += max(0, duration_ns)


def _event(t_s: float, kind: str = "update", link: str = "a--b") -> LinkEvent:
    a, b = link.split("--")
    return LinkEvent(t_ns=int(t_s * 1e9), kind=kind, link=link, a=a, b=b, link_kind="isl",
                     delay_us=1000, rate_bps=10_000_000)


def test_instants_are_grouped_scaled_by_speed_and_recorded(tmp_path: Path) -> None:
    clock = FakeClock()
    seen: list[tuple[int, int, int]] = []

    def apply(batch, due_ns):  # noqa: ANN001
        seen.append((batch[0].t_ns, due_ns, len(batch)))
        clock.t_ns += 3_000  # what applying costs: the lateness recorded
        return {}

    events = [_event(0), _event(1), _event(1, link="b--c"), _event(4)]
    record = tmp_path / "events-applied.jsonl"
    rc = RunClock(events, apply, clock, speed=2.0, record_path=record)
    out = rc.run(start_ns=1_000_000, until_t_ns=int(10e9))
    assert [(t, due, n) for t, due, n in seen] == [
        (0, 1_000_000, 1), (int(1e9), 1_000_000 + int(0.5e9), 2),
        (int(4e9), 1_000_000 + int(2e9), 1)]
    assert [r.lateness_ns for r in out] == [3_000, 3_000, 3_000]
    assert rc.scenario_now_ns == int(10e9)  # held until the scenario's end
    assert clock.t_ns >= 1_000_000 + int(5e9)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [line["events"] for line in lines] == [1, 2, 1]
    assert all(line["lateness_ns"] == 3_000 for line in lines)


def test_events_past_the_end_are_not_applied() -> None:
    clock = FakeClock()
    applied: list[int] = []
    rc = RunClock([_event(1), _event(20)], lambda b, d: applied.append(b[0].t_ns) or {},
                  clock)
    rc.run(start_ns=0, until_t_ns=int(5e9))
    assert applied == [int(1e9)]


def test_stop_ends_the_run_early() -> None:
    clock = FakeClock()
    rc = RunClock([_event(0), _event(1), _event(2)], lambda b, d: rc.stop() or {}, clock)
    out = rc.run(start_ns=0, until_t_ns=int(5e9))
    assert len(out) == 1
    assert rc.scenario_now_ns == 0


def test_player_loop_refuses_times_going_backwards() -> None:
    with pytest.raises(LinkStateError, match="before the previous"):
        play_instants([(5, "a"), (3, "b")], lambda t, d, x: None, FakeClock(), 0,
                      threading.Event())


def test_observers_are_told_each_instant_and_a_failing_one_is_reported() -> None:
    told: list[int] = []
    reports: list[str] = []

    class Counting(RunObserver):
        def on_instant(self, rec: AppliedInstant) -> None:
            told.append(rec.scenario_t_ns)

    class Broken(RunObserver):
        def on_instant(self, rec: AppliedInstant) -> None:
            raise ValueError("disk full")

    obs = Observers([Broken(), Counting()], reports.append)
    RunClock([_event(0), _event(1)], lambda b, d: {}, FakeClock()).run(
        0, int(2e9), obs.on_instant)
    assert told == [0, int(1e9)]
    assert len(reports) == 1 and "Broken.on_instant failed: ValueError: disk full" in reports[0]
    assert obs.failures == {"Broken.on_instant": 2}
