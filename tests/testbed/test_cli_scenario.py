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


LONG_STATION = "shanghai-pudong-ground-station-north"


def test_topo_tables_are_printed_in_full_off_a_terminal(
        small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Captured stdout is not a tty: rich would cut cells at 80 columns ('shanghai-pu…')."""
    small.write_text(SMALL.replace("name: shanghai", f"name: {LONG_STATION}"))
    assert main(["topo", str(small), "--limit", "3"]) == 0
    text = capsys.readouterr().out
    assert "…" not in text
    rows = [line for line in text.splitlines() if LONG_STATION in line]
    assert len(rows) >= 3  # one per window shown, each on one line with its full times
    assert all(line.count(":") >= 6 for line in rows[:3])


def test_topo_json_gives_every_contact_window(small: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topo", str(small), "--json"]) == 0
    text = capsys.readouterr().out
    doc = json.loads(text)  # nothing but the JSON on stdout
    assert doc["scenario"] == "cli" and doc["epoch_utc"] == "2024-07-16T00:00:00Z"
    windows = doc["windows"]
    assert len(windows) > 3
    for w in windows:
        assert w["station"] == "shanghai" and w["satellite"].startswith("walker-")
        assert w["rise_utc"] <= w["culmination_utc"] <= w["set_utc"]
        assert w["rise_utc"].startswith("2024-07-16T") and w["set_utc"].endswith("Z")
        assert 10.0 <= w["max_elevation_deg"] <= 90.0
        assert w["duration_s"] > 0
    # the same windows the table shows
    assert main(["topo", str(small), "--limit", "1000"]) == 0
    table = capsys.readouterr().out
    assert f"Contact windows ({len(windows)})" in table


def test_cli_console_has_no_width_limit_off_a_terminal() -> None:
    import io

    from rich.table import Table

    from testbed.cli.console import CliConsole

    table = Table("satellite", "station")
    table.add_row("skysat-c19-" + "x" * 120, "svalbard")
    wide = CliConsole(file=io.StringIO())
    wide.print(table)
    assert "skysat-c19-" + "x" * 120 in wide.file.getvalue()
    fixed = CliConsole(file=io.StringIO(), width=60)  # an explicit width still applies
    fixed.print(table)
    assert max(len(line) for line in fixed.file.getvalue().splitlines()) <= 60
