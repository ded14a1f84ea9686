"""`testbed trace inspect|convert|synth` through main(argv), on the real traces."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from netem.traces import read_trace
from testbed.cli.main import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def starlink(shared_data: Path) -> Path:
    folder = shared_data / "traces" / "starlink"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (real Starlink traces)")
    return folder


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("sub", ["inspect", "convert", "synth"])
def test_help_explains_with_an_example(capsys, sub):
    assert main(["trace", sub, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out and out.count(f"testbed trace {sub}") >= 2  # usage + example


def test_inspect_real_mahimahi_summary_and_plot(capsys, starlink, tmp_path):
    path = starlink / "leocc-downlink-bw.mahimahi.gz"
    png = tmp_path / "bw.png"
    assert main(["trace", "inspect", str(path), "--plot", str(png), "--json"]) == 0
    summary = _json(capsys)
    stamps = np.array(gzip.open(path, "rt").read().split(), dtype=np.int64)
    per100 = np.bincount(stamps // 100)[:1200] * 12_000 / 0.1 / 1e6  # independent count
    down = summary["directions"]["down"]
    cap = down["capacity_mbps"]
    assert cap["mean"] == pytest.approx(stamps.size * 12_000 / (stamps[-1] / 1000) / 1e6)
    assert cap["p50"] == pytest.approx(np.percentile(per100, 50), rel=1e-6)
    assert cap["p5"] == pytest.approx(np.percentile(per100, 5), rel=1e-6)
    assert down["opportunities"] == stamps.size
    slots = down["slots"]
    assert slots["present"] and slots["phase_s"] == pytest.approx(8.70, abs=0.02)
    assert [b["t_s"] for b in slots["boundaries"]] == pytest.approx(
        [8.7 + 15 * k for k in range(8)])
    assert all(b["detected"] for b in slots["boundaries"])
    assert all(b["outage_ms"] >= 50 for b in slots["boundaries"])
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000


def test_inspect_text_output(capsys, starlink):
    assert main(["trace", "inspect", str(starlink / "lagos-100ms.csv.gz")]) == 0
    out = capsys.readouterr().out
    assert "format starlink-csv" in out and "duration: 100.100 s" in out
    assert "down: 1001 intervals of 100 ms" in out and "up: 1001 intervals" in out
    assert "capacity per 100 ms (Mbit/s): mean 90.18" in out
    assert "15 s slots: first boundary at" in out and "loss ratio: not recorded" in out


def test_convert_merge_then_inspect(capsys, starlink, tmp_path):
    out = tmp_path / "leocc.csv.gz"
    assert main(["trace", "convert", str(starlink / "leocc-downlink-bw.mahimahi.gz"), str(out),
                 "--merge", str(starlink / "leocc-downlink-delay-10ms.txt")]) == 0
    assert "wrote" in capsys.readouterr().out
    back = read_trace(out)
    assert back.meta["format"] == "csv" and back.down.quantities == ("rate_bps", "delay_us")
    assert main(["trace", "inspect", str(out), "--json"]) == 0
    summary = _json(capsys)["directions"]["down"]
    assert summary["delay_ms"]["max"] == 68.0 and summary["delay_ms"]["min"] == 7.0
    assert summary["capacity_mbps"]["mean"] == pytest.approx(48.744, abs=1e-3)
    # back to mahimahi: csv keeps 10 ms rates, not instants, so the packet count must survive
    mm = tmp_path / "again.mahimahi"
    assert main(["trace", "convert", str(out), str(mm)]) == 0
    original = read_trace(starlink / "leocc-downlink-bw.mahimahi.gz").down
    assert read_trace(mm).down.opportunities_ms.size == pytest.approx(
        original.opportunities_ms.size, abs=1)


def test_convert_to_delay_and_starlink_csv(capsys, starlink, tmp_path):
    lagos = starlink / "lagos-100ms.csv.gz"
    up_delay = tmp_path / "up-delay.txt"
    assert main(["trace", "convert", str(lagos), str(up_delay), "--direction", "up",
                 "--to-step-ms", "100"]) == 0
    lines = up_delay.read_text().split()
    assert len(lines) == 1001 and float(lines[0]) == pytest.approx(86.256181)
    again = tmp_path / "again.csv"
    assert main(["trace", "convert", str(lagos), str(again), "--to", "starlink-csv"]) == 0
    assert read_trace(again).equals(read_trace(lagos), rtol=1e-12)


def test_synth_writes_a_reproducible_trace(capsys, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    args = ["--duration-s", "45", "--seed", "11", "--start", "2024-07-16T00:00:03.3Z"]
    assert main(["trace", "synth", str(a), *args]) == 0
    assert main(["trace", "synth", str(b), *args]) == 0
    assert a.read_bytes() == b.read_bytes()
    capsys.readouterr()
    assert main(["trace", "inspect", str(a), "--json"]) == 0
    slots = _json(capsys)["directions"]["down"]["slots"]
    assert slots["phase_s"] == pytest.approx(8.70, abs=0.02)
    mm = tmp_path / "s.mahimahi"
    assert main(["trace", "synth", str(mm), "--duration-s", "10", "--seed", "1",
                 "--profile", "lagos", "--direction", "up"]) == 0
    assert read_trace(mm).down.opportunities_ms.size > 0


@pytest.mark.parametrize(("args", "fragment"), [
    (["inspect", "{bad}"], "{bad}:3: timestamp 1 ms goes backwards"),
    (["inspect", "{bad}", "--format", "hbt"],
     "unknown trace format 'hbt'; choose: csv, leoreplayer-delay, mahimahi, starlink-csv"),
    (["convert", "{bad}", "{out}"], "goes backwards"),
    (["synth", "{out}", "--duration-s", "10", "--seed", "1", "--start", "2024-07-16T00:00:03"],
     "--start: '2024-07-16T00:00:03' has no time zone"),
    (["synth", "{out}", "--duration-s", "10", "--seed", "1", "--profile", "mars"],
     "unknown synth profile 'mars'"),
])
def test_errors_are_one_line_with_status_2(capsys, tmp_path, args, fragment):
    bad = tmp_path / "bad.mahimahi"
    bad.write_text("1\n5\n1\n")
    out = tmp_path / "out.csv"
    argv = ["trace"] + [a.format(bad=bad, out=out) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment.format(bad=bad) in " ".join(err.split())
    assert "Traceback" not in err
