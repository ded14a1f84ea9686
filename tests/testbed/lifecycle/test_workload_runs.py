"""downlink-files through the job API on a whole network: with two ground stations every
station gets a receiver (the run used to end in a 409 traceback), satellites send to the one
the options name, and each satellite's goodput is over the time its transfers were active,
with what limited it."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.lifecycle.network import run_prefix
from testbed.lifecycle.session import hold, prepare, summarize
from testbed.workloads.registry import workload_for

from .conftest import leftovers

pytestmark = [pytest.mark.root, pytest.mark.ovs]


def test_two_ground_stations_run_to_the_end(small_scenario, shared_data: Path) -> None:
    path = small_scenario(duration=20, speed=1.0)
    text = path.read_text().replace(
        "  - {name: gs, lat_deg: 31.23, lon_deg: 121.47, min_elevation_deg: 5}\n",
        "  - {name: gs, lat_deg: 31.23, lon_deg: 121.47, min_elevation_deg: 5}\n"
        "  - {name: beijing, lat_deg: 39.9, lon_deg: 116.4, min_elevation_deg: 5}\n")
    assert "beijing" in text
    text += ("workload:\n  kind: downlink-files\n"
             f"  options: {{source: \"{shared_data / 'images' / 'rsvqa-lr'}\", "
             "ground: beijing, io_timeout_s: 2.0}\n")
    path.write_text(text)
    prep = prepare(path)
    held = hold(prep, report=lambda m: None, workload=workload_for(prep))
    assert not held.interrupted
    w = summarize(prep, held)["workload"]
    assert w["station"] == "beijing"
    assert set(w["ground"]) == {"gs", "beijing"}  # a receiver on each station, both stopped
    per_sat = w["per_satellite"]
    assert len(per_sat) == 27
    delivered = {s: v for s, v in per_sat.items() if v["files"] > 0}
    assert delivered, "no satellite reached beijing in 20 s"
    for sat, v in delivered.items():
        assert 0 < v["active_s"] <= 20.5, (sat, v)
        # goodput over active time never exceeds what the link can carry
        assert v["goodput_mbps"] <= v["capacity_mbps"] * 1.05, (sat, v)
        assert v["limited_by"], (sat, v)
    idle = [v for v in per_sat.values() if v["files"] == 0]
    assert all(v["goodput_mbps"] == 0.0 for v in idle)
    assert held.teardown is not None and held.teardown.ok
    assert leftovers(run_prefix(prep.scenario.name)) == {"netns": [], "links": [], "bridges": []}
