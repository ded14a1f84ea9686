"""`testbed validate` and `testbed topo` through main(argv), as a user types them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.cli.main import main
from testbed.timeline.model import Timeline

SMALL = """\
name: cli
epoch: 2024-07-16T00:00:00Z
duration_s: 900
constellation:
  walker: {planes: 8, per_plane: 10, phasing: 1, altitude_km: 550, inclination_deg: 53}
ground_stations:
  - {name: shanghai, lat_deg: 31.23, lon_deg: 121.47, min_elevation_deg: 10}
timeline: {step_s: 5}
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert "testbed " in capsys.readouterr().out
    assert main(["topo", "--help"]) == 0
    assert "--export" in capsys.readouterr().out


def test_validate_ok_and_bad(small: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(small)]) == 0
    assert "80 of 80 satellites" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.replace("lat_deg: 31.23", "lat_deg: 95"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:7" in err and "lat_deg" in err


def test_topo_table_export_jsonl_and_parquet(small: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.jsonl"
    assert main(["topo", str(small), "--export", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Contact windows" in text and "ISLs (+Grid)" in text
    header = json.loads(out.read_text().splitlines()[0])
    assert header["type"] == "header" and len(header["nodes"]) == 81
    tl = Timeline.from_jsonl(out)
    assert any(e.kind == "up" and e.link_kind == "isl" for e in tl.events)
    pq = tmp_path / "t.parquet"
    assert main(["topo", str(small), "--export", str(pq)]) == 0
    assert Timeline.from_parquet(pq).events == tl.events


def test_topo_rejects_unknown_export_format(small: Path, tmp_path: Path) -> None:
    assert main(["topo", str(small), "--export", str(tmp_path / "t.csv")]) == 2


def test_topo_plot_writes_two_pngs(small: Path, tmp_path: Path) -> None:
    png = tmp_path / "topo.png"
    assert main(["topo", str(small), "--plot", str(png)]) == 0
    for path in (png, tmp_path / "topo-contacts.png"):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
