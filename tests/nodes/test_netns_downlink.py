"""Root only: agents in two real namespaces joined by a veth with a 20 Mbit/s tbf, as a
satellite and its ground station. Checks goodput against the programmed rate, and that a link
cut (device down: no route) is ridden out by retries with every file delivered once."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodes import client
from tests.conftest import require_binary, require_root
from tests.nodes.conftest import AgentProcess

pytestmark = pytest.mark.root

RATE_BPS = 20_000_000
PORT = 7000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Pair:
    sat_ns: str
    gs_ns: str
    sat_if: str
    sat_data_ip: str
    gs_data_ip: str
    sat_mgmt_ip: str
    gs_mgmt_ip: str


@pytest.fixture
def pair(unique_prefix: str) -> Iterator[Pair]:
    """Namespaces <p>sat and <p>gs: data veth 10.R.0.0/24 (tbf on the satellite's egress),
    and a management veth from the host into each (unshaped). Deleted in teardown."""
    require_root()
    require_binary("ip", "tc")
    p = unique_prefix
    r = random.randint(100, 250)
    pair = Pair(sat_ns=f"{p}sat", gs_ns=f"{p}gs", sat_if=f"{p}ds", sat_data_ip=f"10.{r}.0.2",
                gs_data_ip=f"10.{r}.0.1", sat_mgmt_ip=f"10.{r}.1.2", gs_mgmt_ip=f"10.{r}.2.2")
    created: list[str] = []
    host_links: list[str] = []
    try:
        for ns in (pair.sat_ns, pair.gs_ns):
            ip("netns", "add", ns)
            created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", pair.sat_if, "netns", pair.sat_ns, "type", "veth", "peer", "name",
           f"{p}dg", "netns", pair.gs_ns)
        for ns, ifname, addr in ((pair.sat_ns, pair.sat_if, pair.sat_data_ip),
                                 (pair.gs_ns, f"{p}dg", pair.gs_data_ip)):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
            ip("-n", ns, "link", "set", ifname, "up")
        for ns, tag, subnet in ((pair.sat_ns, "ms", 1), (pair.gs_ns, "mg", 2)):
            host_if, ns_if = f"{p}{tag}h", f"{p}{tag}n"
            ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
            host_links.append(host_if)
            ip("addr", "add", f"10.{r}.{subnet}.1/24", "dev", host_if)
            ip("link", "set", host_if, "up")
            ip("-n", ns, "addr", "add", f"10.{r}.{subnet}.2/24", "dev", ns_if)
            ip("-n", ns, "link", "set", ns_if, "up")
        subprocess.run(["ip", "netns", "exec", pair.sat_ns, "tc", "qdisc", "add", "dev",
                        pair.sat_if, "root", "tbf", "rate", f"{RATE_BPS}bit", "burst", "20kb",
                        "latency", "50ms"], check=True, capture_output=True, timeout=10)
        yield pair
    finally:
        for link in host_links:  # namespace teardown is asynchronous: delete host ends now
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=10)
        for ns in created:  # deleting a namespace deletes its veth ends
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
    left = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                          timeout=10).stdout
    assert p not in left, f"links with prefix {p} left behind"


def start_pair(pair: Pair, agent_factory: Callable[..., AgentProcess],
               tmp_path: Path) -> tuple[AgentProcess, AgentProcess]:
    gs = agent_factory("--name", "gs", "--role", "ground", "--mgmt-listen",
                       f"{pair.gs_mgmt_ip}:0", "--data-ip", pair.gs_data_ip,
                       "--results", str(tmp_path), "--insecure-no-token",
                       prefix=["ip", "netns", "exec", pair.gs_ns])
    sat = agent_factory("--name", "sat1", "--role", "satellite", "--mgmt-listen",
                        f"{pair.sat_mgmt_ip}:0", "--data-ip", pair.sat_data_ip,
                        "--results", str(tmp_path), "--insecure-no-token",
                        prefix=["ip", "netns", "exec", pair.sat_ns])
    for agent in (gs, sat):
        client.wait_healthy(agent.mgmt, timeout_s=10)
    client.start_workload(gs.mgmt, "downlink-files", {"ground_port": PORT})
    return gs, sat


def wait_state(addr: str, timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        res = client.results(addr, events=False)
        if res["state"] != "running":
            return res
        time.sleep(0.1)
    raise AssertionError(f"workload on {addr} still running after {timeout_s} s")


def test_goodput_follows_the_shaped_rate(pair: Pair, agent_factory: Callable[..., AgentProcess],
                                         images_dir: Path, tmp_path: Path) -> None:
    gs, sat = start_pair(pair, agent_factory, tmp_path)
    client.start_workload(sat.mgmt, "downlink-files", {
        "source": str(images_dir), "ground_ip": pair.gs_data_ip, "ground_port": PORT,
        "duration_s": 30})
    res = wait_state(sat.mgmt, 30)
    summary = res["summary"]
    total = sum(p.stat().st_size for p in images_dir.glob("*.png"))
    assert res["state"] == "finished" and summary["bytes_delivered"] == total  # type: ignore
    goodput = float(summary["goodput_connected_bps"])  # type: ignore[index]
    print(f"\n20 Mbit/s tbf: {total} B in {summary['connected_s']:.2f} s connected, "  # type: ignore
          f"goodput {goodput / 1e6:.2f} Mbit/s")
    # payload goodput sits just under the L3 rate tbf enforces (TCP/IP headers ~3.5 %)
    assert 0.80 * RATE_BPS < goodput < 1.0 * RATE_BPS
    gs_res = client.stop_workload(gs.mgmt)
    assert gs_res["summary"]["senders"]["sat1"]["bytes_received"] == total  # type: ignore


def test_link_cut_is_ridden_out_by_retries(pair: Pair,
                                           agent_factory: Callable[..., AgentProcess],
                                           images_dir: Path, tmp_path: Path) -> None:
    gs, sat = start_pair(pair, agent_factory, tmp_path)
    client.start_workload(sat.mgmt, "downlink-files", {
        "source": str(images_dir), "ground_ip": pair.gs_data_ip, "ground_port": PORT,
        "duration_s": 30, "io_timeout_s": 0.5, "backoff_max_s": 0.4})
    cut_s = 1.5
    time.sleep(0.5)  # about a quarter of the files are through
    ip("-n", pair.sat_ns, "link", "set", pair.sat_if, "down")  # no route to the ground
    during = client.results(sat.mgmt, events=False)["summary"]
    timer = threading.Timer(cut_s, ip, args=("-n", pair.sat_ns, "link", "set", pair.sat_if, "up"))
    timer.start()
    try:
        res = wait_state(sat.mgmt, 30)
    finally:
        timer.join()
    summary = res["summary"]
    n = len(list(images_dir.glob("*.png")))
    assert res["state"] == "finished"
    assert summary["files_delivered"] == n  # type: ignore[index]
    assert 0 < during["files_delivered"] < n  # type: ignore[index,operator]
    assert summary["retries"] >= 1 and float(res["elapsed_s"]) > cut_s  # type: ignore[arg-type]
    print(f"\nlink cut {cut_s} s: {summary['files_delivered']} files, retries "  # type: ignore
          f"{summary['retries']}, errors {summary['errors']}, elapsed "  # type: ignore
          f"{res['elapsed_s']:.2f} s")
    gs_summary = client.stop_workload(gs.mgmt)["summary"]
    tally = gs_summary["senders"]["sat1"]  # type: ignore[index]
    assert tally["files_received"] == n  # each file counted once, despite resends
    for agent in (sat, gs):
        assert agent.terminate() == 0, agent.stderr()
