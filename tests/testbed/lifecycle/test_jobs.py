"""Jobs on a running testbed: `testbed up` starts the network, `testbed job` starts agents on
demand, pushes them their context and runs a job whose messages really cross a shaped ISL;
the agents refuse requests without the run's token; nothing is left afterwards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from nodes import client
from nodes.errors import AgentAuthError
from testbed.cli.main import main
from testbed.lifecycle.control import request
from testbed.lifecycle.network import run_prefix
from testbed.scenario import load_scenario
from testbed.workloads.pool import AGENT_PORT, read_token

from .conftest import leftovers, running_testbed, wait_until

pytestmark = [pytest.mark.root, pytest.mark.ovs]

SENDER, ECHO = "walker-p0-s0", "walker-p0-s1"  # neighbours in a plane: one ISL apart



def test_job_runs_on_demand_agents_across_a_shaped_isl(small_scenario, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    path = small_scenario(duration=300, speed=1.0)
    prefix = run_prefix(load_scenario(path).name)
    with running_testbed(path, tmp_path / "up.log") as run_dir:
        token = read_token(run_dir)
        assert oct((run_dir / "agent.token").stat().st_mode & 0o777) == "0o600"
        live = request(run_dir / "control.sock", {"op": "status"})
        link = live["links"].get(f"{SENDER}--{ECHO}") or live["links"][f"{ECHO}--{SENDER}"]
        assert link["up"] and link["kind"] == "isl"
        isl_delay_s = link["delay_us"] / 1e6

        # the echo side first, without waiting; then the sender, waiting and fetching its CSV
        assert main(["job", str(run_dir), ECHO, "message-exchange", "--set", "mode=echo",
                     "--set", "count=5", "--no-wait"]) == 0
        out = tmp_path / "out"
        assert main(["job", str(run_dir), SENDER, "message-exchange", "--options",
                     json.dumps({"mode": "send", "peer": ECHO, "count": 5,
                                 "size_bytes": 20_000}), "--fetch", str(out)]) == 0
        printed = capsys.readouterr().out
        assert '"state": "finished"' in printed
        with (out / "messages.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 5
        rtts = sorted(float(r["rtt_s"]) for r in rows)
        # each message crossed the ISL and came back: at least twice its programmed delay.
        # Each way is one TCP connection: handshake (2 one-way delays), 20 kB in at most two
        # slow-start rounds (4), the receiver's acknowledgement (1): about 7 one-way delays
        # each way, 14 for the round trip, plus transmission and OVS crossings
        assert rtts[0] >= 2 * isl_delay_s, (rtts, isl_delay_s)
        assert rtts[len(rtts) // 2] < 16 * isl_delay_s + 0.05, (rtts, isl_delay_s)

        state = json.loads((run_dir / "state.json").read_text())
        mgmt = {n["name"]: n["mgmt_ip"] for n in state["plan"]["nodes"]}
        addr = f"{mgmt[SENDER]}:{AGENT_PORT}"
        assert client.health(addr)["name"] == SENDER  # /health needs no token
        with pytest.raises(AgentAuthError):
            client.jobs(addr)  # everything else does
        with pytest.raises(AgentAuthError):
            client.jobs(addr, token="x" * 43)
        assert len(client.jobs(addr, token=token)) == 1
        # only the two nodes that got a job have an agent (on demand)
        assert wait_until(lambda: len([n for n in mgmt if _answers(mgmt[n])]) == 2, 5, "agents")
    assert leftovers(prefix) == {"netns": [], "links": [], "bridges": []}


def _answers(mgmt_ip: str) -> bool:
    try:
        client.health(f"{mgmt_ip}:{AGENT_PORT}", timeout_s=0.3)
    except client.AgentUnreachableError:
        return False
    return True
