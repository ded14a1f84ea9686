"""Root only: a message-exchange job between agents in two real namespaces joined by a veth
with a 20 Mbit/s tbf on the satellite's egress, with the run's token and pushed context. The
one-way times must show the programmed rate: 100 kB at 20 Mbit/s takes about 40 ms."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nodes import client
from tests.nodes.conftest import AgentProcess
from tests.nodes.test_netns_downlink import RATE_BPS, Pair, pair  # noqa: F401 -- fixture

pytestmark = pytest.mark.root

SIZE_BYTES = 100_000
TBF_BURST_BYTES = 20 * 1024


def test_message_exchange_across_a_shaped_veth(
        pair: Pair, agent_factory: Callable[..., AgentProcess],  # noqa: F811 -- fixture
        token_file: tuple[Path, str], tmp_path: Path) -> None:
    path, token = token_file
    agents = {}
    for name, role, ns, mgmt_ip, data_ip in (
            ("sat1", "satellite", pair.sat_ns, pair.sat_mgmt_ip, pair.sat_data_ip),
            ("gs", "ground", pair.gs_ns, pair.gs_mgmt_ip, pair.gs_data_ip)):
        agents[name] = agent_factory(
            "--name", name, "--role", role, "--mgmt-listen", f"{mgmt_ip}:0", "--data-ip",
            data_ip, "--results", str(tmp_path / name), "--token-file", str(path),
            prefix=["ip", "netns", "exec", ns])
    peers = {"sat1": pair.sat_data_ip, "gs": pair.gs_data_ip}
    for name, agent in agents.items():
        client.wait_healthy(agent.mgmt, timeout_s=10)
        client.push_context(agent.mgmt, {"node": name, "peers": peers, "data_port": 7100,
                                         "scenario_start_unix_s": time.time(), "speed": 1.0,
                                         "contacts": []}, token=token)
    client.submit_job(agents["gs"].mgmt, "message-exchange", {"mode": "echo", "count": 10},
                      job_id="echo", token=token)
    job = client.submit_job(agents["sat1"].mgmt, "message-exchange",
                            {"mode": "send", "peer": "gs", "count": 10,
                             "size_bytes": SIZE_BYTES}, token=token)
    res = client.wait_job(agents["sat1"].mgmt, str(job["id"]), timeout_s=30, token=token)
    assert res["state"] == "finished", res["error"]
    echo = client.wait_job(agents["gs"].mgmt, "echo", timeout_s=10, token=token)
    assert echo["state"] == "finished" and echo["summary"]["messages"] == 10  # type: ignore

    summary = res["summary"]
    floor_s = (SIZE_BYTES - TBF_BURST_BYTES) * 8 / RATE_BPS  # the tbf bucket lets a burst by
    one_way = summary["one_way_s"]  # type: ignore[index]
    assert floor_s * 0.9 <= one_way["p50"] < 0.5, one_way
    # the echo saw the same arrivals; it comes back unshaped: round trip = one way + a little
    assert echo["summary"]["one_way_s"]["p50"] >= floor_s * 0.9  # type: ignore[index]
    assert one_way["p50"] <= summary["rtt_s"]["p50"] < one_way["p50"] + 0.2  # type: ignore
    back = summary["reply_one_way_s"]["p50"]  # type: ignore[index]
    assert back < floor_s / 4, "the ground's egress is not shaped"
    print(f"one-way p50 {one_way['p50'] * 1e3:.1f} ms (floor {floor_s * 1e3:.1f} ms), "
          f"echo one-way p50 {back * 1e3:.2f} ms")
