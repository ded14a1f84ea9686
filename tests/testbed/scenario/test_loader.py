"""Scenario validation: each bad input names the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import ScenarioError
from testbed.scenario import load_scenario

GOOD = """\
name: unit
epoch: 2024-07-16T00:00:00Z
duration_s: 600
constellation:
  walker: {planes: 4, per_plane: 5, phasing: 1, altitude_km: 550, inclination_deg: 53}
ground_stations:
  - {name: shanghai, lat_deg: 31.23, lon_deg: 121.47, min_elevation_deg: 25}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, text))
    return info.value


def test_good_scenario_loads_with_defaults(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD))
    assert s.name == "unit"
    assert s.epoch.utcoffset().total_seconds() == 0
    assert s.constellation.walker is not None and s.constellation.walker.planes == 4
    assert s.ground_stations[0].min_elevation_deg == 25
    assert s.links.isl.max_range_km == 3000
    assert s.links.isl.link_budget.frequency_mhz == 20_000
    assert s.backend.kind == "netns"


def test_unknown_key_names_line_field_and_valid_keys(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD + "  - {name: x, lat_deg: 1, lon_deg: 2, min_elev: 3}\n")
    text = str(err)
    assert f"{tmp_path / 's.yaml'}:8: ground_stations.1.min_elev: unknown key 'min_elev'" in text
    assert "min_elevation_deg" in text  # lists what is valid


def test_latitude_95_is_rejected_with_line(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD.replace("lat_deg: 31.23", "lat_deg: 95"))
    assert ":7: ground_stations.0.lat_deg:" in str(err)
    assert "less than or equal to 90" in str(err)
    assert err.line == 7 and err.field == "ground_stations.0.lat_deg"


def test_wrong_type_is_rejected(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD.replace("duration_s: 600", "duration_s: ten minutes"))
    assert ":3: duration_s:" in str(err) and "'ten minutes'" in str(err)


def test_both_constellation_sources_rejected(tmp_path: Path) -> None:
    text = GOOD.replace("constellation:\n", "constellation:\n  tle: x.tle\n")
    err = error_for(tmp_path, text)
    assert ":4: constellation:" in str(err) and "exactly one of 'tle'" in str(err)


def test_epoch_without_timezone_rejected(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD.replace("00:00:00Z", "00:00:00"))
    assert ":2: epoch:" in str(err) and "time zone" in str(err)


def test_duplicate_station_and_duplicate_key(tmp_path: Path) -> None:
    dup = GOOD + "  - {name: shanghai, lat_deg: 1, lon_deg: 2}\n"
    assert "used twice" in str(error_for(tmp_path, dup))
    err = error_for(tmp_path, GOOD + "duration_s: 5\n")
    assert ":8: duration_s: duplicate key" in str(err)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD + "links: {isl: [\n")
    assert err.line is not None and err.line >= 8
    assert "YAML syntax" in str(err)


def test_unquoted_variable_in_flow_mapping_gets_a_hint(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD.replace("walker:", "tle: ${TESTBED_DATA}/t.tle\n  walker:")
                    .replace("constellation:\n", "constellation:\n  select: {name: ${X}}\n"))
    assert "quote values that contain ${VAR}" in str(err)


def test_variables_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTBED_DATA", str(tmp_path / "data"))
    text = GOOD.replace(
        "  walker: {planes: 4, per_plane: 5, phasing: 1, altitude_km: 550, inclination_deg: 53}",
        "  tle: ${TESTBED_DATA}/tle/a.tle",
    ) + "links:\n  ground:\n    downlink: {trace: traces/down.mahimahi}\n"
    s = load_scenario(write(tmp_path, text))
    assert s.constellation.tle == tmp_path / "data" / "tle" / "a.tle"
    assert s.links.ground.downlink.trace == tmp_path / "traces" / "down.mahimahi"


def test_unset_variable_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_VAR_X", raising=False)
    text = GOOD.replace("name: unit", "name: ${NO_SUCH_VAR_X}")
    err = error_for(tmp_path, text)
    assert ":1: name:" in str(err) and "NO_SUCH_VAR_X" in str(err)


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "nope.yaml")
    assert "empty" in str(error_for(tmp_path, ""))


def test_walker_phasing_must_be_below_planes(tmp_path: Path) -> None:
    err = error_for(tmp_path, GOOD.replace("phasing: 1", "phasing: 4"))
    assert ":5: constellation.walker:" in str(err) and "phasing=4" in str(err)


@pytest.mark.parametrize("example", sorted(Path("experiments").glob("*.yaml")))
def test_shipped_examples_validate(example: Path, shared_data: Path) -> None:
    assert load_scenario(example).name
