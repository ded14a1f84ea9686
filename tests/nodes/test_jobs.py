"""The job API end to end over real HTTP on loopback: two in-process agents with data IPs
127.0.0.2 and 127.0.0.3 run a message-exchange, several jobs at once, files, cancel, errors."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nodes import client
from nodes.errors import AgentApiError, JobTimeoutError
from nodes.workloads import RESULT_KEYS, Role
from tests.nodes.conftest import REPO_ROOT, InProcessAgent

TOKEN = "test-token-0123456789abcdef"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def loopback_pair(inproc_agents: Callable[..., InProcessAgent]
                  ) -> tuple[InProcessAgent, InProcessAgent]:
    """sat1 (127.0.0.2) and gs (127.0.0.3) with the run context pushed to both."""
    port = free_port()
    sat = inproc_agents("sat1", Role.SATELLITE, data_ip="127.0.0.2", token=TOKEN)
    gs = inproc_agents("gs", Role.GROUND, data_ip="127.0.0.3", token=TOKEN)
    peers = {"sat1": "127.0.0.2", "gs": "127.0.0.3"}
    for a in (sat, gs):
        ctx = {"node": a.agent.name, "peers": peers, "data_port": port,
               "scenario_start_unix_s": time.time(), "speed": 1.0,
               "contacts": [{"peer": "gs", "start_s": 0.0, "end_s": 3600.0}]}
        assert client.push_context(a.mgmt, ctx, token=TOKEN)["data_port"] == port
    assert client.health(sat.mgmt)["data_listen"] == f"127.0.0.2:{port}"
    return sat, gs


def test_message_exchange_between_two_agents(inproc_agents: Callable[..., InProcessAgent],
                                             tmp_path: Path) -> None:
    sat, gs = loopback_pair(inproc_agents)
    echo = client.submit_job(gs.mgmt, "message-exchange", {"mode": "echo", "count": 20},
                             job_id="echo-1", token=TOKEN)
    assert (echo["id"], echo["kind"], echo["state"]) == ("echo-1", "message-exchange",
                                                         "running")
    sent = client.submit_job(sat.mgmt, "message-exchange",
                             {"mode": "send", "peer": "gs", "count": 20, "size_bytes": 200_000,
                              "wait_contact": True}, token=TOKEN)
    assert sent["id"] == "message-exchange-1" and sent["submitted_utc"]
    res = client.wait_job(sat.mgmt, str(sent["id"]), timeout_s=30, token=TOKEN)
    echo_res = client.wait_job(gs.mgmt, "echo-1", timeout_s=10, token=TOKEN)
    assert tuple(res) == tuple(echo_res) == RESULT_KEYS
    assert res["state"] == echo_res["state"] == "finished", (res["error"], echo_res["error"])
    summary = res["summary"]
    assert summary["messages"] == 20 and summary["bytes"] == 20 * 200_000  # type: ignore
    assert echo_res["summary"]["messages"] == 20  # type: ignore[index]
    events = res["events"]
    assert [e["seq"] for e in events] == list(range(20))  # type: ignore
    for e in events:  # type: ignore[attr-defined]
        # one host, one clock: send <= peer arrival <= ack back; the echo left after the
        # arrival (it may overtake the ack: two connections)
        assert e["t_send_unix_ns"] <= e["t_peer_recv_unix_ns"] <= e["t_acked_unix_ns"]
        assert e["t_peer_recv_unix_ns"] <= e["t_reply_recv_unix_ns"]
        assert 0 < e["one_way_s"] <= e["rtt_s"] < 5
    assert 0 < summary["rtt_s"]["p50"] <= summary["rtt_s"]["max"]  # type: ignore[index]
    info = client.job(sat.mgmt, str(sent["id"]), token=TOKEN)
    assert info["progress"] == {"done": 20, "total": 20, "unit": "messages"}
    assert info["started_utc"] and info["ended_utc"] and not info["cancelled"]

    [listed] = client.job_files(sat.mgmt, str(sent["id"]), token=TOKEN)
    assert listed["name"] == "messages.csv"
    dest = tmp_path / "got.csv"
    n = client.fetch_job_file(sat.mgmt, str(sent["id"]), "messages.csv", dest, token=TOKEN)
    assert n == listed["size_bytes"] == dest.stat().st_size
    rows = dest.read_text().splitlines()
    assert rows[0].startswith("seq,bytes,t_send_unix_ns") and len(rows) == 21
    # the results file lists every job
    doc = (tmp_path / "sat1" / "sat1.json").read_text()
    assert '"message-exchange-1"' in doc


def test_jobs_run_at_once_and_cancel(inproc_agents: Callable[..., InProcessAgent]) -> None:
    sat, gs = loopback_pair(inproc_agents)
    a = client.submit_job(gs.mgmt, "message-exchange", {"mode": "echo", "topic": "a"},
                          token=TOKEN)
    b = client.submit_job(gs.mgmt, "message-exchange", {"mode": "echo", "topic": "b"},
                          token=TOKEN)
    states = {j["id"]: j["state"] for j in client.jobs(gs.mgmt, token=TOKEN)}
    assert states == {a["id"]: "running", b["id"]: "running"}
    assert client.health(gs.mgmt)["jobs_running"] == 2
    running = gs.agent.metrics.value("leo_node_workload_running", kind="message-exchange")
    assert running == 2
    with pytest.raises(JobTimeoutError, match="still running"):
        client.wait_job(gs.mgmt, str(a["id"]), timeout_s=0.3, token=TOKEN)
    # a sender on topic b is served by the b echo while a keeps running
    done = client.submit_job(sat.mgmt, "message-exchange",
                             {"mode": "send", "peer": "gs", "count": 3, "topic": "b"},
                             token=TOKEN)
    assert client.wait_job(sat.mgmt, str(done["id"]), 10, token=TOKEN)["state"] == "finished"
    cancelled = client.cancel_job(gs.mgmt, str(a["id"]), token=TOKEN)
    assert cancelled["state"] == "stopped" and cancelled["cancelled"] is True
    with pytest.raises(AgentApiError) as info:
        client.cancel_job(gs.mgmt, str(a["id"]), token=TOKEN)
    assert (info.value.status, info.value.error) == (409, "JobStateError")
    # the echo counts a message once its reply was acked, which may be just after the sender
    # has the reply in hand
    deadline = time.monotonic() + 5
    while (done_b := client.job(gs.mgmt, str(b["id"]), token=TOKEN)["progress"]["done"]) < 3 \
            and time.monotonic() < deadline:  # type: ignore[index]
        time.sleep(0.01)
    assert done_b == 3
    running = gs.agent.metrics.value("leo_node_workload_running", kind="message-exchange")
    assert running == 1
    with pytest.raises(AgentApiError) as info:
        client.submit_job(gs.mgmt, "message-exchange", {"mode": "echo"}, job_id=str(b["id"]),
                          token=TOKEN)
    assert (info.value.status, info.value.error) == (409, "JobStateError")
    assert "taken" in info.value.message


def test_job_errors(inproc_agents: Callable[..., InProcessAgent], tmp_path: Path) -> None:
    sat, gs = loopback_pair(inproc_agents)
    with pytest.raises(AgentApiError) as info:
        client.job(sat.mgmt, "nope", token=TOKEN)
    assert (info.value.status, info.value.error) == (404, "UnknownJobError")
    for options, match in (({"mode": "send", "peer": "mars"}, "peer='mars', expected one of: "
                            "gs, sat1"),
                           ({"mode": "fly"}, "mode='fly'"),
                           ({"mode": "send", "peer": "gs", "size_bytes": 4}, "size_bytes=4")):
        with pytest.raises(AgentApiError, match=match) as info:
            client.submit_job(sat.mgmt, "message-exchange", options, token=TOKEN)
        assert (info.value.status, info.value.error) == (400, "WorkloadOptionsError")
    with pytest.raises(AgentApiError,
                       match="choose: dlrc, downlink-files, message-exchange") as info:
        client.submit_job(sat.mgmt, "message_exchange", {}, token=TOKEN)
    assert info.value.status == 400
    with pytest.raises(AgentApiError, match="job id '../x'") as info:
        client.submit_job(sat.mgmt, "message-exchange", {"mode": "echo"}, job_id="../x",
                          token=TOKEN)
    assert info.value.status == 400
    with pytest.raises(AgentApiError, match="context field speed=0") as info:
        client.push_context(sat.mgmt, {"node": "sat1", "peers": {}, "speed": 0}, token=TOKEN)
    assert info.value.status == 400
    with pytest.raises(AgentApiError, match="expected this agent's name 'sat1'"):
        client.push_context(sat.mgmt, {"node": "gs", "peers": {}}, token=TOKEN)


def test_job_files_refuse_path_traversal(inproc_agents: Callable[..., InProcessAgent],
                                         tmp_path: Path) -> None:
    sat, gs = loopback_pair(inproc_agents)
    job = client.submit_job(gs.mgmt, "message-exchange", {"mode": "echo"}, job_id="e",
                            token=TOKEN)
    client.cancel_job(gs.mgmt, "e", token=TOKEN)
    secret = tmp_path / "gs" / "secret.txt"
    secret.write_text("not yours")
    out = tmp_path / "gs" / "jobs" / "gs" / str(job["id"])
    (out / "sub").mkdir()
    (out / "sub" / "ok.txt").write_text("fine")
    (out / "link.txt").symlink_to(secret)
    names = [f["name"] for f in client.job_files(gs.mgmt, "e", token=TOKEN)]
    assert names == ["messages.csv", "sub/ok.txt"]  # the symlink is not listed
    assert client.fetch_job_file(gs.mgmt, "e", "sub/ok.txt", tmp_path / "ok", token=TOKEN) == 4
    for name in ("../secret.txt", "sub/../../secret.txt", "link.txt", "/etc/passwd"):
        with pytest.raises(AgentApiError) as info:
            client.fetch_job_file(gs.mgmt, "e", name, tmp_path / "x", token=TOKEN)
        assert (info.value.status, info.value.error) == (400, "JobFileError"), name
        assert not (tmp_path / "x").exists()
    # percent-encoded dots, sent raw (the client would quote the '%')
    conn = http.client.HTTPConnection(*gs.mgmt.split(":"), timeout=5)
    try:
        conn.request("GET", "/jobs/e/files/%2e%2e/secret.txt",
                     headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        assert resp.status == 400 and b"not yours" not in resp.read()
    finally:
        conn.close()
    with pytest.raises(AgentApiError, match="no file 'none.txt'") as info:
        client.fetch_job_file(gs.mgmt, "e", "none.txt", tmp_path / "x", token=TOKEN)
    assert info.value.status == 404


def test_registry_is_lazy() -> None:
    """Listing kinds imports no workload module; creating a job imports only its own."""
    code = ("import sys, nodes.workloads as w, nodes.agent; kinds = w.workload_kinds(); "
            "mods = [m for m in sys.modules if m.startswith('nodes.workloads.')]; "
            "w.workload_class('message-exchange'); "
            "after = [m for m in sys.modules if m.startswith('nodes.workloads.')]; "
            "print(kinds, sorted(mods), sorted(after))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=30, check=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO_ROOT))).stdout.strip()
    assert out == ("['dlrc', 'downlink-files', 'message-exchange', 'skymoe-serve', 'spaceverse'] "
                   "['nodes.workloads.base', 'nodes.workloads.registry'] "
                   "['nodes.workloads.base', 'nodes.workloads.message_exchange', "
                   "'nodes.workloads.options', 'nodes.workloads.registry']")
