"""RoutePusher: order, coalescing, deferred work after install, errors kept, pause by lock.

The programmer here is an in-process recorder: what is tested is the pusher's own ordering
logic. The real controller path is exercised by the whole-network tests.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from controller.model import Host, Snapshot, Switch
from testbed.lifecycle.routes import RoutePusher


def snapshot(generation: int) -> Snapshot:
    return Snapshot(generation=generation, switches=(Switch(dpid=1, name="a"),),
                    hosts=(Host(node="a", ip="10.0.0.1", mac="02:00:0a:00:00:01", port_no=1),),
                    links=(), label=f"g{generation}")


class Recorder:
    """Applies slowly, remembering the order of generations and of deferred work."""

    def __init__(self, delay_s: float = 0.0, fail: set[int] | None = None) -> None:
        self.delay_s = delay_s
        self.fail = fail or set()
        self.log: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def apply(self, snap: Snapshot) -> None:
        self.gate.wait(5)
        time.sleep(self.delay_s)
        if snap.generation in self.fail:
            raise RuntimeError("controller said no")
        self.log.append(f"apply {snap.generation}")


def test_deferred_work_runs_after_its_routes_are_in_effect(tmp_path: Path) -> None:
    prog = Recorder(delay_s=0.05)
    pusher = RoutePusher(prog, record_path=tmp_path / "routes.jsonl")
    change = pusher.submit(snapshot(1), scheduled_ns=time.monotonic_ns(),
                           deferred=lambda: prog.log.append("down 1"))
    assert pusher.drain(5)
    pusher.close()
    assert prog.log == ["apply 1", "down 1"]
    assert change.installed_ns is not None and change.deferred_done_ns >= change.installed_ns
    assert change.install_ms >= 50
    line = json.loads((tmp_path / "routes.jsonl").read_text())
    assert line["generation"] == 1 and line["deferred_done_ns"] == change.deferred_done_ns


def test_pending_changes_coalesce_to_the_newest_and_all_deferred_run_in_order() -> None:
    prog = Recorder()
    prog.gate.clear()  # hold the first apply so that the next three queue up
    pusher = RoutePusher(prog)
    pusher.submit(snapshot(1))
    time.sleep(0.1)
    for g in (2, 3, 4):
        pusher.submit(snapshot(g), deferred=lambda g=g: prog.log.append(f"down {g}"))
    prog.gate.set()
    assert pusher.drain(5)
    pusher.close()
    assert prog.log == ["apply 1", "apply 4", "down 2", "down 3", "down 4"]
    summary = pusher.summary()
    assert summary["submitted"] == 4 and summary["superseded"] == 2
    assert summary["make_before_break_downs"] == 3 and summary["errors"] == []
    assert [c.superseded_by for c in pusher.changes] == [None, 4, 4, None]


def test_a_failed_change_is_recorded_and_later_ones_still_apply() -> None:
    prog = Recorder(fail={2})
    pusher = RoutePusher(prog)
    pusher.submit(snapshot(2), deferred=lambda: prog.log.append("down 2"))
    pusher.drain(5)
    pusher.submit(snapshot(3))
    pusher.close()
    assert prog.log == ["down 2", "apply 3"]  # the down still happens: never left half-up
    assert pusher.summary()["errors"] == ["generation 2: controller said no"]
    assert pusher.changes[0].error is not None and pusher.changes[1].error is None


def test_lock_pauses_the_pusher() -> None:
    prog = Recorder()
    pusher = RoutePusher(prog)
    with pusher.lock:
        pusher.submit(snapshot(1))
        time.sleep(0.2)
        assert prog.log == []
    assert pusher.drain(5)
    pusher.close()
    assert prog.log == ["apply 1"]
