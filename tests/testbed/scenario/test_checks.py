"""What `validate` accepts, `up`/`run` accept: workload kinds, device profiles, trace files."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.cli.main import main
from testbed.errors import ScenarioError
from testbed.lifecycle.session import prepare
from testbed.scenario.checks import valid_workload_kinds, validate_scenario

REPO = Path(__file__).resolve().parents[3]

BASE = """\
name: checks
epoch: 2024-07-16T00:00:00Z
duration_s: 60
constellation:
  walker: {{planes: 2, per_plane: 3, phasing: 1, altitude_km: 550, inclination_deg: 53}}
ground_stations:
  - {{name: gs, lat_deg: 31.23, lon_deg: 121.47, min_elevation_deg: 5}}
links:
  ground:
    downlink: {downlink}
nodes:
  satellite: {{profile: {profile}}}
  profiles:
    my-board: {{cores: 4, core_speed_vs_reference: 0.5, memory_mib: 4096}}
workload:
  kind: {kind}
outputs: {{dir: "{out}"}}
"""


def scenario(tmp_path: Path, *, kind: str = "none", profile: str = "jetson-orin",
             downlink: str = "{rate_mbps: 50}") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(BASE.format(kind=kind, profile=profile, downlink=downlink,
                                out=tmp_path / "runs"))
    return path


def test_valid_kinds_are_the_orchestrated_ones_and_none() -> None:
    """A scenario names a kind the orchestrator drives (each known to the node side too);
    job-only kinds such as message-exchange run with `testbed job`, not from a scenario."""
    from nodes.workloads.registry import workload_kinds

    valid = valid_workload_kinds()
    assert "downlink-files" in valid and "none" in valid
    assert "message-exchange" not in valid
    assert set(valid) - {"none"} <= set(workload_kinds())


def test_unknown_workload_kind_names_file_line_field_and_valid_kinds(tmp_path, capsys) -> None:
    path = scenario(tmp_path, kind="dlrx")
    assert main(["validate", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{path}:16: workload.kind: unknown workload kind 'dlrx'; choose: " in err
    assert ", ".join(valid_workload_kinds()) in err


def test_run_and_up_refuse_it_before_creating_anything(tmp_path) -> None:
    path = scenario(tmp_path, kind="dlrx")
    with pytest.raises(ScenarioError, match="unknown workload kind 'dlrx'"):
        prepare(path)  # what `up` and `run` call first
    assert not (tmp_path / "runs").exists()


def test_unknown_profile_lists_built_in_and_custom_profiles(tmp_path) -> None:
    with pytest.raises(ScenarioError) as info:
        validate_scenario(scenario(tmp_path, profile="jetson-nano"))
    err = info.value
    assert err.line == 12 and err.field == "nodes.satellite.profile"
    assert "unknown device profile 'jetson-nano'; choose: " in str(err)
    for name in ("gs-server", "jetson-agx-xavier", "jetson-orin", "my-board"):
        assert name in str(err)


def test_a_custom_profile_and_a_registered_workload_validate(tmp_path) -> None:
    s = validate_scenario(scenario(tmp_path, profile="my-board", kind="downlink-files"))
    assert s.nodes.satellite.profile == "my-board" and s.workload.kind == "downlink-files"


def test_a_trace_that_is_not_a_trace_names_the_file_and_the_problem(tmp_path) -> None:
    bad = tmp_path / "down.mahimahi"
    bad.write_text("12\n7\nnot a number\n")
    with pytest.raises(ScenarioError) as info:
        validate_scenario(scenario(tmp_path, downlink=f'{{trace: "{bad}"}}'))
    text = str(info.value)
    assert (f"{tmp_path / 's.yaml'}:10: links.ground.downlink.trace: not a usable trace: "
            f"{bad}:2: timestamp 7 ms goes backwards") in text


def test_a_delay_file_given_as_capacity_trace_is_refused(tmp_path) -> None:
    delay = tmp_path / "d-delay.txt"
    delay.write_text("30\n31\n32\n")
    with pytest.raises(ScenarioError, match="records no capacity for the link"):
        validate_scenario(scenario(tmp_path, downlink=f'{{trace: "{delay}"}}'))


def test_the_shipped_scenarios_validate(shared_data) -> None:
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        assert validate_scenario(path).name == path.stem
