"""The reconciler driven against fake switches that model an OpenFlow table and forwarding.

After every batch a fake switch applies, a packet walk from every switch to every host checks
that nothing loops or is black-holed: the property make-before-break promises for a planned swap
(links stay up). Reversing the rounds must break it, which shows the check can fail.
"""

from __future__ import annotations

import threading

import pytest

from controller.errors import StaleGenerationError
from controller.flows import FlowEntry, FlowKey, cookie_for, generation_of, route_key
from controller.reconciler import Reconciler
from tests.controller.ctl_fakes import FakeFabric, connect_all, grid_snapshot, ring_snapshot


def test_first_snapshot_installs_every_route_and_status_is_complete() -> None:
    snap = grid_snapshot(3, 4, seed=1)
    fabric = FakeFabric(snap)
    rec = Reconciler()
    connect_all(rec, fabric)
    assert rec.submit(snap) is True
    rec.run_until_idle()
    fabric.checking = True
    fabric.check()
    assert fabric.violations == []
    status = rec.status()
    assert status.generation_applied == 1 and status.complete
    assert {sw.flows for sw in status.switches} == {len(snap.hosts) + 1}
    assert all(sw.synced_generation == 1 for sw in status.switches)
    assert rec.wait_applied(1, 0.0)
    assert status.last_apply is not None and status.last_apply.flow_mods == 12 * 13


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_planned_swap_never_loops_or_black_holes(seed: int) -> None:
    first = grid_snapshot(3, 4, seed=seed, generation=1)
    second = grid_snapshot(3, 4, seed=seed + 100, generation=2)  # same links, new delays
    fabric = FakeFabric(first)
    rec = Reconciler()
    connect_all(rec, fabric)
    rec.submit(first)
    rec.run_until_idle()
    fabric.checking = True
    before = len(fabric.batches)
    rec.submit(second)
    rec.run_until_idle()
    assert len(fabric.batches) > before, "the new delays changed no route: pick other seeds"
    assert fabric.violations == []
    assert rec.status().last_apply.rounds >= 2


def test_reversed_rounds_would_loop_so_the_check_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Old: 1->2->3. New (2-3 slow): 2->1->4->3. Updating 2 before 1 loops packets 1<->2."""
    import controller.reconciler as reconciler_mod

    real = reconciler_mod.plan_rounds
    monkeypatch.setattr(reconciler_mod, "plan_rounds", lambda *a: list(reversed(real(*a))))
    fabric = FakeFabric(ring_snapshot(1, 500.0))
    rec = Reconciler()
    connect_all(rec, fabric)
    rec.submit(ring_snapshot(1, 500.0))
    rec.run_until_idle()
    fabric.checking = True
    rec.submit(ring_snapshot(2, 9000.0))
    rec.run_until_idle()
    assert any("loop" in v for v in fabric.violations), fabric.violations


def test_same_swap_in_the_right_order_is_clean() -> None:
    fabric = FakeFabric(ring_snapshot(1, 500.0))
    rec = Reconciler()
    connect_all(rec, fabric)
    rec.submit(ring_snapshot(1, 500.0))
    rec.run_until_idle()
    fabric.checking = True
    rec.submit(ring_snapshot(2, 9000.0))
    rec.run_until_idle()
    assert fabric.violations == []
    assert rec.routes().path(2, "10.0.0.3") == [2, 1, 4, 3]


def test_resync_keeps_right_flows_installs_missing_and_removes_stale() -> None:
    snap = ring_snapshot(5, 500.0)
    fabric = FakeFabric(snap)
    sw1 = fabric.switches[1]
    right = FlowEntry(route_key("10.0.0.3"), 12, cookie_for(4))  # right port, older generation
    stale = FlowEntry(route_key("10.0.0.99"), 14, cookie_for(3))
    sw1.table = {right.key: right, stale.key: stale}
    rec = Reconciler()
    rec.submit(snap)
    rec.run_until_idle()  # no switch connected yet: nothing to do
    connect_all(rec, fabric)
    assert sw1.table[right.key] is right, "a flow that is already right must not be rewritten"
    assert stale.key not in sw1.table
    assert generation_of(sw1.table[FlowKey(0, 0, ())].cookie) == 5
    assert rec.status().complete


def test_stale_and_repeated_generations() -> None:
    rec = Reconciler()
    assert rec.submit(ring_snapshot(3, 500.0)) is True
    assert (
        rec.submit(ring_snapshot(3, 500.0)) is False
    )  # identical re-push: accepted, nothing to do
    with pytest.raises(StaleGenerationError, match="generation=2 is stale"):
        rec.submit(ring_snapshot(2, 500.0))
    with pytest.raises(StaleGenerationError):
        rec.submit(ring_snapshot(3, 700.0))  # same generation, other content


def test_scheduled_snapshot_waits_for_its_instant_and_supersedes_older() -> None:
    now = [1_000_000_000]
    fabric = FakeFabric(ring_snapshot(1, 500.0))
    rec = Reconciler(clock_ns=lambda: now[0])
    connect_all(rec, fabric)
    rec.submit(ring_snapshot(1, 500.0))
    rec.run_until_idle()
    rec.submit(ring_snapshot(2, 9000.0).model_copy(update={"at_ns": now[0] + 50_000_000}))
    rec.submit(ring_snapshot(3, 9500.0).model_copy(update={"at_ns": now[0] + 60_000_000}))
    rec.run_until_idle()
    assert rec.status().generation_applied == 1
    assert rec.status().pending == [2, 3]
    now[0] += 70_000_000
    rec.run_until_idle()
    status = rec.status()
    assert status.generation_applied == 3 and status.pending == []
    assert status.last_apply.superseded == [2]
    assert rec.wait_applied(2, 0.0), "a superseded generation counts as applied"


def test_failed_batch_marks_switch_and_resyncs_it_with_backoff() -> None:
    now = [10_000_000_000]
    fabric = FakeFabric(ring_snapshot(1, 500.0))
    rec = Reconciler(clock_ns=lambda: now[0])
    connect_all(rec, fabric)
    rec.submit(ring_snapshot(1, 500.0))
    rec.run_until_idle()
    reads = fabric.switches[2].reads
    fabric.switches[2].fail_next = "OFPT_ERROR type=5 code=0"
    rec.submit(ring_snapshot(2, 9000.0))
    rec.run_until_idle()
    status = rec.status()
    assert any("OFPT_ERROR" in e for e in status.errors)
    assert not status.complete and status.switch(2).synced_generation is None
    assert fabric.switches[2].reads == reads, "no retry before the backoff (1 s) ran out"
    now[0] += 1_000_000_000
    rec.run_until_idle()
    status = rec.status()
    assert fabric.switches[2].reads == reads + 1, "the failed switch is re-read"
    assert status.complete and status.switch(2).synced_generation == 2
    assert rec.routes().path(2, "10.0.0.3") == [2, 1, 4, 3]
    fabric.checking = True
    fabric.check()
    assert fabric.violations == []


def test_disconnect_and_wait_applied_timeout() -> None:
    fabric = FakeFabric(ring_snapshot(1, 500.0))
    rec = Reconciler()
    connect_all(rec, fabric)
    rec.submit(ring_snapshot(1, 500.0))
    rec.run_until_idle()
    rec.switch_disconnected(3, fabric.switches[3])
    rec.run_until_idle()
    status = rec.status()
    assert not status.complete and not status.switch(3).connected
    assert rec.wait_applied(1, 0.05) is False
    assert rec.wait_applied(1, 0.05, all_switches=False) is True
    # a reconnect resyncs it and wakes a waiter
    waiter_result: list[bool] = []
    waiter = threading.Thread(target=lambda: waiter_result.append(rec.wait_applied(1, 5.0)))
    waiter.start()
    rec.switch_connected(fabric.switches[3])
    rec.run_until_idle()
    waiter.join(6.0)
    assert waiter_result == [True]


def test_state_file_survives_a_restart(tmp_path) -> None:
    state = tmp_path / "state.json"
    fabric = FakeFabric(ring_snapshot(1, 500.0))
    rec = Reconciler(state_path=state)
    connect_all(rec, fabric)
    rec.submit(ring_snapshot(4, 9000.0))
    rec.run_until_idle()
    table_before = {k: v for k, v in fabric.switches[1].table.items()}
    restarted = Reconciler(state_path=state)
    assert restarted.load_state() == 4
    assert restarted.status().generation_applied == 4
    connect_all(restarted, fabric)
    assert restarted.status().complete
    assert fabric.switches[1].table == table_before, "resync after restart changed nothing"
    with pytest.raises(StaleGenerationError):
        restarted.submit(ring_snapshot(3, 500.0))
