"""spaceverse end to end on a small emulated constellation: two satellites (one in contact with
the ground station for the whole run, one never), one ground station, four real test questions,
tiny untrained models and nets that offload everything. Checks that the offloads of the
satellite in contact really crossed its shaped ground link and their answers came back, and
that the other satellite sent nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.lifecycle.network import run_prefix
from testbed.lifecycle.session import hold, prepare, summarize
from testbed.workloads.registry import workload_for
from tests.conftest import require_binary, require_root
from tests.nodes.spaceverse.conftest import build_tiny_models

from ..lifecycle.conftest import leftovers

pytestmark = [pytest.mark.root, pytest.mark.ovs]

SCENARIO = """\
name: sv-{prefix}
epoch: 2024-07-16T00:00:00Z
duration_s: 30
speed: 1
constellation:
  walker: {{planes: 3, per_plane: 9, phasing: 1, altitude_km: 550, inclination_deg: 53}}
  select: {{name: "walker-p2-s[37]"}}   # s3 sees gs all along, s7 never
ground_stations:
  - {{name: gs, lat_deg: 31.23, lon_deg: 121.47, min_elevation_deg: 5}}
links:
  ground:
    policy: highest-elevation
    downlink: {{rate_mbps: 20, delay: propagation}}
    uplink: {{rate_mbps: 10, delay: propagation}}
  isl: {{max_range_km: 20000, capacity: constant, rate_mbps: 50}}
timeline: {{step_s: 5}}
nodes: {{agents: eager}}
outputs: {{dir: "{out}"}}
workload:
  kind: spaceverse
  options:
    method: spaceverse
    onboard_model: "small:{onboard}"
    ground_model: "small:{ground}"
    confidence: "{nets}"
    data: "{data}"
    tasks: [rsvqa-lr, ucmerced]
    per_task: 2
    answer_timeout_s: 10
"""


def test_offloads_cross_the_link_and_answers_come_back(tmp_path: Path, unique_prefix: str,
                                                        shared_data: Path) -> None:
    require_root()
    require_binary("ovs-vsctl", "ip", "ethtool")
    models = build_tiny_models(tmp_path / "models")
    path = tmp_path / "sv.yaml"
    path.write_text(SCENARIO.format(prefix=unique_prefix, out=tmp_path / "runs",
                                    onboard=models["onboard"], ground=models["ground"],
                                    nets=models["offload"], data=shared_data / "images"))
    prep = prepare(path)
    held = hold(prep, report=lambda m: None, workload=workload_for(prep))
    assert not held.interrupted
    w = summarize(prep, held)["workload"]
    assert w["failed"] == {}, w["failed"]
    s = w["summary"]
    assert s["questions"] == 4 and s["offloaded"] == 4
    per_sat = w["per_satellite"]
    seen, blind = per_sat["walker-p2-s3"], per_sat["walker-p2-s7"]
    # the satellite in contact: both offloads sent, answered by W^g, and back
    assert seen["answered"] == 2 and seen["unanswered"] == {"queued": 0, "sent": 0,
                                                           "no-contact": 0}
    # the one never in contact: nothing crossed
    assert blind["answered"] == 0 and blind["bytes_sent"] == 0
    assert blind["unanswered"]["no-contact"] == 2
    ground = w["ground"]
    assert ground["requests"] == 2 and ground["by_satellite"] == {"walker-p2-s3": 2}
    assert ground["bytes_received"] == seen["bytes_sent"] > 0
    assert ground["replies"]["sent"] == 2
    lines = (prep.run_dir.results / "spaceverse-samples.jsonl").read_text().splitlines()
    rows = [r for r in map(json.loads, lines) if r["satellite"] == "walker-p2-s3"]
    assert len(rows) == 2
    for r in rows:
        # real transfers of a real size over a 20 Mbit/s link: at least the serialisation time
        assert r["transfer_s"] >= 8 * r["bytes_sent"] / 20e6 * 0.9
        assert r["time_to_answer_s"] >= r["transfer_s"]
        assert r["status"] == "answered" and r["ground_device_s"] > 0
    assert held.teardown is not None and held.teardown.ok
    assert leftovers(run_prefix(prep.scenario.name)) == {"netns": [], "links": [], "bridges": []}
