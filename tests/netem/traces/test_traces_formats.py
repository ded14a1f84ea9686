"""Trace formats: the shipped real files against independent parses, round trips, strict errors."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from netem.errors import TraceFormatError
from netem.traces import (
    DirectionSeries,
    FormatOptions,
    Trace,
    UnknownTraceFormat,
    detect_format,
    format_names,
    generate_starlink,
    read_trace,
    write_trace,
)

MS = 1_000_000


@pytest.fixture(scope="module")
def starlink(shared_data: Path) -> Path:
    folder = shared_data / "traces" / "starlink"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (real Starlink traces)")
    return folder


# ---- the real files, checked against plain parses that share no code with the readers -------

def test_leocc_mahimahi_matches_a_plain_count(starlink):
    path = starlink / "leocc-downlink-bw.mahimahi.gz"
    stamps = [int(x) for x in gzip.open(path, "rt").read().split()]
    tr = read_trace(path)
    assert tr.meta["format"] == "mahimahi"
    assert tr.meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    down = tr.down
    assert down.opportunities_ms.tolist() == stamps
    assert down.duration_ns == stamps[-1] * MS
    mean_mbps = len(stamps) * 1500 * 8 / (stamps[-1] / 1000) / 1e6
    assert down.mean("rate_bps") / 1e6 == pytest.approx(mean_mbps, rel=1e-12)
    assert 48.6 < mean_mbps < 48.8  # the data README's "≈ 48.7 Mbit/s"
    # one second in the middle, counted by hand
    in_second_50 = sum(1 for s in stamps if 50_000 <= s < 51_000)
    assert down.slice(50_000 * MS, 51_000 * MS).mean("rate_bps") == pytest.approx(
        in_second_50 * 12_000)


def test_leocc_delay_bins(starlink):
    path = starlink / "leocc-downlink-delay-10ms.txt"
    values = [float(x) for x in path.read_text().split()]
    tr = read_trace(path, options=FormatOptions(step_ms=10, duration_s=120))
    assert tr.meta["format"] == "leoreplayer-delay"
    assert tr.down.delay_us.tolist() == [v * 1000 for v in values]
    assert tr.down.duration_ns == len(values) * 10 * MS
    assert np.median(tr.down.delay_us) == 11_000  # README: median ≈ 11 ms


def test_delay_file_with_the_wrong_declared_bin_is_caught_by_duration(starlink):
    path = starlink / "leocc-downlink-delay-10ms.txt"
    with pytest.raises(TraceFormatError) as err:
        read_trace(path, options=FormatOptions(step_ms=100, duration_s=120))
    assert err.value.path == str(path)
    assert "11999 bins of 100 ms last 1199.9 s, but 120 s was declared" in str(err.value)


def test_lagos_csv_matches_numpy(starlink):
    path = starlink / "lagos-100ms.csv.gz"
    rows = np.loadtxt(gzip.open(path, "rt"), delimiter=",")
    tr = read_trace(path)
    assert tr.meta["format"] == "starlink-csv"
    assert tr.duration_s == pytest.approx(rows.shape[0] * 0.1)
    assert np.allclose(tr.up.rate_bps, rows[:, 0] * 1e6)
    assert np.allclose(tr.down.rate_bps, rows[:, 1] * 1e6)
    assert np.allclose(tr.up.delay_us, rows[:, 2] * 1e3)
    assert np.allclose(tr.down.delay_us, rows[:, 3] * 1e3)
    assert tr.down.loss_ratio is None


def test_starlink_csv_with_the_upstream_time_column(tmp_path):
    path = tmp_path / "upstream.csv"
    path.write_text("26.5,48.1,83.8,88.3,12000\n26.5,54.3,87.7,83.5,12100\n")
    tr = read_trace(path)
    assert tr.meta["t0_ms"] == 12000 and tr.duration_s == pytest.approx(0.2)
    assert tr.up.rate_bps.tolist() == [26.5e6, 26.5e6]
    assert tr.down.delay_us.tolist() == [88300, 83500]


# ---- round trips ---------------------------------------------------------------------------

def _two_way(step_ms: int = 100, n: int = 50) -> Trace:
    rng = np.random.default_rng(3)
    mk = lambda: DirectionSeries.uniform(  # noqa: E731
        step_ms * MS, rate_bps=rng.uniform(1e6, 200e6, n).round(3),
        delay_us=rng.uniform(5e3, 90e3, n).round(3))
    return Trace(down=mk(), up=mk())


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz"])
def test_csv_round_trip_all_quantities(tmp_path, name):
    tr = generate_starlink(40, seed=5, profile="lagos")
    assert write_trace(tr, tmp_path / name) == "csv"
    back = read_trace(tmp_path / name)
    assert back.equals(tr, rtol=0)


def test_csv_round_trip_of_an_irregular_grid(tmp_path):
    s = DirectionSeries(t_ns=[0, 7 * MS, 1000 * MS + 1], duration_ns=1234 * MS + 5,
                        rate_bps=[1.5, 2.25, 1e9], loss_ratio=[0, 0.5, 1])
    tr = Trace(up=s)
    write_trace(tr, tmp_path / "irregular.csv")
    assert read_trace(tmp_path / "irregular.csv").equals(tr, rtol=0)


@pytest.mark.parametrize("name", ["l.csv", "l.csv.gz"])
def test_starlink_csv_round_trip(tmp_path, name):
    tr = _two_way()
    write_trace(tr, tmp_path / name, "starlink-csv")
    assert detect_format(tmp_path / name) == "starlink-csv"  # numeric first line
    assert read_trace(tmp_path / name).equals(tr, rtol=1e-12)


def test_mahimahi_round_trip_keeps_opportunities(tmp_path, starlink):
    real = read_trace(starlink / "leocc-downlink-bw.mahimahi.gz")
    write_trace(real, tmp_path / "copy.down")
    back = read_trace(tmp_path / "copy.down")
    assert back.equals(real, rtol=0)
    raw_in = gzip.open(starlink / "leocc-downlink-bw.mahimahi.gz", "rt").read()
    assert (tmp_path / "copy.down").read_text() == raw_in


def test_mahimahi_from_rates_keeps_the_mean_rate(tmp_path):
    tr = generate_starlink(60, seed=2)
    write_trace(tr, tmp_path / "s.mahimahi.gz")
    back = read_trace(tmp_path / "s.mahimahi.gz")
    assert back.down.mean("rate_bps") == pytest.approx(tr.down.mean("rate_bps"), rel=2e-3)
    # and what mahimahi reads again round-trips exactly
    write_trace(back, tmp_path / "again.mahimahi")
    assert read_trace(tmp_path / "again.mahimahi").equals(back, rtol=0)


def test_delay_round_trip(tmp_path):
    tr = Trace(up=DirectionSeries.uniform(10 * MS, delay_us=[7000, 11500, 68000, 9876.5]))
    opts = FormatOptions(direction="up", step_ms=10)
    write_trace(tr, tmp_path / "up-delay.txt", options=opts)
    assert (tmp_path / "up-delay.txt").read_text() == "7\n11.5\n68\n9.8765\n"
    assert read_trace(tmp_path / "up-delay.txt", options=opts).equals(tr, rtol=0)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    (tmp_path / "plain-name.mahimahi").write_bytes(gzip.compress(b"1\n1\n2\n"))
    tr = read_trace(tmp_path / "plain-name.mahimahi")
    assert tr.down.opportunities_ms.tolist() == [1, 1, 2]


# ---- format names and detection ------------------------------------------------------------

@pytest.mark.parametrize(("name", "fmt"), [
    ("a.mahimahi", "mahimahi"), ("a.mahimahi.gz", "mahimahi"), ("Verizon-LTE.down", "mahimahi"),
    ("b.up", "mahimahi"), ("leocc-downlink-delay-10ms.txt", "leoreplayer-delay"),
    ("x.delay", "leoreplayer-delay"), ("new.csv", "csv"), ("new.csv.gz", "csv"),
])
def test_detect_format_from_name(name, fmt):
    assert detect_format(name, for_writing=True) == fmt


def test_unknown_names_list_the_valid_ones(tmp_path):
    assert format_names() == ["csv", "leoreplayer-delay", "mahimahi", "starlink-csv"]
    with pytest.raises(UnknownTraceFormat) as err:
        read_trace(tmp_path / "x.csv", "hbt")
    assert "unknown trace format 'hbt'; choose: csv, leoreplayer-delay, mahimahi, " \
           "starlink-csv" in str(err.value)
    (tmp_path / "trace.bin").write_text("1\n")
    with pytest.raises(UnknownTraceFormat, match="cannot tell the trace format"):
        read_trace(tmp_path / "trace.bin")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(TraceFormatError, match="no such file") as err:
        read_trace(tmp_path / "absent.mahimahi")
    assert err.value.path == str(tmp_path / "absent.mahimahi")


# ---- bad input: file, 1-based line, problem; nothing skipped --------------------------------

BAD = [
    # (format, file name, content, options, line, message fragment)
    ("mahimahi", "a.mahimahi", "1\n5\n3\n", {}, 3, "timestamp 3 ms goes backwards"),
    ("mahimahi", "a.mahimahi", "1\n-5\n", {}, 2, "timestamp -5 ms is negative"),
    ("mahimahi", "a.mahimahi", "1\nabc\n", {}, 2, "timestamp 'abc' is not a number"),
    ("mahimahi", "a.mahimahi", "1\n2.5\n", {}, 2, "not a whole number of ms"),
    ("mahimahi", "a.mahimahi", "1\n\n3\n", {}, 2, "empty line"),
    ("mahimahi", "a.mahimahi", "", {}, None, "empty file"),
    ("mahimahi", "a.mahimahi", "\n\n", {}, None, "empty file"),
    ("leoreplayer-delay", "d-delay.txt", "delay_ms\n10\n", {}, 1, "header"),
    ("leoreplayer-delay", "d-delay.txt", "10\n-1\n", {}, 2, "delay_ms -1 is negative"),
    ("leoreplayer-delay", "d-delay.txt", "10\n1O\n", {}, 2, "delay_ms '1O' is not a number"),
    ("leoreplayer-delay", "d-delay.txt", "0,10\n100,11\n", {}, 2,
     "timestamps step 100 ms, but the declared bin is 10 ms"),
    ("leoreplayer-delay", "d-delay.txt", "0 10\n10 11\n5 12\n", {}, 3, "goes backwards"),
    ("leoreplayer-delay", "d-delay.txt", "# bin_ms: 100\n10\n", {"step_ms": 10}, 1,
     "file declares bin_ms=100 but the bin size given is 10 ms"),
    ("leoreplayer-delay", "d-delay.txt", "# bin_ms: 100\n10\n# step_ms: 10\n", {}, 3,
     "file declares step_ms=10 here but bin_ms=100 on line 1"),
    ("leoreplayer-delay", "d-delay.txt", "# bin_ms: 0\n10\n", {}, 1,
     "bin_ms=0 is not a positive bin size"),
    ("leoreplayer-delay", "d-delay.txt", "10\n11\n12\n", {"duration_s": 1.0}, None,
     "3 bins of 10 ms last 0.03 s, but 1 s was declared"),
    ("leoreplayer-delay", "d-delay.txt", "10\n11,3\n", {}, 2, "2 fields, but earlier lines"),
    ("starlink-csv", "s.csv", "up,down,ud,dd\n1,2,3,4\n", {}, 1, "looks like a header"),
    ("starlink-csv", "s.csv", "1,2,3,4\n1,2,3\n", {}, 2, "3 columns, expected 4"),
    ("starlink-csv", "s.csv", "1,2,3,4\n1,-2,3,4\n", {}, 2,
     "downlink_throughput_mbps -2 is negative"),
    ("starlink-csv", "s.csv", "1,2,3,4\n1,2,,4\n", {}, 2, "uplink_delay_ms is empty"),
    ("starlink-csv", "s.csv", "1,2,3,4,0\n1,2,3,4,100\n", {"step_ms": 10}, 2,
     "t_ms steps 100 ms, but the declared step is 10 ms"),
    ("starlink-csv", "s.csv", "1,2,3,4,500\n1,2,3,4,400\n", {}, 2, "t_ms 400 goes backwards"),
    ("csv", "c.csv", "t_ms,down_rate_mbps,bogus\n0,1,2\n", {}, 1, "unknown column 'bogus'"),
    ("csv", "c.csv", "t_ms,down_rate_mbps\n0,1\n20,2\n10,3\n", {}, 4,
     "timestamp 10 goes backwards (previous: 20)"),
    ("csv", "c.csv", "t_ms,down_rate_mbps\n0,1\n0,2\n", {}, 3, "timestamp 0 repeats"),
    ("csv", "c.csv", "t_ms,rate_mbps,loss_ratio\n0,1,1.5\n", {}, 2, "loss_ratio 1.5 is above 1"),
    ("csv", "c.csv", "t_ms,rate_mbps\n0,fast\n", {}, 2, "rate_mbps 'fast' is not a number"),
    ("csv", "c.csv", "t_ms,rate_mbps,rate_kbps\n0,1,2\n", {}, 1, "repeats down rate_bps"),
    ("csv", "c.csv", "1.5,2.5\n3,4\n", {}, 1, "no header line"),
    ("csv", "c.csv", "t_ms,rate_mbps\n0,1\n10,2,3\n", {}, 3, "3 fields, expected 2"),
]


@pytest.mark.parametrize(("fmt", "name", "content", "opts", "line", "fragment"), BAD,
                         ids=[f"{b[0]}-{b[5][:30]}" for b in BAD])
def test_bad_input_names_file_line_and_problem(tmp_path, fmt, name, content, opts, line,
                                               fragment):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TraceFormatError) as err:
        read_trace(path, fmt, FormatOptions(**opts))
    assert err.value.path == str(path)
    assert err.value.line == line
    assert fragment in str(err.value)
    assert str(err.value).startswith(f"{path}:{line}:" if line else f"{path}:")


@pytest.mark.parametrize("opts", [{}, {"step_ms": 100}], ids=["declared-only", "both-agree"])
def test_a_delay_file_s_declared_bin_is_used(tmp_path, opts):
    path = tmp_path / "d-delay.txt"
    path.write_text("# bin_ms: 100\n10\n11\n12\n")
    down = read_trace(path, options=FormatOptions(**opts)).down
    assert down.duration_ns == 300 * MS
    assert down.delay_us.tolist() == [10_000.0, 11_000.0, 12_000.0]


def test_a_delay_file_without_a_declaration_takes_the_caller_s_bin(tmp_path):
    path = tmp_path / "d-delay.txt"
    path.write_text("10\n11\n")
    assert read_trace(path, options=FormatOptions(step_ms=100)).down.duration_ns == 200 * MS
    assert read_trace(path).down.duration_ns == 20 * MS


def test_writers_refuse_traces_they_cannot_express(tmp_path):
    one_way = Trace(down=DirectionSeries.uniform(100 * MS, rate_bps=[1e6, 2e6]))
    with pytest.raises(TraceFormatError, match="needs both directions"):
        write_trace(one_way, tmp_path / "x.csv", "starlink-csv")
    with pytest.raises(TraceFormatError, match="no delay_us to write"):
        write_trace(one_way, tmp_path / "x-delay.txt")
    uneven = Trace(down=one_way.down, up=DirectionSeries.uniform(100 * MS, rate_bps=[1e6]))
    with pytest.raises(TraceFormatError, match="up lasts 0.1 s and the trace 0.2 s"):
        write_trace(uneven, tmp_path / "x.csv")
