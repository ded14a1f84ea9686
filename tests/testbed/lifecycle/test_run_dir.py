"""A rerun starts fresh files; a leftover ledger is torn down and kept; the speed caveat.

No root: `prepare` and `summarize` create nothing on the system.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.cli import lifecycle_cmd
from testbed.ledger import Ledger
from testbed.lifecycle.run_dir import LeftoverLedgerError, RunDir
from testbed.lifecycle.session import Held, prepare, summarize

TINY = """\
name: {name}
epoch: 2024-07-16T00:00:00Z
duration_s: 60
speed: {speed}
constellation:
  walker: {{planes: 2, per_plane: 3, phasing: 1, altitude_km: 550, inclination_deg: 53}}
ground_stations:
  - {{name: gs, lat_deg: 31.23, lon_deg: 121.47, min_elevation_deg: 5}}
links:
  ground: {{downlink: {{rate_mbps: 50}}, uplink: {{rate_mbps: 10}}}}
  isl: {{max_range_km: 20000, capacity: constant, rate_mbps: 50}}
timeline: {{step_s: 10}}
outputs: {{dir: "{out}"}}
"""


def _scenario(tmp_path: Path, speed: float = 1.0) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(name="tiny-rundir", speed=speed, out=tmp_path / "runs"))
    return path


def _scribble(run_dir: RunDir) -> None:
    """What a finished run leaves: lines in every append-only file, logs and results."""
    for name in ("events-applied.jsonl", "route-changes.jsonl"):
        (run_dir.path / name).write_text('{"t_ns": 1}\n' * 24)
    for name in ("status.json", "summary.json", "state.json", "controller-state.json"):
        (run_dir.path / name).write_text("{}")
    (run_dir.logs / "agent-sat.log").write_text("old log\n")
    (run_dir.results / "resume").mkdir()
    (run_dir.results / "resume" / "x.bin").write_bytes(b"old")


def test_a_rerun_starts_fresh_files(tmp_path):
    path = _scenario(tmp_path)
    first = prepare(path)
    _scribble(first.run_dir)
    second = prepare(path)
    assert second.run_dir == first.run_dir and second.leftovers is None
    run_dir = second.run_dir
    for name in ("events-applied.jsonl", "route-changes.jsonl", "status.json", "summary.json",
                 "state.json", "controller-state.json"):
        assert not (run_dir.path / name).exists(), name
    assert list(run_dir.logs.iterdir()) == [] and list(run_dir.results.iterdir()) == []
    assert run_dir.manifest.is_file() and run_dir.timeline.is_file()


def test_a_leftover_ledger_is_torn_down_and_kept(tmp_path):
    path = _scenario(tmp_path)
    run_dir = prepare(path).run_dir
    created = tmp_path / "made-by-the-killed-run"
    created.write_text("x")
    with Ledger(run_dir.ledger) as ledger:
        ledger.record("file", str(created))
    again = prepare(path)
    assert again.leftovers is not None and [e.name for e in again.leftovers.removed] == \
        [str(created)]
    assert not created.exists() and not run_dir.ledger.exists()
    kept = list(run_dir.path.glob("ledger.*.removed.jsonl"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["name"] == str(created)


def test_start_fresh_refuses_a_ledger_nobody_tore_down(tmp_path):
    run_dir = RunDir(tmp_path / "run").create()
    run_dir.ledger.write_text("")
    with pytest.raises(LeftoverLedgerError, match="testbed down"):
        run_dir.start_fresh()
    assert run_dir.ledger.exists()


@pytest.mark.parametrize("speed", [1.0, 20.0])
def test_the_summary_says_what_speed_does_to_data_per_contact(tmp_path, capsys, speed):
    prep = prepare(_scenario(tmp_path, speed=speed))
    summary = summarize(prep, Held(instants=[], played_ns=60 * 10**9))
    assert summary["data_per_contact_ratio"] == pytest.approx(1 / speed)
    lifecycle_cmd._print_summary(summary)
    printed = capsys.readouterr().out
    if speed == 1.0:
        assert summary["speed_caveat"] is None and "speed 1" not in printed
    else:
        assert "1/20" in summary["speed_caveat"] and "speed 1" in summary["speed_caveat"]
        assert "carried 0.05x the data" in " ".join(printed.split())
