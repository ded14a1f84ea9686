"""What each agent is told about its node: contact windows from the timeline, and whether
agents start with `up`."""

from __future__ import annotations

from datetime import UTC, datetime

from testbed.lifecycle.session import agents_eager, contact_windows
from testbed.scenario.model import Scenario
from testbed.timeline.model import LinkEvent, Node, Timeline


def _ev(t_s: float, kind: str, sat: str, gs: str = "gs") -> LinkEvent:
    return LinkEvent(t_ns=int(t_s * 1e9), kind=kind, link=f"{sat}--{gs}", link_kind="ground",
                     a=sat, b=gs)


def test_contact_windows_per_satellite_and_station() -> None:
    tl = Timeline("x", datetime(2024, 7, 16, tzinfo=UTC), 100.0, 1.0,
                  [Node("s1", "satellite"), Node("s2", "satellite"), Node("gs", "ground")],
                  [_ev(10, "up", "s1"), _ev(30, "down", "s1"), _ev(30, "up", "s2"),
                   _ev(50, "down", "s2"), _ev(90, "up", "s1")])
    w = contact_windows(tl)
    assert w["s1"] == [{"peer": "gs", "start_s": 10.0, "end_s": 30.0},
                       {"peer": "gs", "start_s": 90.0, "end_s": 100.0}]  # open at the end
    assert w["s2"] == [{"peer": "gs", "start_s": 30.0, "end_s": 50.0}]
    assert [x["peer"] for x in w["gs"]] == ["s1", "s2", "s1"]


def test_agents_start_with_up_up_to_the_auto_limit() -> None:
    base = {"name": "x", "epoch": "2024-07-16T00:00:00Z", "duration_s": 10,
            "constellation": {"walker": {"planes": 1, "per_plane": 1, "altitude_km": 550,
                                         "inclination_deg": 53}}}
    auto = Scenario.model_validate(base)
    assert agents_eager(auto, 100) and not agents_eager(auto, 101)
    lazy = Scenario.model_validate({**base, "nodes": {"agents": "on-demand"}})
    assert not agents_eager(lazy, 3)
    eager = Scenario.model_validate({**base, "nodes": {"agents": "eager"}})
    assert agents_eager(eager, 5000)
