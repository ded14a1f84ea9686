"""The exporter over real HTTP: clock families, positions against skyfield, program rates
against a brute-force count, node cgroup usage read from this process's own cgroup."""

from __future__ import annotations

import os
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testbed.cgroups import detect_hierarchy, parse_proc_cgroup
from testbed.errors import SystemRequirementError
from testbed.lifecycle.clock import AppliedInstant
from testbed.observability import OrchestratorExporter, PositionSampler, ProgramRate, node_usage
from testbed.orbit import GroundStation, walker_delta

EPOCH = datetime(2024, 7, 16, tzinfo=UTC)


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_exporter_serves_clock_positions_and_lateness_over_http() -> None:
    sats = walker_delta(6, 2, 1, 550.0, 53.0, EPOCH, "w")
    gs = GroundStation("gs", 31.23, 121.47, 0.0, 5.0)
    sampler = PositionSampler(sats, [gs], EPOCH)
    now = [10_000_000_000]
    exporter = OrchestratorExporter(scenario_name="unit", backend="netns", speed=2.0,
                                    positions=sampler, now_ns=lambda: now[0], linger_s=0)
    exporter.start()
    try:
        for i, late_us in enumerate([30, 150, 900, 3000]):
            exporter.on_instant(AppliedInstant(i * 5_000_000_000, 0, late_us * 1000, 2, "rate"))
        exporter.sample()
        got = scrape(exporter.url)
    finally:
        exporter.close()
    buckets = {s[0]["le"]: s[1] for s in got["leo_event_apply_lateness_seconds_bucket"]}
    assert buckets["0.0001"] == 1 and buckets["0.001"] == 3 and buckets["+Inf"] == 4
    assert got["leo_event_apply_lateness_seconds_sum"][0][1] == pytest.approx(4.08e-3)
    assert got["leo_instants_applied_total"][0][1] == 4
    assert got["leo_events_applied_total"][0][1] == 8
    assert got["leo_scenario_time_seconds"][0][1] == pytest.approx(15.0)  # last instant
    assert got["leo_run_speed_ratio"][0][1] == pytest.approx(2.0)

    # positions at scenario t=15 s against skyfield's own propagation and WGS84 subpoint
    from skyfield.api import EarthSatellite, load, wgs84

    ts = load.timescale(builtin=True)
    t = ts.utc(2024, 7, 16, 0, 0, 15)
    lat = {s[0]["satellite"]: s[1] for s in got["leo_satellite_latitude_degrees"]}
    lon = {s[0]["satellite"]: s[1] for s in got["leo_satellite_longitude_degrees"]}
    alt = {s[0]["satellite"]: s[1] for s in got["leo_satellite_altitude_meters"]}
    assert sorted(lat) == sorted(s.name for s in sats)
    for s in sats:
        sub = wgs84.geographic_position_of(EarthSatellite.from_satrec(s.satrec, ts).at(t))
        assert lat[s.name] == pytest.approx(sub.latitude.degrees, abs=1e-3)
        dlon = (lon[s.name] - sub.longitude.degrees + 180) % 360 - 180
        assert abs(dlon) < 1e-3
        assert alt[s.name] == pytest.approx(sub.elevation.m, abs=50.0)
    visible = {(s[0]["satellite"], s[0]["station"]): s[1] for s in got["leo_satellite_visible"]}
    assert set(visible.values()) <= {0.0, 1.0} and len(visible) == len(sats)
    assert got["leo_ground_station_latitude_degrees"][0][1] == pytest.approx(31.23)


def test_program_rate_matches_a_brute_force_count() -> None:
    rng = np.random.default_rng(7)
    period_ns = 2_500_000_000
    opp = np.sort(rng.integers(0, period_ns, 4000))
    rate = ProgramRate(opp.tolist(), period_ns, 1500)
    many = np.concatenate([opp + k * period_ns for k in range(-1, 6)])  # repeats before 0 too
    for offset_ns in (300_000_000, 1_000_000_000, 2_499_999_999, 7_700_000_000,
                      12_000_000_001):
        n = int(np.count_nonzero((many >= offset_ns - 1_000_000_000) & (many < offset_ns)))
        assert rate.rate_bps(offset_ns) == pytest.approx(n * 1500 * 8)
    short = ProgramRate([0, 100_000_000], 200_000_000, 1500)  # window spans 5 periods
    assert short.rate_bps(1_000_000_000) == pytest.approx(10 * 1500 * 8)


def test_node_usage_reads_this_process_cgroup() -> None:
    try:
        h = detect_hierarchy()
    except SystemRequirementError as exc:
        pytest.skip(f"no cgroup hierarchy with cpu and memory here: {exc}")
    own = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    if h.version == "v1":
        dirs = (h.cpu_root / own["cpu"].lstrip("/"), h.memory_root / own["memory"].lstrip("/"))
    else:
        dirs = (h.cpu_root / own[""].lstrip("/"),)
    sum(i * i for i in range(200_000))  # some CPU of our own
    usage = node_usage(h.version, dirs, [os.getpid()])
    assert usage.cpu_s > 0
    assert usage.memory_bytes is not None and usage.memory_bytes > 10 * 1024 * 1024
