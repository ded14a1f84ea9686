"""The remote backend against a real OpenSSH server in a namespace (a stand-in board).

Deploys the agent, runs a workload through its management API, brings the results back, and
checks the typed refusals (wrong key, changed or unknown host key, unreachable host, missing or
too-old Python) and that nothing is left behind: no remote process, no remote folder, no ledger
entry whose undo failed, also after SIGKILL of the process that deployed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodes import client
from nodes.errors import AgentUnreachableError
from nodes.receiver import GroundReceiver
from testbed.backends.base import BackendContext, NodeBackend, NodeBackendError, create_backend
from testbed.backends.remote import RemoteBackend
from testbed.backends.remote_python import RemotePythonError, prepare_wheelhouse
from testbed.backends.remote_ssh import (
    AuthenticationRefusedError,
    HostKeyError,
    HostUnreachableError,
    RemoteCommandError,
    SshTarget,
    connect,
)
from testbed.backends.remote_undo import remove_remote_dir
from testbed.fabric import ensure_ovs_daemon
from testbed.fabric.addressing import AddressPlan, NodeSpec
from testbed.inventory import Inventory
from testbed.ledger import Ledger, LedgerError, teardown
from testbed.sysrun import Runner
from tests.testbed.backends.sshboard import Board, ssh_board, tagged_processes

pytestmark = [pytest.mark.root]

REPO = Path(__file__).resolve().parents[3]
MGMT_PORT = 9100


@pytest.fixture
def board(unique_prefix: str) -> Iterator[Board]:
    with ssh_board(unique_prefix) as b:
        yield b


class Rig:
    """Builds backends on one board and checks, at the end, that nothing is left."""

    def __init__(self, board: Board, tmp_path: Path) -> None:
        self.board, self.tmp_path = board, tmp_path
        self.ledger = Ledger(tmp_path / "ledger.jsonl")
        self.plan = AddressPlan.build(board.netns.rsplit("-", 1)[0], [NodeSpec("sat0")])
        self.backends: list[RemoteBackend] = []

    def backend(self, **host_overrides: Any) -> RemoteBackend:
        inv = Inventory(hosts=[self.board.host(**host_overrides)])
        ctx = BackendContext(Runner(), self.ledger, self.plan, self.tmp_path / "run",
                             self.tmp_path / "cache", {"connect_timeout_s": 3.0}, inv)
        be = create_backend("remote", ctx, attach_fabric=False)
        assert isinstance(be, RemoteBackend)
        self.backends.append(be)
        return be

    def leftovers(self) -> dict[str, Any]:
        tags = {e.details["tag"] for e in self.ledger.entries() if "tag" in e.details}
        return {"folders": sorted(os.listdir(self.board.work_dir)),
                "processes": [p for t in tags for p in tagged_processes(t)]}

    def finish(self) -> None:
        for be in self.backends:
            be.close()
        report = teardown(self.ledger, Runner())
        self.ledger.close()
        assert report.ok, report.summary()
        assert self.leftovers() == {"folders": [], "processes": []}


@pytest.fixture
def rig(board: Board, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(board, tmp_path)
    try:
        yield r
    finally:
        r.finish()


def _agent_flags() -> list[str]:
    """`--insecure-no-token` once the agent requires a token (its --help says so)."""
    help_text = subprocess.run([sys.executable, "-m", "nodes.agent", "--help"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout
    return ["--insecure-no-token"] if "--insecure-no-token" in help_text else []


def test_is_a_node_backend(rig: Rig) -> None:
    be = rig.backend()
    assert isinstance(be, NodeBackend)
    assert (be.kind, be.data_port) == ("remote", "backend")
    assert be.python("sat0").endswith("/venv/bin/python")
    assert be.node_path("sat0", rig.tmp_path / "run" / "nodes") == \
        f"{rig.board.work_dir}/{rig.plan.prefix}-sat0/run/nodes"
    assert be.node_path("sat0", rig.tmp_path / "run") == \
        f"{rig.board.work_dir}/{rig.plan.prefix}-sat0/run"
    with pytest.raises(NodeBackendError, match="outside the run directory"):
        be.node_path("sat0", Path("/etc/passwd"))
    with pytest.raises(NodeBackendError, match="not deployed"):
        be.spawn("sat0", ["true"])
    # the folder undo refuses anything that is not a folder of the run
    session = connect(SshTarget.from_host(rig.board.host()))
    with session:
        for path in ("/", "relative/x", rig.board.work_dir, "/etc"):
            with pytest.raises(LedgerError, match="refusing to remove"):
                remove_remote_dir(session, path, rig.plan.prefix)
        assert remove_remote_dir(session, f"/nonexistent/{rig.plan.prefix}-x",
                                 rig.plan.prefix) is False


def test_deploy_workload_results_and_token(rig: Rig, tmp_path: Path) -> None:
    token = tmp_path / "agent.token"
    token.write_text("s3cret\n")
    be = rig.backend()
    be.token_file = token
    be.create_nodes()
    steps = be.placed("sat0").timings_s
    assert {"connect", "check python", "folder + venv", "copy nodes/", "token"} <= set(steps)
    run = be.placed("sat0").run_dir
    mode = be.exec("sat0", ["stat", "-c", "%a", f"{run}/token"]).stdout.strip()
    assert mode == "600"
    assert be.token_path("sat0") == f"{run}/token"
    assert be.agent_argv("sat0", mgmt_port=1, results=tmp_path / "run")[-2:] == \
        ["--token-file", f"{run}/token"]
    # argv words reach the host as words: nothing in them is shell syntax
    weird = ["a; touch /tmp/owned", "$HOME", "`id`", "it's"]
    assert be.exec("sat0", ["printf", "%s\\n", *weird]).stdout.splitlines() == weird
    # files to send, made on the board
    be.exec("sat0", [be.python("sat0"), "-c", textwrap.dedent("""
        import os, sys
        os.makedirs(sys.argv[1])
        for i in range(5):
            open(os.path.join(sys.argv[1], f"f{i}.bin"), "wb").write(os.urandom(20000))
    """), f"{run}/run/outbox"])
    with GroundReceiver(rig.board.root_ip, 0) as rx:
        _, port = rx.address
        results_dir = tmp_path / "run" / "nodes"
        argv = [be.python("sat0"), "-m", "nodes.agent", "--name", "sat0", "--role", "satellite",
                "--mgmt-listen", f"{rig.board.ip}:{MGMT_PORT}",
                "--results", be.node_path("sat0", results_dir), *_agent_flags()]
        proc = be.spawn("sat0", argv, log_path=Path("agent.log"))
        addr = f"{rig.board.ip}:{MGMT_PORT}"
        health = be.wait_agent("sat0", addr, timeout_s=20)
        assert health["pid"] == proc.pid and health["name"] == "sat0"
        client.start_workload(addr, "downlink-files", {
            "source": f"{run}/run/outbox", "pattern": "*.bin", "ground_ip": rig.board.root_ip,
            "ground_port": port})
        deadline = time.monotonic() + 30
        while client.results(addr, events=False)["state"] == "running":
            assert time.monotonic() < deadline, "workload did not finish in 30 s"
            time.sleep(0.1)
        tallies = rx.tallies()
    assert sum(t.files_received for t in tallies.values()) == 5
    killed = be.kill("sat0")  # SIGTERM: the agent writes its results and exits
    assert killed.pids_killed == [proc.pid] and not killed.problems
    assert tagged_processes(be.placed("sat0").tag) == []
    assert be.collect("sat0") >= 2
    saved = (results_dir / "sat0.json").read_text()
    assert '"files_delivered": 5' in saved
    assert (tmp_path / "run" / "logs" / "sat0" / "agent.log").is_file()
    be.revive("sat0")  # the host still answers; revive starts nothing
    assert tagged_processes(be.placed("sat0").tag) == []
    report = be.remove_node("sat0")
    assert report.ok and [e.kind for e in report.removed] == ["remote-dir"], report.summary()


def test_wrong_key_refused(rig: Rig) -> None:
    other = rig.board.home / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    be = rig.backend(key_path=other)
    with pytest.raises(AuthenticationRefusedError, match=rf"{rig.board.ip}:22.*other_key refused"):
        be.create_nodes()
    assert rig.ledger.entries() == []


def test_changed_and_unknown_host_key_refused(rig: Rig) -> None:
    rig.board.new_host_key()
    rig.board.start()
    with pytest.raises(HostKeyError, match=rf"{rig.board.ip}:22\): host key CHANGED"):
        rig.backend().create_nodes()
    rig.board.known_hosts.write_text("")
    with pytest.raises(HostKeyError, match=r"host key unknown \(not in .*known_hosts\)"):
        rig.backend().create_nodes()
    assert rig.ledger.entries() == []


def test_unreachable_host_reported(rig: Rig) -> None:
    t0 = time.monotonic()
    with pytest.raises(HostUnreachableError, match=rf"{rig.board.ip}:2222\): cannot connect"):
        rig.backend(port=2222).create_nodes()  # nothing listens: refused
    with pytest.raises(HostUnreachableError, match=r"@192\.0\.2\.1:22\)"):
        rig.backend(address="192.0.2.1").create_nodes()  # TEST-NET: no route or timeout
    with socket.socket() as silent:  # accepts TCP, never speaks SSH: a hung host
        silent.bind((rig.board.root_ip, 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(HostUnreachableError,
                           match=rf"{rig.board.root_ip}:{port}\): no SSH answer within 3 s"):
            rig.backend(address=rig.board.root_ip, port=port).create_nodes()
    assert time.monotonic() - t0 < 20
    assert rig.ledger.entries() == []


def test_missing_and_too_old_python_reported(rig: Rig) -> None:
    fake = rig.board.home / "fakebin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\necho 'Python 3.8.10'\n")
    (fake / "python3").chmod(0o755)
    # named by absolute path in the inventory: the board's login shell may rewrite PATH
    # (start-up files), and `python:` is how the lab names interpreters
    with pytest.raises(RemotePythonError, match=rf"{fake}/python3 is Python 3\.8\.10, "
                       r"expected >= 3\.11"):
        rig.backend(python=str(fake / "python3")).create_nodes()
    with pytest.raises(RemotePythonError, match="'python3.99' not found on PATH"):
        rig.backend(python="python3.99").create_nodes()
    assert rig.ledger.entries() == []


def test_failure_mid_deploy_leaves_nothing(rig: Rig, tmp_path: Path) -> None:
    be = rig.backend()
    be.token_file = tmp_path / "no-such-token"  # fails after the folder and venv exist
    with pytest.raises(FileNotFoundError, match="no-such-token"):
        be.create_nodes()
    assert rig.leftovers()["folders"] == []
    assert [e.kind for e in rig.ledger.entries()] == ["remote-dir"]  # undone already: absent


def _tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel made here (no index needed): module tbprobe with VALUE = 42."""
    name = "tbprobe-0.1-py3-none-any.whl"
    files = {"tbprobe.py": "VALUE = 42\n",
             "tbprobe-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tbprobe\n"
                                               "Version: 0.1\n",
             "tbprobe-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
                                            "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    files["tbprobe-0.1.dist-info/RECORD"] = "".join(f"{p},,\n" for p in files) + \
        "tbprobe-0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(folder / name, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return folder / name


def test_requirements_from_wheelhouse_offline(rig: Rig, tmp_path: Path) -> None:
    pip_wheels = sorted(Path("/usr/share/python-wheels").glob("pip-*.whl"))
    if not pip_wheels:
        pytest.skip("no pip wheel on this machine for an offline wheelhouse "
                    "(Debian: python3-pip-whl)")
    links = tmp_path / "links"
    links.mkdir()
    _tiny_wheel(links)
    (links / pip_wheels[-1].name).write_bytes(pip_wheels[-1].read_bytes())
    wh = prepare_wheelhouse(["tbprobe==0.1"], tmp_path / "wheelhouse", runner=Runner(),
                            find_links=links)
    assert sorted(p.name.split("-")[0] for p in wh.path.glob("*.whl")) == ["pip", "tbprobe"]
    be = rig.backend()
    be.wheelhouse = wh
    steps = be.deploy("sat0")
    assert "requirements" in steps
    got = be.exec("sat0", [be.python("sat0"), "-c", "import tbprobe; print(tbprobe.VALUE)"])
    assert got.stdout.strip() == "42"
    with pytest.raises(RemoteCommandError, match="No module named 'tbprobe'"):
        be.exec("sat0", ["python3", "-c", "import tbprobe"])  # only in the run's venv


_DEPLOYER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from testbed.backends.remote import RemoteBackend
from testbed.fabric import ensure_ovs_daemon
from testbed.fabric.addressing import AddressPlan, NodeSpec
from testbed.inventory import Inventory, InventoryHost
from testbed.ledger import Ledger
from testbed.sysrun import Runner
host = InventoryHost.model_validate_json({host!r})
plan = AddressPlan.build({prefix!r}, [NodeSpec("sat0")])
be = RemoteBackend(Runner(), Ledger({ledger!r}), plan, Inventory(hosts=[host]),
                   run_dir=Path({run!r}), attach_fabric=False)
be.create_nodes()
argv = [be.python("sat0"), "-m", "nodes.agent", "--name", "sat0", "--role", "satellite",
        "--mgmt-listen", {addr!r}, "--results", be.node_path("sat0", Path({run!r}))]
be.spawn("sat0", argv + {flags!r})
be.spawn("sat0", ["sleep", "300"])
print("ready", flush=True)
time.sleep(300)
"""


def test_down_after_sigkill_of_the_deployer(rig: Rig, tmp_path: Path) -> None:
    addr = f"{rig.board.ip}:{MGMT_PORT}"
    script = _DEPLOYER.format(repo=str(REPO), host=rig.board.host().model_dump_json(),
                              prefix=rig.plan.prefix, ledger=str(rig.ledger.path),
                              run=str(tmp_path / "run"), addr=addr, flags=_agent_flags())
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "ready", proc.stderr.read()  # type: ignore[union-attr]
        client.wait_healthy(addr, timeout_s=20)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    left = rig.leftovers()
    assert len(left["processes"]) == 2 and len(left["folders"]) == 1  # they outlive the deployer
    # `down` from the ledger alone (a fresh Ledger object, no backend, no inventory)
    report = teardown(Ledger(rig.ledger.path), Runner())
    assert report.ok, report.summary()
    assert sorted(e.kind for e in report.removed) == ["remote-dir", "remote-process",
                                                      "remote-process"]
    assert rig.leftovers() == {"folders": [], "processes": []}
    with pytest.raises(AgentUnreachableError):
        client.health(addr, timeout_s=1)


def test_kill_only_signals_its_own_processes(rig: Rig) -> None:
    """A process that reuses nothing of ours survives kill(); ours do not."""
    be = rig.backend()
    be.create_nodes()
    ours = be.spawn("sat0", ["sleep", "300"])
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        report = be.kill("sat0")
        assert report.pids_killed == [ours.pid]
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()



@pytest.mark.ovs
def test_data_plane_port_1_and_board_address(board: Board, tmp_path: Path,
                                             unique_prefix: str) -> None:
    """The board's data veth: its orchestrator end (the inventory's fabric_port) becomes
    OpenFlow port 1 of the node's bridge, its board end (data_interface) gets the plan's data
    IP, MAC and static ARP; traffic from the board crosses the bridge; removal restores all."""
    for binary in ("ovs-vsctl", "ovs-ofctl", "ping"):
        if shutil.which(binary) is None:
            pytest.skip(f"binary '{binary}' not found on PATH (Open vSwitch / ping)")
    runner = Runner()
    ensure_ovs_daemon(runner)
    subnet = f"10.{random.randint(20, 99)}.0.0/16"
    plan = AddressPlan.build(unique_prefix, [NodeSpec("sat0"), NodeSpec("gs", role="ground")],
                             data_subnet=subnet)
    n, gs = plan.node("sat0"), plan.node("gs")
    probe_ip = subnet.replace(".0.0/16", ".255.254")
    fab, inner, probe = f"{unique_prefix}f0", f"{unique_prefix}d0", f"{unique_prefix}i0"
    ledger = Ledger(tmp_path / "ledger.jsonl")
    inv = Inventory(hosts=[board.host(fabric_port=fab, data_interface=inner)])
    be = RemoteBackend(runner, ledger, plan, inv, run_dir=tmp_path / "run")
    in_board = ["ip", "-n", board.netns]
    try:
        ledger.record("link", fab, peer=inner)
        runner.run(["ip", "link", "add", fab, "type", "veth", "peer", "name", inner,
                    "netns", board.netns])
        runner.run(["ip", "link", "set", fab, "up"])
        original_mac = runner.run([*in_board, "-br", "link", "show", inner]).stdout.split()[2]
        ledger.record("ovs-bridge", n.bridge, node="sat0")
        runner.run(["ovs-vsctl", "--timeout=20", "add-br", n.bridge, "--", "set", "bridge",
                    n.bridge, "datapath_type=netdev", "fail_mode=secure", "--", "add-port",
                    n.bridge, probe, "--", "set", "Interface", probe, "type=internal",
                    "ofport_request=2"])
        runner.run(["ovs-ofctl", "add-flow", n.bridge, "priority=0,actions=NORMAL"])
        runner.run(["ip", "addr", "add", f"{probe_ip}/16", "dev", probe])
        runner.run(["ip", "link", "set", probe, "up"])
        be.create_nodes([n])
        got = runner.run(["ovs-vsctl", "get", "Interface", fab, "ofport"]).stdout.strip()
        assert got == "1"
        assert [e.kind for e in ledger.entries()][-3:] == ["remote-dir", "remote-addr",
                                                           "ovs-port"]
        link = runner.run([*in_board, "-br", "addr", "show", inner]).stdout
        assert f"{n.data_ip}/16" in link
        assert n.data_mac in runner.run([*in_board, "-br", "link", "show", inner]).stdout
        neigh = runner.run([*in_board, "neigh", "show", gs.data_ip]).stdout
        assert gs.data_mac in neigh and "PERMANENT" in neigh
        ping = runner.run(["ip", "netns", "exec", board.netns, "ping", "-n", "-c", "2", "-i",
                           "0.2", "-W", "2", probe_ip], check=False, timeout_s=20)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        report = be.remove_node("sat0")  # data port, address, folder; not the bridge
        assert report.ok and sorted(e.kind for e in report.removed) == \
            ["ovs-port", "remote-addr", "remote-dir"], report.summary()
        assert runner.run(["ovs-vsctl", "list-ports", n.bridge]).stdout.split() == [probe]
        assert n.data_ip not in runner.run([*in_board, "-br", "addr", "show", inner]).stdout
        assert original_mac in runner.run([*in_board, "-br", "link", "show", inner]).stdout
        assert gs.data_mac not in runner.run([*in_board, "neigh", "show"]).stdout
    finally:
        be.close()
        report = teardown(ledger, runner)
        ledger.close()
        assert report.ok, report.summary()
    assert runner.run(["ip", "link", "show", fab], check=False).returncode != 0
