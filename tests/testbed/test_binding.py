"""Pool binding of boards to satellites: hand-worked cases, then invariants on real contacts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from testbed.binding import (
    BindingError,
    Rebinding,
    Unserved,
    bind_pool,
    demand_from_contacts,
    demand_from_timeline,
    merge_intervals,
)
from testbed.orbit import GroundStation, contact_windows, walker_delta
from testbed.timeline.model import LinkEvent, Node, Timeline, link_id

S = 1_000_000_000


def test_merge_intervals_joins_overlaps_and_touching() -> None:
    assert merge_intervals([(5, 9), (0, 3), (3, 4), (8, 12), (20, 20)]) == [(0, 4), (5, 12)]
    with pytest.raises(BindingError, match=r"satellite s1: interval \[5, 2\) ns"):
        merge_intervals([(5, 2)], what="satellite s1: ")


def test_two_boards_three_satellites_worked_by_hand() -> None:
    demand = {
        "s1": [(0, 10 * S)],
        "s2": [(2 * S, 6 * S)],
        "s3": [(3 * S, 8 * S)],  # both boards busy at 3 s: waits until s2 ends at 6 s
    }
    plan = bind_pool(["j1", "j2"], demand)
    assert plan.rebindings == [
        Rebinding(0, "j1", None, "s1"),
        Rebinding(2 * S, "j2", None, "s2"),
        Rebinding(6 * S, "j2", "s2", "s3"),  # released and retaken at one instant: one record
        Rebinding(8 * S, "j2", "s3", None),
        Rebinding(10 * S, "j1", "s1", None),
    ]
    assert plan.unserved == [Unserved(3 * S, "s3")]
    assert plan.at(4 * S) == {"j1": "s1", "j2": "s2"}
    assert plan.board_of("s3", 7 * S) == "j2"
    assert plan.board_of("s3", 4 * S) is None
    assert plan.at(11 * S) == {}
    assert plan.to_records()[2] == {"t_ns": 6 * S, "board": "j2", "from_satellite": "s2",
                                    "to_satellite": "s3"}


def test_earlier_demand_first_then_name_and_sticky_board() -> None:
    # s2 and s1 start together: s1 (name order) takes j1. Later s2 returns to its own board.
    demand = {"s2": [(0, 2 * S), (5 * S, 6 * S)], "s1": [(0, 3 * S)], "s0": [(4 * S, 5 * S)]}
    plan = bind_pool(["j1", "j2"], demand)
    assert plan.at(1 * S) == {"j1": "s1", "j2": "s2"}
    # at 4 s both boards are free: s0 takes the first free board (j1)
    assert plan.at(4 * S) == {"j1": "s0"}
    # at 5 s both are free again: s2 goes back to j2, the board it had, not the first free one
    assert plan.at(5 * S) == {"j2": "s2"}


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(BindingError, match="at least one board"):
        bind_pool([], {"s1": [(0, S)]})
    with pytest.raises(BindingError, match="unique"):
        bind_pool(["j1", "j1"], {})
    with pytest.raises(BindingError, match="satellite s9"):
        bind_pool(["j1"], {"s9": [(3 * S, S)]})


def test_demand_from_timeline_ground_links() -> None:
    nodes = [Node("sat0", "satellite"), Node("sat1", "satellite"), Node("gs", "ground")]
    ev = [
        LinkEvent(0, "up", link_id("sat0", "gs"), "ground", "gs", "sat0"),
        LinkEvent(0, "up", link_id("sat0", "sat1"), "isl", "sat0", "sat1"),  # ISL: ignored
        LinkEvent(30 * S, "down", link_id("sat0", "gs"), "ground", "gs", "sat0"),
        LinkEvent(30 * S, "up", link_id("sat1", "gs"), "ground", "gs", "sat1"),
    ]
    tl = Timeline("t", datetime(2024, 7, 16, tzinfo=UTC), 60.0, 1.0, nodes, ev)
    assert demand_from_timeline(tl) == {"sat0": [(0, 30 * S)], "sat1": [(30 * S, 60 * S)]}
    plan = bind_pool(["j1"], demand_from_timeline(tl))
    assert plan.rebindings == [Rebinding(0, "j1", None, "sat0"),
                               Rebinding(30 * S, "j1", "sat0", "sat1"),
                               Rebinding(60 * S, "j1", "sat1", None)]


@pytest.mark.parametrize("boards", [["j1"], ["j1", "j2"]])
def test_invariants_on_real_contact_windows(boards: list[str]) -> None:
    """A Walker shell over Shanghai for 3 h: the plan is exclusive, only serves satellites in
    contact, never leaves a board idle while one waits, and is the same when recomputed."""
    epoch = datetime(2024, 7, 16, tzinfo=UTC)
    sats = walker_delta(40, 5, 1, 550.0, 53.0, epoch, "w")
    station = GroundStation("shanghai", 31.23, 121.47, 0.0, 25.0)
    end = datetime(2024, 7, 16, 3, tzinfo=UTC)
    windows = contact_windows(sats, station, epoch, end, step_s=20.0)
    demand = demand_from_contacts(windows, epoch)
    assert len(demand) >= 3, "too few contacts for the test to say anything"
    plan = bind_pool(boards, demand)
    if len(boards) == 1:
        assert plan.unserved, "one board for overlapping passes: someone must wait"
    assert plan == bind_pool(boards, dict(reversed(list(demand.items()))))  # deterministic
    instants = sorted({r.t_ns for r in plan.rebindings} | {u.t_ns for u in plan.unserved})
    for t in instants:
        state = plan.at(t)
        assert len(set(state.values())) == len(state)  # one board per satellite
        for sat in state.values():
            assert any(s <= t < e for s, e in demand[sat]), (t, sat)
        waiting = [s for s, ivs in demand.items()
                   if any(a <= t < b for a, b in ivs) and s not in state.values()]
        if waiting:
            assert len(state) == len(boards), (t, waiting, state)  # work-conserving
    # every contact that found a free board at its rise starts on a board then
    for sat, ivs in demand.items():
        for s, _ in ivs:
            if not any(u.satellite == sat and u.t_ns == s for u in plan.unserved):
                assert plan.board_of(sat, s) is not None, (sat, s)
