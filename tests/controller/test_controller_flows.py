"""Flow diffing, cookies and make-before-break ordering (pure logic, no switch)."""

from __future__ import annotations

import pytest

from controller.flows import (
    MISS_KEY,
    FlowEntry,
    FlowKey,
    cookie_for,
    desired_flows,
    diff_flows,
    generation_of,
    plan_rounds,
    route_key,
)
from controller.routing import NextHop


def test_cookie_carries_the_generation_and_our_tag() -> None:
    assert generation_of(cookie_for(7)) == 7
    assert generation_of(cookie_for(0xFFFFFFFF)) == 0xFFFFFFFF
    assert generation_of(0x1234) is None
    assert cookie_for(1) != cookie_for(2)


def test_desired_flows_have_a_table_miss_and_one_route_per_destination() -> None:
    routes = {1: {"10.0.0.1": NextHop(1, None, 0, 0.0), "10.0.0.2": NextHop(11, 2, 1, 5.0)}}
    plan = desired_flows(routes)[1]
    assert plan.flows == {MISS_KEY: None, route_key("10.0.0.1"): 1, route_key("10.0.0.2"): 11}
    assert plan.next_dpid == {MISS_KEY: None, route_key("10.0.0.1"): None, route_key("10.0.0.2"): 2}


def test_diff_keeps_right_flows_replaces_changed_and_removes_stale() -> None:
    a, b, c = route_key("10.0.0.1"), route_key("10.0.0.2"), route_key("10.0.0.3")
    foreign = FlowKey(0, 50, (("in_port", 3),))
    installed = {
        MISS_KEY: FlowEntry(MISS_KEY, None, cookie_for(1)),
        a: FlowEntry(a, 1, cookie_for(1)),
        b: FlowEntry(b, 11, cookie_for(1)),
        c: FlowEntry(c, 12, cookie_for(2)),
        foreign: FlowEntry(foreign, 2, 0xABC),
    }
    desired = {MISS_KEY: None, a: 1, b: 13}
    diff = diff_flows(desired, installed)
    assert diff.kept == 2  # table-miss and a: left alone, whatever their cookie
    assert diff.install == [(b, 13)]  # replaced in place by an ADD, never deleted
    assert {e.key for e in diff.remove} == {c, foreign}
    assert not diff.empty
    assert diff_flows(desired, {k: FlowEntry(k, v, 5) for k, v in desired.items()}).empty


def test_a_flow_with_other_instructions_is_never_equal() -> None:
    a = route_key("10.0.0.1")
    odd = FlowEntry(a, None, cookie_for(1), simple=False)
    assert diff_flows({a: None}, {a: odd}).install == [(a, None)]


def test_rounds_follow_changed_flows_from_the_destination_side() -> None:
    """Line 1 - 2 - 3 - 4 - 5, destination a behind 5, destination b behind 1."""
    a, b = route_key("10.0.0.1"), route_key("10.0.0.2")
    nxt = {
        **{(d, a): (d + 1 if d < 5 else None) for d in range(1, 6)},
        **{(d, b): (d - 1 if d > 1 else None) for d in range(1, 6)},
        (1, MISS_KEY): None,
    }
    installs = {
        1: [(a, 11), (MISS_KEY, None)],  # toward a: 1 -> 2 -> 3 -> 4 -> 5, 4 changed too
        4: [(a, 14), (b, 13)],  # toward b: 4 -> 3 -> 2 -> 1, 2 changed too
        2: [(b, 12)],  # toward b: nothing changed after it
        5: [(b, 15)],  # toward b: 4 and 2 after it changed
    }
    rounds = plan_rounds(installs, lambda dpid, key: nxt[(dpid, key)])
    assert rounds == [
        {1: [(MISS_KEY, None)], 4: [(a, 14)], 2: [(b, 12)]},
        {1: [(a, 11)], 4: [(b, 13)]},
        {5: [(b, 15)]},
    ]
    assert plan_rounds({}, lambda d, k: None) == []


def test_rounds_refuse_looping_next_hops() -> None:
    a = route_key("10.0.0.1")
    with pytest.raises(ValueError, match="loop"):
        plan_rounds({1: [(a, 2)]}, lambda dpid, key: 2 if dpid == 1 else 1)
