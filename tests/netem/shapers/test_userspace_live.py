"""The userspace shaper on real namespaces, veths, iperf3 and ping (root).

Every figure is measured at the receiver (iperf3 server, ping) and compared with what was
programmed; the shaper's own counters are checked against those independent numbers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netem.errors import NetemError
from netem.linkstate import LinkState
from netem.shapers.userspace import UserspaceShaper
from netem.shapers.userspace_pair import NamespacePair
from netem.shapers.userspace_program import TraceProgram
from tests.conftest import require_binary, require_root

pytestmark = pytest.mark.root

UDP_PAYLOAD = 1472  # a 1500-byte IP packet, a 1514-byte frame
FRAME = UDP_PAYLOAD + 42
FAST = 10_000_000_000  # effectively unshaped


@pytest.fixture
def pair(unique_prefix: str) -> Iterator[NamespacePair]:
    require_root()
    require_binary("iperf3", "ping", "ethtool", "ip")
    with NamespacePair(unique_prefix) as p:
        yield p
    assert not any(Path("/var/run/netns", ns).exists() for ns in p.names.namespaces)


@pytest.fixture
def shaper() -> Iterator[UserspaceShaper]:
    with UserspaceShaper(seed=42) as s:
        yield s
    assert s._proc is not None and s._proc.poll() is not None  # the worker is gone


def add(pair: NamespacePair, shaper: UserspaceShaper, up: LinkState, down: LinkState) -> None:
    shaper.add_link(pair.link(up="l/up", down="l/down"), up, down)


def iperf_udp(pair: NamespacePair, *, rate_bps: int, seconds: float, reverse: bool = False,
              during: list[tuple[float, object]] | None = None) -> dict:
    """UDP iperf3 terminal -> ground (reverse: ground -> terminal); the receiver's JSON.

    during: (seconds after start, callable) run while the flow is on.
    """
    server = subprocess.Popen(pair.argv_in("ground", ["iperf3", "-s", "-1", "-J", "-i", "0.25"]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        argv = ["iperf3", "-c", pair.ground_addr, "-u", "-b", str(rate_bps), "-l",
                str(UDP_PAYLOAD), "-t", str(seconds), "-J", "-w", "2M", "-i", "0.25"]
        if reverse:
            argv.append("-R")
        client = subprocess.Popen(pair.argv_in("terminal", argv), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        start = time.monotonic()
        for at_s, action in during or []:
            time.sleep(max(0.0, start + at_s - time.monotonic()))
            action()  # type: ignore[operator]
        out, err = client.communicate(timeout=seconds + 20)
        assert client.returncode == 0, err or out
        server_out, _ = server.communicate(timeout=10)
    finally:
        for proc in (server,):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # the receiver's view: the server's report (or the client's in reverse mode)
    return json.loads(out if reverse else server_out)


def interval_rates_bps(report: dict) -> list[tuple[float, float]]:
    return [(i["sum"]["end"], i["sum"]["bits_per_second"]) for i in report["intervals"]]


def ping_rtts_ms(pair: NamespacePair, count: int, interval_s: float) -> list[float | None]:
    """RTT per icmp_seq (None: lost), ping from the terminal."""
    done = subprocess.run(
        pair.argv_in("terminal", ["ping", "-n", "-c", str(count), "-i", str(interval_s),
                                  "-W", "2", pair.ground_addr]),
        capture_output=True, text=True, timeout=count * interval_s + 30, check=False)
    rtts: list[float | None] = [None] * count
    for seq, ms in re.findall(r"icmp_seq=(\d+) .*time=([0-9.]+) ms", done.stdout):
        if 1 <= int(seq) <= count:
            rtts[int(seq) - 1] = float(ms)
    return rtts


def test_rate_achieved_and_changed_at_receiver(pair: NamespacePair, shaper: UserspaceShaper):
    add(pair, shaper, LinkState(rate_bps=20_000_000), LinkState(rate_bps=FAST))
    report = iperf_udp(pair, rate_bps=40_000_000, seconds=4, during=[
        (2.0, lambda: shaper.apply("l/up", LinkState(rate_bps=8_000_000)))])
    rates = interval_rates_bps(report)
    payload = UDP_PAYLOAD / FRAME  # the shaper counts whole frames
    first = statistics.median(r for end, r in rates if 0.5 < end <= 2.0)
    second = statistics.median(r for end, r in rates if end > 3.0)
    assert first == pytest.approx(20e6 * payload, rel=0.05)
    assert second == pytest.approx(8e6 * payload, rel=0.05)
    counters = shaper.counters()["l/up"]
    assert counters["dropped_queue"] > 0  # offered 40 Mbit/s: the drop-tail queue overflows
    received = report["end"]["sum"]["packets"] - report["end"]["sum"]["lost_packets"]
    assert counters["forwarded_packets"] >= received


def test_ping_sees_programmed_delay(pair: NamespacePair, shaper: UserspaceShaper):
    add(pair, shaper, LinkState(rate_bps=FAST, delay_us=10_000),
        LinkState(rate_bps=FAST, delay_us=15_000))
    rtts = [r for r in ping_rtts_ms(pair, 100, 0.01) if r is not None]
    assert len(rtts) == 100
    assert statistics.median(rtts) == pytest.approx(25.0, abs=1.0)
    assert min(rtts) >= 25.0 - 0.1


def test_delay_change_mid_run_is_observed(pair: NamespacePair, shaper: UserspaceShaper):
    add(pair, shaper, LinkState(rate_bps=FAST, delay_us=10_000),
        LinkState(rate_bps=FAST, delay_us=10_000))
    timer = threading.Timer(1.0, lambda: shaper.apply_many({
        "l/up": LinkState(rate_bps=FAST, delay_us=40_000),
        "l/down": LinkState(rate_bps=FAST, delay_us=40_000)}))
    timer.start()
    try:
        rtts = ping_rtts_ms(pair, 100, 0.02)
    finally:
        timer.cancel()
    before = [r for r in rtts[:30] if r is not None]
    after = [r for r in rtts[-30:] if r is not None]
    assert statistics.median(before) == pytest.approx(20.0, abs=1.0)
    assert statistics.median(after) == pytest.approx(80.0, abs=1.0)
    applied = [e for e in shaper.events() if e["kind"] == "apply"]
    assert {e["direction"] for e in applied} == {"l/up", "l/down"}
    assert all(e["fields"] == {"delay_us": 40_000} for e in applied)


def test_loss_ratio_within_binomial_bounds(pair: NamespacePair, shaper: UserspaceShaper):
    p, n = 0.2, 1000
    add(pair, shaper, LinkState(rate_bps=FAST, loss_ratio=p), LinkState(rate_bps=FAST))
    rtts = ping_rtts_ms(pair, n, 0.002)
    lost = sum(r is None for r in rtts)
    sigma = (n * p * (1 - p)) ** 0.5
    assert abs(lost - n * p) < 4 * sigma
    assert shaper.counters()["l/up"]["dropped_loss"] == pytest.approx(lost, abs=3)


def test_queue_limit_drops_and_bounds_queue_delay(pair: NamespacePair, shaper: UserspaceShaper):
    limit = 50
    add(pair, shaper, LinkState(rate_bps=FAST),
        LinkState(rate_bps=5_000_000, queue_limit_packets=limit))
    report = iperf_udp(pair, rate_bps=20_000_000, seconds=2, reverse=True)
    down = shaper.counters()["l/down"]
    offered = report["end"]["sum"]["packets"]
    assert down["dropped_queue"] > 0.5 * offered  # 4x overload: about 3/4 is dropped
    # a full queue of `limit` frames drains at 5 Mbit/s
    full_ms = limit * FRAME * 8 / 5e6 * 1e3
    assert down["queue_delay"]["max_us"] / 1e3 == pytest.approx(full_ms, rel=0.1)


def test_follows_mahimahi_opportunities(pair: NamespacePair, shaper: UserspaceShaper):
    # 2 opportunities per ms (24 Mbit/s of IP packets) for 1.5 s, then 1 per ms for 1.5 s
    opportunities = [ms for ms in range(1, 1501) for _ in range(2)] + list(range(1501, 3001))
    add(pair, shaper, LinkState(rate_bps=FAST), LinkState(rate_bps=FAST))

    def start() -> None:
        shaper.follow("l/up", TraceProgram.from_mahimahi_ms(opportunities, name="steps"))

    report = iperf_udp(pair, rate_bps=40_000_000, seconds=3, during=[(0.0, start)])
    rates = interval_rates_bps(report)
    payload = UDP_PAYLOAD / 1500  # opportunities count IP bytes
    hi = [r for end, r in rates if 0.6 < end <= 1.4]
    lo = [r for end, r in rates if 2.1 < end <= 2.9]
    assert statistics.median(hi) == pytest.approx(24e6 * payload, rel=0.06)
    assert statistics.median(lo) == pytest.approx(12e6 * payload, rel=0.06)
    follow = [e for e in shaper.events() if e["kind"] == "follow"]
    assert len(follow) == 1 and follow[0]["trace"] == "steps"
    assert shaper.counters()["l/up"]["opportunities_used"] > 2000


def test_idle_links_cost_nothing(pair: NamespacePair, shaper: UserspaceShaper):
    add(pair, shaper, LinkState(rate_bps=FAST, delay_us=5_000),
        LinkState(rate_bps=FAST, delay_us=5_000))
    cpu0 = shaper.worker_stats()["cpu_s"]
    time.sleep(1.0)
    assert shaper.worker_stats()["cpu_s"] - cpu0 < 0.05


def test_errors_name_the_problem(pair: NamespacePair, shaper: UserspaceShaper):
    add(pair, shaper, LinkState(rate_bps=FAST), LinkState(rate_bps=FAST))
    with pytest.raises(NetemError, match="unknown direction 'l/sideways'; known: l/down, l/up"):
        shaper.apply("l/sideways", LinkState(rate_bps=1))
    link = pair.link(up="m/up", down="m/down", name="m")
    bad = type(link)("m", "nosuchif0", link.iface_b, "m/up", "m/down", link.netns)
    with pytest.raises(NetemError, match="interface 'nosuchif0' not found in network namespace"):
        shaper.add_link(bad, LinkState(rate_bps=1), LinkState(rate_bps=1))
    with pytest.raises(NetemError, match="direction 'l/up' already exists"):
        shaper.add_link(pair.link(up="l/up", down="x/down", name="x"), LinkState(rate_bps=1),
                        LinkState(rate_bps=1))


def _promiscuity(pair: NamespacePair, ifname: str) -> int:
    out = subprocess.run(["ip", "-d", "-n", pair.names.shaper_ns, "link", "show", ifname],
                         capture_output=True, text=True, check=True).stdout
    return int(re.search(r"promiscuity (\d+)", out).group(1))  # type: ignore[union-attr]


def test_close_stops_worker_and_releases_interfaces(pair: NamespacePair):
    require_root()
    shaper = UserspaceShaper()
    add(pair, shaper, LinkState(rate_bps=FAST), LinkState(rate_bps=FAST))
    t1 = pair.names.iface("t1")
    assert _promiscuity(pair, t1) == 1
    pid = shaper.pid
    shaper.close()
    shaper.close()  # idempotent
    assert not Path(f"/proc/{pid}").exists()
    assert _promiscuity(pair, t1) == 0
    with pytest.raises(NetemError, match="already closed"):
        shaper.counters()


def test_worker_dies_with_its_owner(tmp_path: Path):
    require_root()
    script = textwrap.dedent("""
        import sys, time
        from netem.shapers.userspace import UserspaceShaper
        s = UserspaceShaper()
        print(s.pid, flush=True)
        time.sleep(60)
    """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[3])
    try:
        assert owner.stdout is not None
        worker_pid = int(owner.stdout.readline())
        assert Path(f"/proc/{worker_pid}").exists()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{worker_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{worker_pid}").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)
