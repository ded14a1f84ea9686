"""KernelShaper on a real kernel: two namespaces joined by veth, real TCP traffic (iperf3),
rates measured at the receiver, qdiscs read back with iproute2's `tc -j` (an independent
reader). Needs root; everything created carries a unique prefix and is removed in teardown.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pyroute2 import IPRoute, netns

from netem.errors import NetemError, UnsupportedError
from netem.linkstate import LinkState
from netem.probe import probe_capabilities
from netem.shapers import KernelShaper
from tests.conftest import require_binary, require_root

pytestmark = pytest.mark.root

SENDER_IP = "10.231.0.1"
RECEIVER_IP = "10.231.0.2"
# TCP goodput per wire byte the qdisc counts: 1448 B payload (MSS with timestamps) per
# 1514 B frame (Ethernet header included, as qdisc_pkt_len counts it)
GOODPUT_PER_WIRE = 1448 / 1514


@dataclass
class Pair:
    sender_ns: str
    receiver_ns: str
    sender_if: str
    receiver_if: str

    def run(self, ns: str, *argv: str, timeout_s: float = 30, check: bool = True):
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                              text=True, timeout=timeout_s, check=check)

    def qdiscs(self) -> list[dict[str, Any]]:
        """The sender interface's qdiscs as iproute2 reports them (with counters), without the
        kernel's default (handle 0:, e.g. noqueue)."""
        out = self.run(self.sender_ns, "tc", "-j", "-s", "qdisc", "show", "dev", self.sender_if)
        return [q for q in json.loads(out.stdout or "[]") if q["handle"] != "0:"]


@pytest.fixture
def pair(unique_prefix: str) -> Iterator[Pair]:
    require_root()
    require_binary("ip", "tc", "iperf3", "ping")
    p = Pair(f"{unique_prefix}s", f"{unique_prefix}r", f"{unique_prefix}a", f"{unique_prefix}b")
    created: list[str] = []
    try:
        for name in (p.sender_ns, p.receiver_ns):
            netns.create(name)
            created.append(name)
        with IPRoute(netns=p.sender_ns, flags=0) as ipr:
            ipr.link("add", ifname=p.sender_if, kind="veth", peer={"ifname": p.receiver_if})
            peer = ipr.link_lookup(ifname=p.receiver_if)[0]
            ipr.link("set", index=peer, net_ns_fd=p.receiver_ns)
            idx = ipr.link_lookup(ifname=p.sender_if)[0]
            ipr.addr("add", index=idx, address=SENDER_IP, prefixlen=24)
            ipr.link("set", index=idx, state="up")
        with IPRoute(netns=p.receiver_ns, flags=0) as ipr:
            idx = ipr.link_lookup(ifname=p.receiver_if)[0]
            ipr.addr("add", index=idx, address=RECEIVER_IP, prefixlen=24)
            ipr.link("set", index=idx, state="up")
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        yield p
    finally:
        for name in created:
            netns.remove(name)


def _wait_listening(pair: Pair, port: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        out = pair.run(pair.receiver_ns, "ss", "-ltnH", f"sport = :{port}", check=False)
        if out.stdout.strip():
            return
        time.sleep(0.05)
    pytest.fail(f"iperf3 server did not listen on port {port} within 5 s")


def receiver_intervals(pair: Pair, duration_s: int, during=None) -> list[tuple[float, float]]:
    """Run one iperf3 TCP flow sender -> receiver; the receiver's (interval end s, bit/s).

    `during(elapsed_s)` is called from a thread at ~0.5 s steps while the flow runs."""
    port = 5201
    server = subprocess.Popen(
        ["ip", "netns", "exec", pair.receiver_ns, "iperf3", "-s", "-1", "-J", "-i", "0.5",
         "-p", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(pair, port)
        client = subprocess.Popen(
            ["ip", "netns", "exec", pair.sender_ns, "iperf3", "-c", RECEIVER_IP, "-p", str(port),
             "-t", str(duration_s), "-J"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        errors: list[BaseException] = []
        if during is not None:
            def drive() -> None:
                start = time.monotonic()
                try:
                    during(start)
                except BaseException as exc:  # re-raised in the test thread below
                    errors.append(exc)
            thread = threading.Thread(target=drive)
            thread.start()
        out, err = client.communicate(timeout=duration_s + 20)
        if during is not None:
            thread.join(timeout=duration_s + 5)
        if errors:
            raise errors[0]
        assert client.returncode == 0, f"iperf3 client failed: {err or out}"
        server_out, server_err = server.communicate(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    report = json.loads(server_out)
    return [(iv["sum"]["end"], iv["sum"]["bits_per_second"]) for iv in report["intervals"]]


def mean_rate(intervals: list[tuple[float, float]], start_s: float, end_s: float) -> float:
    chosen = [bps for end, bps in intervals if start_s < end <= end_s]
    assert chosen, f"no receiver interval ends in ({start_s}, {end_s}]: {intervals}"
    return sum(chosen) / len(chosen)


@pytest.mark.parametrize("rate_qdisc", ["htb", "tbf"])
def test_rate_is_achieved_and_changed_in_place(pair: Pair, rate_qdisc: str):
    caps = probe_capabilities()
    if not caps.has(rate_qdisc):
        pytest.skip(f"kernel lacks {rate_qdisc}: {caps.reason(rate_qdisc)}")
    seen: dict[str, Any] = {}
    with KernelShaper(caps, rate_qdisc=rate_qdisc) as shaper:
        shaper.add_direction("s-r", pair.sender_if, pair.sender_ns,
                             LinkState(20_000_000, queue_limit_packets=100))

        def change_at_3s(start: float) -> None:
            time.sleep(max(0.0, start + 3.0 - time.monotonic()))
            seen["before"] = pair.qdiscs()
            shaper.apply("s-r", LinkState(5_000_000, queue_limit_packets=100))
            seen["after"] = pair.qdiscs()

        intervals = receiver_intervals(pair, duration_s=6, during=change_at_3s)
    assert pair.qdiscs() == [], "close() must remove the qdiscs it created"

    fast = mean_rate(intervals, 1.0, 2.5)  # settled, before the change
    slow = mean_rate(intervals, 4.0, 6.0)  # settled, after it
    print(f"{rate_qdisc}: receiver {fast / 1e6:.2f} Mbit/s at 20, {slow / 1e6:.2f} at 5")
    for label, measured, rate_bps in (("before", fast, 20e6), ("after", slow, 5e6)):
        expected = rate_bps * GOODPUT_PER_WIRE
        assert abs(measured - expected) <= 0.10 * expected, (
            f"{rate_qdisc} {label}: receiver measured {measured / 1e6:.2f} Mbit/s, expected "
            f"{expected / 1e6:.2f} ± 10 % (programmed {rate_bps / 1e6:.0f} Mbit/s)"
        )
    # in place: same handles, and the counters kept counting (a re-created qdisc starts at 0)
    before = {q["handle"]: q for q in seen["before"]}
    after = {q["handle"]: q for q in seen["after"]}
    assert set(before) == set(after) == {"1:", "10:"}
    assert before["1:"]["kind"] == after["1:"]["kind"] == rate_qdisc
    assert before["1:"]["bytes"] > 1_000_000
    assert after["1:"]["bytes"] >= before["1:"]["bytes"]
    assert after["10:"]["bytes"] >= before["10:"]["bytes"]


def test_tbf_keeps_pfifo_limit_across_rate_changes(pair: Pair):
    """tbf hands its limit to a fifo child on every change; the child must keep ours."""
    with KernelShaper(probe_capabilities(), rate_qdisc="tbf") as shaper:
        shaper.add_direction("s-r", pair.sender_if, pair.sender_ns,
                             LinkState(20_000_000, queue_limit_packets=37))
        shaper.apply("s-r", LinkState(7_000_000, queue_limit_packets=37))
        shaper.apply("s-r", LinkState(7_000_000, queue_limit_packets=12))
        qdiscs = {q["kind"]: q for q in pair.qdiscs()}
        assert qdiscs["tbf"]["options"]["rate"] == 7_000_000 // 8
        assert qdiscs["pfifo"]["options"]["limit"] == 12
        shaper.apply("s-r", LinkState(9_000_000, queue_limit_packets=12))
        assert {q["kind"]: q for q in pair.qdiscs()}["pfifo"]["options"]["limit"] == 12


def _ping_received(pair: Pair, count: int = 4) -> int:
    out = pair.run(pair.sender_ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.1", "-W", "1",
                   RECEIVER_IP, check=False)
    for line in out.stdout.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    raise AssertionError(f"unexpected ping output: {out.stdout}{out.stderr}")


@pytest.mark.parametrize("rate_qdisc", ["htb", "tbf"])
def test_rate_zero_drops_everything_and_recovers(pair: Pair, rate_qdisc: str):
    with KernelShaper(probe_capabilities(), rate_qdisc=rate_qdisc) as shaper:
        shaper.add_direction("s-r", pair.sender_if, pair.sender_ns, LinkState(1_000_000))
        assert _ping_received(pair) == 4
        shaper.apply("s-r", LinkState(0))
        assert _ping_received(pair) == 0
        shaper.apply("s-r", LinkState(1_000_000))
        assert _ping_received(pair) == 4


def test_netem_refused_here_with_precise_message(pair: Pair):
    caps = probe_capabilities()
    if caps.netem:
        pytest.skip("this kernel has netem: the refusal path is not reachable")
    with KernelShaper(caps) as shaper:
        with pytest.raises(UnsupportedError) as err:
            shaper.add_direction("s-r", pair.sender_if, pair.sender_ns,
                                 LinkState(20_000_000, delay_us=25_000, name="s3-gs1"))
        assert str(err.value) == (
            "link 's3-gs1', direction 's-r': delay_us=25000 needs the netem qdisc, which this "
            "kernel lacks (kernel refused qdisc kind 'netem': ENOENT (No such file or "
            "directory)); the kernel shaper can only apply rate and queue limit here; use the "
            "userspace shaper (netem.shapers.UserspaceShaper) for delay, jitter and loss"
        )
        assert pair.qdiscs() == []  # refused before anything was created


def test_netem_delay_is_really_applied(pair: Pair):
    """On kernels with netem (the lab's): programmed one-way delay shows in ping RTT."""
    caps = probe_capabilities()
    if not caps.netem:
        pytest.skip(f"kernel lacks netem ({caps.reason('netem')}); covered by request tests")
    with KernelShaper(caps) as shaper:
        shaper.add_direction("s-r", pair.sender_if, pair.sender_ns,
                             LinkState(50_000_000, delay_us=30_000))
        out = pair.run(pair.sender_ns, "ping", "-n", "-c", "5", "-i", "0.2", RECEIVER_IP)
        rtt_avg_ms = float(out.stdout.rsplit("=", 1)[1].split("/")[1])
        assert 29.0 <= rtt_avg_ms <= 40.0  # one shaped direction: RTT ≈ 30 ms + veth


def test_existing_root_qdisc_is_left_alone(pair: Pair):
    pair.run(pair.sender_ns, "tc", "qdisc", "add", "dev", pair.sender_if, "root", "handle",
             "5:", "pfifo", "limit", "7")
    with KernelShaper(probe_capabilities()) as shaper:
        with pytest.raises(NetemError, match="already has a root qdisc"):
            shaper.add_direction("s-r", pair.sender_if, pair.sender_ns, LinkState(1_000_000))
    assert [(q["kind"], q["handle"]) for q in pair.qdiscs()] == [("pfifo", "5:")]


def test_directions_in_two_namespaces_one_shaper(pair: Pair):
    with IPRoute(netns=pair.receiver_ns, flags=0) as ipr:
        assert ipr.link_lookup(ifname=pair.receiver_if)
    with KernelShaper(probe_capabilities()) as shaper:
        shaper.add_direction("up", pair.sender_if, pair.sender_ns, LinkState(10_000_000))
        shaper.add_direction("down", pair.receiver_if, pair.receiver_ns, LinkState(10_000_000))
        shaper.apply_many({"up": LinkState(3_000_000), "down": LinkState(4_000_000)})
        # iproute2 has no JSON for htb classes: read its text
        rx = pair.run(pair.receiver_ns, "tc", "class", "show", "dev", pair.receiver_if)
        tx = pair.run(pair.sender_ns, "tc", "class", "show", "dev", pair.sender_if)
        assert "rate 4Mbit ceil 4Mbit" in rx.stdout
        assert "rate 3Mbit ceil 3Mbit" in tx.stdout


def test_kernel_error_is_attributed_to_its_direction_and_close_tolerates_gone_links(pair: Pair):
    """A batch where one request fails for real (its interface vanished): the other
    direction's change is applied, the error names the failed one with the kernel's errno."""
    extra_a, extra_b = f"{pair.sender_if}x", f"{pair.sender_if}y"
    with IPRoute(netns=pair.sender_ns, flags=0) as ipr:
        ipr.link("add", ifname=extra_a, kind="veth", peer={"ifname": extra_b})
    with KernelShaper(probe_capabilities()) as shaper:
        shaper.add_direction("kept", pair.sender_if, pair.sender_ns, LinkState(10_000_000))
        shaper.add_direction("gone", extra_a, pair.sender_ns, LinkState(10_000_000))
        pair.run(pair.sender_ns, "ip", "link", "del", extra_a)
        with pytest.raises(NetemError, match=r"gone: change class htb 1:1 .*ENODEV"):
            shaper.apply_many({"gone": LinkState(2_000_000), "kept": LinkState(3_000_000)})
        out = pair.run(pair.sender_ns, "tc", "class", "show", "dev", pair.sender_if)
        assert "rate 3Mbit ceil 3Mbit" in out.stdout
        assert shaper.current("kept").rate_bps == 3_000_000
        assert shaper.current("gone").rate_bps == 10_000_000
    assert pair.qdiscs() == []  # close() succeeded although one interface was gone
