"""Contact schedule against a fake clock, and validation of the pushed run context."""

from __future__ import annotations

import threading

import pytest

from nodes.contacts import ContactSchedule
from nodes.context import RunContext
from nodes.errors import ContextError

START_UNIX_S = 1_721_088_000.0


class FakeClock:
    """Wall time that only moves when a wait is asked for (records every wait)."""

    def __init__(self, now_unix_s: float):
        self.now_unix_s = now_unix_s
        self.waits_s: list[float] = []
        self.stop_after_waits: int | None = None

    def now(self) -> float:
        return self.now_unix_s

    def wait(self, stop: threading.Event, timeout_s: float) -> bool:
        self.waits_s.append(timeout_s)
        self.now_unix_s += timeout_s
        if self.stop_after_waits is not None and len(self.waits_s) >= self.stop_after_waits:
            stop.set()
        return stop.is_set()


def context(speed: float = 1.0) -> RunContext:
    return RunContext.from_json({
        "node": "sat1", "peers": {"gs1": "10.0.0.1", "gs2": "10.0.0.2"}, "data_port": 7100,
        "scenario_start_unix_s": START_UNIX_S, "speed": speed,
        "contacts": [{"peer": "gs2", "start_s": 900.0, "end_s": 1200.0},
                     {"peer": "gs1", "start_s": 100.0, "end_s": 400.0}]})


def test_windows_are_sorted_and_mapped_to_wall_time() -> None:
    sched = ContactSchedule(context(speed=10.0))
    assert [w.peer for w in sched.windows] == ["gs1", "gs2"]
    first = sched.windows[0]
    assert first.start_unix_s == pytest.approx(START_UNIX_S + 10.0)
    assert first.end_unix_s == pytest.approx(START_UNIX_S + 40.0)
    assert sched.scenario_s(START_UNIX_S + 5.0) == pytest.approx(50.0)


@pytest.mark.parametrize("t_s,peer,in_contact,next_peer", [
    (0.0, None, False, "gs1"),
    (100.0, None, True, "gs1"),       # start inclusive
    (399.9, "gs1", True, "gs1"),
    (400.0, None, False, "gs2"),      # end exclusive
    (500.0, "gs1", False, None),      # gs1 has no window left
    (1000.0, "gs2", True, "gs2"),
    (1200.0, None, False, None),
])
def test_in_contact_and_next(t_s: float, peer: str | None, in_contact: bool,
                             next_peer: str | None) -> None:
    sched = ContactSchedule(context())
    now = START_UNIX_S + t_s
    assert sched.in_contact(now, peer) is in_contact
    nxt = sched.next_contact(now, peer)
    assert (nxt.peer if nxt else None) == next_peer


def test_wait_for_contact_sleeps_until_the_window_opens() -> None:
    clock = FakeClock(START_UNIX_S + 10.0)
    sched = ContactSchedule(context(speed=2.0), now_unix_s=clock.now, wait=clock.wait,
                            max_sleep_s=20.0)
    window = sched.wait_for_contact(threading.Event(), peer="gs2")
    assert window is not None and window.peer == "gs2"
    # gs2 opens at scenario 900 s = wall start + 450 s; from +10 s that is 440 s of waiting
    assert sum(clock.waits_s) == pytest.approx(440.0)
    assert max(clock.waits_s) <= 20.0
    assert sched.in_contact(clock.now(), "gs2")


def test_wait_for_contact_returns_at_once_inside_a_window() -> None:
    clock = FakeClock(START_UNIX_S + 150.0)
    sched = ContactSchedule(context(), now_unix_s=clock.now, wait=clock.wait)
    assert sched.wait_for_contact(threading.Event()).peer == "gs1"  # type: ignore[union-attr]
    assert clock.waits_s == []


def test_wait_for_contact_stops_and_ends() -> None:
    clock = FakeClock(START_UNIX_S)
    clock.stop_after_waits = 3
    sched = ContactSchedule(context(), now_unix_s=clock.now, wait=clock.wait, max_sleep_s=1.0)
    assert sched.wait_for_contact(threading.Event(), "gs1") is None
    assert len(clock.waits_s) == 3
    late = FakeClock(START_UNIX_S + 5000.0)
    sched = ContactSchedule(context(), now_unix_s=late.now, wait=late.wait)
    assert sched.wait_for_contact(threading.Event()) is None and late.waits_s == []


@pytest.mark.parametrize("doc,match", [
    ([], "expected a JSON object"),
    ({"peers": {}}, "node=None"),
    ({"node": "s", "peers": {"gs": "not-an-ip"}}, r"peers\['gs'\]='not-an-ip'"),
    ({"node": "s", "data_port": 0}, "data_port=0"),
    ({"node": "s", "speed": -1}, "speed=-1.0"),
    ({"node": "s", "scenario_start_unix_s": "now"}, "scenario_start_unix_s='now'"),
    ({"node": "s", "contacts": [{"peer": "g", "start_s": 5, "end_s": 5}]},
     r"contacts\[0\]: start_s=5.0, end_s=5.0, expected end_s > start_s"),
    ({"node": "s", "contacts": [{"peer": "g", "start_s": 1}]}, r"contacts\[0\]="),
    ({"node": "s", "speeed": 2}, "unknown field.*speeed"),
])
def test_bad_context_is_named(doc: object, match: str) -> None:
    with pytest.raises(ContextError, match=match):
        RunContext.from_json(doc)


def test_context_round_trip() -> None:
    ctx = context()
    assert RunContext.from_json(ctx.to_json()) == ctx
