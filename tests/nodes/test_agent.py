"""Agent processes on loopback: the management API end to end, SIGTERM, nothing left behind."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from nodes import client
from nodes.errors import AgentApiError, AgentUnreachableError
from nodes.workloads import RESULT_KEYS
from tests.nodes.conftest import REPO_ROOT, AgentProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value, parsed from the exposition text (0 when absent)."""
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_agent_api_end_to_end(agent_factory: Callable[..., AgentProcess], images_dir: Path,
                              tmp_path: Path, token_file: tuple[Path, str]) -> None:
    """The old one-workload endpoints, now aliases onto jobs, with the run's token."""
    port = free_port()
    path, tok = token_file
    gs = agent_factory("--name", "gs", "--role", "ground", "--mgmt-listen", "127.0.0.1:0",
                       "--data-ip", "127.0.0.1", "--results", str(tmp_path / "gs"),
                       "--token-file", str(path))
    sat = agent_factory("--name", "sat1", "--role", "satellite", "--mgmt-listen",
                        "127.0.0.1:0", "--data-ip", "127.0.0.1", "--results",
                        str(tmp_path / "sat1"), "--token-file", str(path))
    for agent, role in ((gs, "ground"), (sat, "satellite")):
        h = client.wait_healthy(agent.mgmt, timeout_s=10, token=tok)
        assert (h["role"], h["workload"], h["pid"]) == (role, None, agent.proc.pid)
        assert float(h["uptime_s"]) >= 0  # type: ignore[arg-type]

    with pytest.raises(AgentApiError) as info:
        client.results(sat.mgmt, token=tok)
    assert (info.value.status, info.value.error) == (409, "WorkloadStateError")
    with pytest.raises(AgentApiError, match="choose: dlrc, downlink-files") as info:
        client.start_workload(sat.mgmt, "downlink_files", {}, token=tok)
    assert info.value.status == 400 and info.value.error == "UnknownWorkloadError"
    with pytest.raises(AgentApiError, match="unknown option") as info:
        client.start_workload(sat.mgmt, "downlink-files", {"source": str(images_dir),
                                                           "ground_ip": "127.0.0.1", "x": 1},
                              token=tok)
    assert info.value.status == 400

    options = {"source": str(images_dir), "ground_ip": "127.0.0.1", "ground_port": port,
               "loops": 0, "duration_s": 20}  # repeat until stopped: metrics keep moving
    started = client.start_workload(gs.mgmt, "downlink-files", options, token=tok)
    assert started["state"] == "running"
    before = client.metrics(sat.mgmt, token=tok)
    started = client.start_workload(sat.mgmt, "downlink-files", options, token=tok)
    assert started["state"] == "running"
    with pytest.raises(AgentApiError) as info:
        client.start_workload(sat.mgmt, "downlink-files", options, token=tok)
    assert info.value.status == 409

    peer = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = client.metrics(sat.mgmt, token=tok)
        if metric(after, "leo_node_files_delivered_total", peer=peer) >= 60:
            break
        time.sleep(0.05)
    assert metric(before, "leo_node_files_delivered_total", peer=peer) == 0
    assert metric(after, "leo_node_files_delivered_total", peer=peer) >= 60
    assert metric(after, "leo_node_workload_running", kind="downlink-files") == 1
    assert metric(after, "leo_node_info", node="sat1", role="satellite") == 1
    assert client.health(sat.mgmt, token=tok)["workload"] == {"kind": "downlink-files",
                                                   "state": "running"}

    stopped = client.stop_workload(sat.mgmt, token=tok)
    assert stopped["state"] == "stopped" and stopped["events"] == []
    assert client.stop_workload(sat.mgmt, token=tok)["state"] == "stopped"  # idempotent
    sat_res = client.results(sat.mgmt, token=tok)
    gs_summary = client.results(gs.mgmt, events=False, token=tok)["summary"]
    assert tuple(sat_res) == RESULT_KEYS
    summary = sat_res["summary"]
    delivered = summary["files_delivered"]  # type: ignore[index]
    assert delivered >= 60
    assert len([e for e in sat_res["events"] if e["status"] == "delivered"]) == delivered  # type: ignore
    # the ground counted at least every file the satellite saw acked (acks can be in flight)
    received = gs_summary["senders"]["sat1"]["files_received"]  # type: ignore[index]
    assert delivered <= received <= delivered + 9
    final_metrics = client.metrics(sat.mgmt, token=tok)
    assert metric(final_metrics, "leo_node_bytes_delivered_total", peer=peer) == \
        summary["bytes_delivered"]  # type: ignore[index]

    for agent in (sat, gs):
        pid = agent.proc.pid
        assert agent.terminate() == 0, agent.stderr()
        assert not pid_alive(pid)
        with pytest.raises(AgentUnreachableError):
            client.health(agent.mgmt, timeout_s=0.5, token=tok)
    doc = json.loads((tmp_path / "sat1" / "sat1.json").read_text())
    assert doc["node"] == "sat1" and [w["state"] for w in doc["workloads"]] == ["stopped"]
    assert doc["workloads"][0]["summary"]["files_delivered"] == delivered
    gs_doc = json.loads((tmp_path / "gs" / "gs.json").read_text())
    assert gs_doc["workloads"][0]["summary"]["senders"]["sat1"]["files_received"] == received
    assert tuple(gs_doc["workloads"][0]) == RESULT_KEYS


def test_sigterm_mid_workload_writes_results_and_exits_zero(
        agent_factory: Callable[..., AgentProcess], images_dir: Path, tmp_path: Path) -> None:
    sat = agent_factory("--name", "sat2", "--role", "satellite", "--mgmt-listen",
                        "127.0.0.1:0", "--results", str(tmp_path), "--insecure-no-token")
    client.wait_healthy(sat.mgmt, timeout_s=10)
    client.start_workload(sat.mgmt, "downlink-files", {
        "source": str(images_dir), "ground_ip": "127.0.0.1", "ground_port": free_port(),
        "backoff_max_s": 0.2})  # nobody listens: the sender keeps retrying
    time.sleep(0.5)
    t0 = time.monotonic()
    assert sat.terminate() == 0, sat.stderr()
    assert time.monotonic() - t0 < 5
    doc = json.loads((tmp_path / "sat2.json").read_text())
    [w] = doc["workloads"]
    assert w["state"] == "stopped" and w["ended_utc"] is not None
    assert w["summary"]["connect_failures"] >= 2 and w["summary"]["files_delivered"] == 0


def test_http_errors_are_json(agent_factory: Callable[..., AgentProcess]) -> None:
    sat = agent_factory("--name", "sat3", "--role", "satellite", "--mgmt-listen", "127.0.0.1:0",
                        "--insecure-no-token")
    client.wait_healthy(sat.mgmt, timeout_s=10)
    for method, path, body, status in (("GET", "/nope", None, 404),
                                       ("GET", "/workload/start", None, 405),
                                       ("POST", "/workload/start", b"[1]", 400),
                                       ("POST", "/workload/start", b"{not json", 400)):
        req = urllib.request.Request(f"http://{sat.mgmt}{path}", data=body, method=method)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        with info.value as resp:
            assert resp.code == status
            assert json.loads(resp.read())["message"]


@pytest.mark.parametrize("args,message", [
    (["--mgmt-listen", "nowhere", "--insecure-no-token"], "address 'nowhere': expected IP:PORT"),
    (["--mgmt-listen", "127.0.0.1:0", "--insecure-no-token", "--name", "../x"],
     "node name '../x'"),
    (["--mgmt-listen", "127.0.0.1:0"], "no --token-file"),
    (["--mgmt-listen", "127.0.0.1:0", "--insecure-no-token", "--token-file", "t"],
     "--token-file and --insecure-no-token: expected one of them"),
])
def test_bad_command_line_exits_2(args: list[str], message: str) -> None:
    argv = ["--name", "s", "--role", "satellite", *args]
    proc = subprocess.run([sys.executable, "-m", "nodes.agent", *argv], capture_output=True,
                          text=True, timeout=20, cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_wait_healthy_times_out_naming_the_address() -> None:
    addr = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(AgentUnreachableError, match=f"{addr}.*not healthy within 0.3 s"):
        client.wait_healthy(addr, timeout_s=0.3)
    assert time.monotonic() - t0 < 1.5
