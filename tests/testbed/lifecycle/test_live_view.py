"""The live view: pure rendering, the incremental pieces of its poll, status.json merging, the
non-terminal line output, and `testbed status` against a real control socket."""

from __future__ import annotations

import io
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from testbed.cli.main import main
from testbed.fabric.addressing import LinkAddress, LinkEnd
from testbed.lifecycle.control import ControlServer
from testbed.lifecycle.links import LinkRecord
from testbed.lifecycle.live_view import (
    LATENESS_BIN_US,
    ContactClock,
    LatenessTail,
    LiveStatus,
    LiveView,
    base_status,
    merge_view,
    render_status,
    status_line,
)
from testbed.lifecycle.run_dir import RunDir
from testbed.lifecycle.session import contact_seconds
from testbed.timeline.model import LinkEvent, Node, Timeline

S = 1_000_000_000


def _timeline() -> Timeline:
    """sat0 and sat1 take turns at station gs; sat1's second pass is still open at the end."""
    def ground(t_s: float, kind: str, sat: str) -> LinkEvent:
        return LinkEvent(int(t_s * S), kind, f"gs--{sat}", "ground", "gs", sat)  # type: ignore

    events = [ground(10, "up", "sat0"), ground(40, "down", "sat0"), ground(40, "up", "sat1"),
              ground(55.5, "down", "sat1"), ground(70, "up", "sat0"), ground(90, "down", "sat0"),
              ground(95, "up", "sat1"),
              LinkEvent(20 * S, "up", "sat0--sat1", "isl", "sat0", "sat1", delay_us=3000)]
    tl = Timeline("t", datetime(2024, 7, 16, tzinfo=UTC), 120.0, 1.0,
                  [Node("sat0", "satellite"), Node("sat1", "satellite"), Node("sat2", "satellite"),
                   Node("gs", "ground")], events)
    tl.sort()
    return tl


def _status() -> dict[str, Any]:
    return {
        "scenario_t_s": 42.0, "duration_s": 600, "generation": 7, "links_up": 5,
        "links_total": 9, "ground_links_up": ["gs--sat1"], "down_nodes": ["sat2"],
        "updated_utc": 0.0, "serving": {"gs": "sat1"}, "in_contact": ["sat1"],
        "satellites": {"sat0": {"in_contact": False, "contact_s": 30.0, "files": 12,
                                "bytes": 3_500_000},
                       "sat1": {"in_contact": True, "contact_s": 2.0, "files": 0, "bytes": 0},
                       "sat2": {"in_contact": False, "contact_s": 0.0, "files": None,
                                "bytes": None}},
        "lateness_ms": {"p50": 0.12, "p99": 1.87, "max": 2.5, "instants": 420},
        "faults": [{"id": 1, "fault": "kill-node", "node": "sat2", "at_scenario_s": 33.0},
                   {"id": 2, "fault": "restart-node", "of": 1}],
    }


def test_render_status_shows_every_field() -> None:
    console = Console(record=True, width=120)
    console.print(render_status(_status(), routes={"sat0": {"hops": 2, "delay_us": 8500.0}}))
    text = console.export_text()
    assert "scenario time 42.0 / 600 s" in text
    assert "serving: gs <- sat1" in text
    assert "links up 5/9" in text and "routes generation 7" in text
    assert "p50 0.12 ms, p99 1.87 ms over 420 instants" in text
    assert "faults: 1 (last: kill-node sat2 at 33.0 s); down nodes: sat2" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.strip().startswith("sat")}
    assert rows["sat0"] == ["sat0", "30.0", "12", "3.50", "2", "8.50"]
    assert rows["sat1"] == ["sat1", "yes", "2.0", "0", "0.00", "-", "-"]
    assert rows["sat2"] == ["sat2", "0.0", "-", "-", "-", "-"]


def test_render_without_view_keys_says_unknown_not_zero() -> None:
    console = Console(record=True, width=120)
    console.print(render_status({"scenario_t_s": 3.0, "links_up": 1, "links_total": 2}))
    text = console.export_text()
    assert "scenario time 3.0 s" in text and "faults: -" in text and "p50 - ms" in text


def test_status_line_is_one_compact_line() -> None:
    line = status_line(_status())
    assert "\n" not in line and len(line) < 200
    assert line.startswith("t=42/600s | serving gs<-sat1 | contact 1/3 | links 5/9")
    assert "files 12 (3.5 MB)" in line and "late p50 0.12 p99 1.87 ms" in line
    assert "faults 1" in line and "down sat2" in line


@pytest.mark.parametrize("t_s", [0, 10, 25, 40, 55.5, 60, 80, 96.25, 120])
def test_contact_clock_matches_the_summary_rule(t_s: float) -> None:
    tl = _timeline()
    expected = contact_seconds(tl, int(t_s * S))
    got = ContactClock(tl).contact_s(int(t_s * S))
    assert got == pytest.approx(expected, abs=1e-9)


def test_lateness_tail_reads_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "events-applied.jsonl"
    tail = LatenessTail(path)
    tail.update()  # no file yet
    assert tail.instants == 0 and math.isnan(tail.percentile_ms(50))
    late_ns = [int(x) for x in [50_000, 80_000, 120_000, 3_000_000, 95_000] * 41] + [17_000_000]
    lines = [json.dumps({"scenario_t_ns": i, "lateness_ns": v}) + "\n"
             for i, v in enumerate(late_ns)]
    with path.open("w") as f:
        f.write("".join(lines[:100]) + lines[100][:10])  # the clock is mid-line
    tail.update()
    assert tail.instants == 100
    with path.open("a") as f:
        f.write(lines[100][10:] + "".join(lines[101:]))
    tail.update()
    tail.update()  # nothing new: nothing counted twice
    assert tail.instants == len(late_ns)
    ordered = sorted(v / 1e6 for v in late_ns)
    for q in (50, 90, 99):
        exact = ordered[math.ceil(q / 100 * len(ordered)) - 1]
        assert exact <= tail.percentile_ms(q) <= exact + LATENESS_BIN_US / 1e3
    assert tail.max_ms == 17.0 and tail.percentile_ms(100) == 17.0


def _record(sat: str, up: bool) -> LinkRecord:
    link = LinkAddress(0, f"gs--{sat}", LinkEnd("gs", "br0", "e0", 1), LinkEnd(sat, "br1", "e1", 2),
                       "userspace", None)  # type: ignore[arg-type]
    return LinkRecord(link, kind="ground", up=up, ground_station="gs")


def test_base_status_and_merge_keep_both_writers_keys(tmp_path: Path) -> None:
    records = {"a": _record("sat0", False), "b": _record("sat1", True)}
    assert base_status(records) == {"serving": {"gs": "sat1"}, "in_contact": ["sat1"]}
    assert base_status({"a": _record("sat0", False)})["serving"] == {"gs": None}
    path = tmp_path / "status.json"
    assert merge_view(path, {"scenario_t_s": 1.0}) == {"scenario_t_s": 1.0}
    path.write_text(json.dumps({"scenario_t_s": 0.5, "lateness_ms": {"p50": 1.0},
                                "satellites": {"sat0": {}}, "stale_clock_key": 1}))
    merged = merge_view(path, {"scenario_t_s": 1.0, "links_up": 3})
    assert merged == {"scenario_t_s": 1.0, "links_up": 3, "lateness_ms": {"p50": 1.0},
                      "satellites": {"sat0": {}}}


def _clock_writes(run_dir: RunDir, t_s: float) -> None:
    """What `_live_status` + `write_json` do on the clock's thread."""
    base = {"scenario_t_s": t_s, "generation": 2, "links_up": 4, "links_total": 6,
            "ground_links_up": ["gs--sat0"], "down_nodes": [], "updated_utc": time.time(),
            "serving": {"gs": "sat0"}, "in_contact": ["sat0"]}
    run_dir.write_json(run_dir.status, merge_view(run_dir.status, base))


def test_live_status_poll_writes_the_whole_status(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path).create()
    answers: list[dict[str, Any] | None] = [{"sat0": {"files_received": 3,
                                                      "bytes_received": 9000}}, None]
    live = LiveStatus(run_dir, _timeline(), tallies=lambda: answers.pop(0) if answers else None)
    assert "satellites" in live.poll() and not run_dir.status.exists()  # clock not started
    _clock_writes(run_dir, 30.0)
    with run_dir.events_applied.open("w") as f:
        f.write(json.dumps({"lateness_ns": 250_000}) + "\n")
    status = live.poll()  # the agent answers
    written = json.loads(run_dir.status.read_text())
    assert written == json.loads(json.dumps(status))
    assert written["links_up"] == 4 and written["ground_links_up"] == ["gs--sat0"]
    assert written["satellites"]["sat0"] == {"in_contact": True, "contact_s": 20.0, "files": 3,
                                             "bytes": 9000}
    assert written["satellites"]["sat1"]["files"] == 0
    assert written["lateness_ms"]["instants"] == 1
    _clock_writes(run_dir, 45.0)  # the clock's next write keeps the view's keys
    assert json.loads(run_dir.status.read_text())["satellites"]["sat0"]["files"] == 3
    status = live.poll()  # the agent is gone: the last counts stay
    assert status["satellites"]["sat0"]["files"] == 3
    assert status["satellites"]["sat1"]["contact_s"] == 5.0


def test_live_view_prints_compact_lines_when_not_a_terminal(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path).create()
    _clock_writes(run_dir, 12.0)
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with LiveView(console, poll_s=0.05, line_s=0.2) as view:
        assert not view.tty
        view.attach(LiveStatus(run_dir, _timeline()))
        deadline = time.monotonic() + 5.0
        while out.getvalue().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and view.polls > len(lines)  # a line every 0.2 s, a poll every 0.05
    assert lines[0].startswith("t=12/120s | serving gs<-sat0 | contact 1/3 | links 4/6")


def test_live_view_on_a_terminal_shows_the_table(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path).create()
    _clock_writes(run_dir, 12.0)
    console = Console(file=io.StringIO(), force_terminal=True, record=True, width=120)
    with LiveView(console, poll_s=0.05) as view:
        assert view.tty
        view.attach(LiveStatus(run_dir, _timeline()))
        deadline = time.monotonic() + 5.0
        while view.polls < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    text = console.export_text()
    assert "scenario time 12.0 / 120 s" in text and "serving: gs <- sat0" in text


def test_testbed_status_renders_the_table_from_a_live_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = RunDir(tmp_path / "run").create()
    plan = {"prefix": "lv", "nodes": [
        {"name": n, "role": r, "netns": f"lv-{n}", "data_ip": ip, "mgmt_ip": "10.255.0.1",
         "bridge": f"lv-{n}"}
        for n, r, ip in (("sat0", "satellite", "10.128.0.1"), ("sat1", "satellite", "10.128.0.2"),
                         ("gs", "ground", "10.128.0.3"))]}
    run_dir.write_json(run_dir.state, {"plan": plan})
    _clock_writes(run_dir, 30.0)
    LiveStatus(run_dir, _timeline()).poll()
    reply = {"scenario_t_s": 31.0, "generation": 2, "down_nodes": [],
             "links": {"gs--sat0": {"up": True, "kind": "ground", "delay_us": 2000,
                                    "rate_bps": 1}},
             "routes": {"generation": 2, "routes": [
                 {"dpid": 1, "node": "sat1", "ipv4_dst": "10.128.0.3", "out_port": 3,
                  "next_dpid": 2, "hops": 2, "delay_us": 7250.0}]}}
    server = ControlServer(run_dir.path / "control.sock", lambda req: reply)
    try:
        assert main(["status", str(run_dir.path)]) == 0
    finally:
        server.close()
    out = capsys.readouterr().out
    assert "scenario time 31.0 / 120 s" in out
    sat1 = next(line.split() for line in out.splitlines() if line.strip().startswith("sat1 "))
    assert sat1[-2:] == ["2", "7.25"]
