"""The manifest identifies inputs by content and records versions and the commit."""

from __future__ import annotations

import hashlib
from pathlib import Path

from testbed.manifest import build_manifest, describe_input
from testbed.scenario import load_scenario


def test_inputs_hashed_by_content(tmp_path: Path, shared_data: Path) -> None:
    trace = shared_data / "traces" / "starlink" / "leocc-downlink-delay-10ms.txt"
    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"""\
name: m
epoch: 2024-07-16T00:00:00Z
duration_s: 10
constellation: {{walker: {{planes: 3, per_plane: 3, altitude_km: 550, inclination_deg: 53}}}}
links:
  ground:
    downlink: {{rate_mbps: 50, delay_trace: {trace}, delay: trace}}
""")
    m = build_manifest(load_scenario(scenario), scenario, run_name="m-1")
    by_path = {i["path"]: i for i in m["inputs"]}
    assert by_path[str(trace)]["sha256"] == hashlib.sha256(trace.read_bytes()).hexdigest()
    assert by_path[str(scenario)]["sha256"] == hashlib.sha256(scenario.read_bytes()).hexdigest()
    assert m["versions"]["sgp4"] and m["versions"]["python"]
    assert "commit" in m["git"] and m["seeds"] == {"scenario": 0}


def test_folder_hash_changes_with_any_file(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "b").write_bytes(b"2")
    before = describe_input(tmp_path)["sha256"]
    (tmp_path / "b").write_bytes(b"3")
    assert describe_input(tmp_path)["sha256"] != before
    assert describe_input(tmp_path / "nope") == {"path": str(tmp_path / "nope"), "missing": True}
