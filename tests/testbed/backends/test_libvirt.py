"""Two satellite VMs (libvirt, TCG here) and a ground namespace on one OVS fabric: ping across
with a measured RTT, exec between VMs, the agent's /health over the management network,
kill/revive, and teardown from the ledger (also after SIGKILL of the process that made them).

Root, libvirt-python, qemu, libvirtd, Open vSwitch and ssh are needed; the guest image is built
once (about 2 min, needs the Debian mirror of the apt sources) and cached under
$TESTBED_CACHE or runs/.cache.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import paths
from testbed.backends import NetnsBackend
from testbed.fabric import AddressPlan, FabricConfig, LinkSpec, NodeSpec, OvsFabric
from testbed.ledger import Ledger, teardown
from testbed.paths import REPO_ROOT
from testbed.sysrun import Runner

pytestmark = [pytest.mark.vm, pytest.mark.root, pytest.mark.ovs, pytest.mark.slow]
AGENT_PORT = 9100


def cache_dir() -> Path:
    return paths.cache_dir(REPO_ROOT / "runs" / ".cache")


def built_image():  # noqa: ANN201 - GuestImage, imported after the skips
    """The cached guest image (built on first use); skips naming what is missing."""
    pytest.importorskip("libvirt", reason="libvirt-python not installed (pip install "
                                          "'leo-testbed[lab]')")
    for binary in ("qemu-system-x86_64", "ssh", "ssh-keygen", "debootstrap", "depmod"):
        if shutil.which(binary) is None:
            pytest.skip(f"binary '{binary}' not found on PATH (qemu-system-x86, "
                        "openssh-client, debootstrap, kmod)")
    if not Path("/usr/sbin/libvirtd").exists():
        pytest.skip("/usr/sbin/libvirtd missing (apt-get install libvirt-daemon-system)")
    from testbed.backends.libvirt_image import ImageBuildError, build_image

    try:
        return build_image(cache_dir())
    except ImageBuildError as exc:
        if "unreachable" in str(exc):
            pytest.skip(f"guest image cannot be built here: {exc}")
        raise


@pytest.fixture(scope="session")
def guest_image(ovs_daemon: Runner):  # noqa: ANN201
    return built_image()


def leftovers(prefix: str, ssh_key: str | None = None) -> dict[str, list[str]]:
    """Domains, interfaces, qemu processes of `prefix` and ssh clients using `ssh_key`,
    found without the ledger."""
    from testbed.backends.libvirt_daemon import try_open

    conn = try_open("qemu:///system")
    domains: list[str] = []
    if conn is not None:
        domains = [d.name() for d in conn.listAllDomains() if d.name().startswith(prefix)]
        conn.close()
    links = [line.split(":")[1].strip().split("@")[0] for line in subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout.splitlines()]
    procs = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"guest={prefix}-vm" in cmd or (ssh_key is not None and cmd.startswith("ssh ")
                                           and ssh_key in cmd):
            procs.append(f"{d.name}: {cmd[:120]}")
    return {"domains": domains, "links": [x for x in links if x.startswith(prefix)],
            "processes": procs}


@dataclass
class VmNet:
    plan: AddressPlan
    vms: object  # LibvirtBackend
    gs: NetnsBackend
    ledger: Ledger
    runner: Runner
    boot_s: float


@pytest.fixture(scope="module")
def vm_net(guest_image, ovs_daemon: Runner, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[VmNet]:
    """sat0, sat1 (VMs) and gs (namespace); links gs--sat0 and sat0--sat1; NORMAL flows; the
    agent started by each guest's /init. Teardown checks by listing that nothing is left."""
    from testbed.backends.libvirt import LibvirtBackend

    prefix = "t" + os.urandom(3).hex()[:5]
    run_dir = tmp_path_factory.mktemp("vmrun")
    plan = AddressPlan.build(
        prefix, [NodeSpec("sat0"), NodeSpec("sat1"), NodeSpec("gs", role="ground")],
        [LinkSpec("gs", "sat0"), LinkSpec("sat0", "sat1")],
        mgmt_subnet=f"172.{random.randint(16, 29)}.{random.randint(0, 255)}.0/24")
    runner = ovs_daemon
    ledger = Ledger(run_dir / "ledger.jsonl")
    fabric = OvsFabric(runner, ledger, FabricConfig(controller_port=None))
    agents = {n: ["python3", "-m", "nodes.agent", "--name", n, "--role", "satellite",
                  "--mgmt-listen", f"{plan.node(n).mgmt_ip}:{AGENT_PORT}",
                  "--data-ip", plan.node(n).data_ip,
                  "--results", "/var/lib/testbed/run/results",
                  "--insecure-no-token"]  # the run's token: test_libvirt_run.py
              for n in ("sat0", "sat1")}
    vms = LibvirtBackend(runner, ledger, plan, run_dir, cache_dir(), image=guest_image,
                         agents=agents, guest_files={"sat0": {"/etc/testbed/token": b"s3cret\n"}})
    gs = NetnsBackend(runner, ledger, plan)
    try:
        fabric.create_bridges(plan.nodes)
        vms.create_management()
        gs.create_nodes([plan.node("gs")])
        fabric.create_links(plan.links)
        for n in plan.nodes:
            fabric.add_flows(n.bridge, ["priority=0,actions=NORMAL"])
        t0 = time.monotonic()
        vms.create_nodes([plan.node("sat0"), plan.node("sat1")])
        boot_s = time.monotonic() - t0
        print(f"\n2 VMs ({vms.accel}) up and answering SSH in {boot_s:.1f} s: {vms.timings_s}")
        yield VmNet(plan, vms, gs, ledger, runner, boot_s)
    finally:
        vms.close()
        report = teardown(ledger, runner)
        left = leftovers(prefix, str(run_dir / "libvirt" / "ssh"))
        ledger.close()
        assert report.ok, report.summary()
        assert not any(left.values()), left


def _rtt_ms(ping_output: str) -> float:
    m = re.search(r"= [\d.]+/([\d.]+)/[\d.]+/[\d.]+ ms", ping_output)
    assert m, ping_output
    return float(m.group(1))


def test_ping_ground_to_both_satellites(vm_net: VmNet) -> None:
    """gs (namespace) -> sat0 (one OVS hop) and -> sat1 (through sat0's bridge); each VM's
    tap is its bridge's OpenFlow port 1, as the controller expects."""
    for sat in ("sat0", "sat1"):
        n = vm_net.plan.node(sat)
        ofport = vm_net.runner.run(["ovs-vsctl", "get", "interface", n.data_ifname, "ofport"])
        assert ofport.stdout.strip() == "1"
        assert vm_net.runner.run(["ovs-vsctl", "port-to-br", n.data_ifname]).stdout.strip() \
            == n.bridge
    for sat in ("sat0", "sat1"):
        ip = vm_net.plan.node(sat).data_ip
        done = vm_net.gs.exec("gs", ["ping", "-c", "5", "-i", "0.2", "-W", "5", ip],
                              timeout_s=60)
        assert " 0% packet loss" in done.stdout, done.stdout
        rtt = _rtt_ms(done.stdout)
        print(f"gs -> {sat} ({ip}): RTT {rtt:.2f} ms over the OVS userspace datapath")
        assert 0.0 < rtt < 500.0


def test_exec_ping_between_vms(vm_net: VmNet) -> None:
    """exec in sat0 (over SSH) pings sat1 across the sat0--sat1 link."""
    ip = vm_net.plan.node("sat1").data_ip
    done = vm_net.vms.exec("sat0", ["ping", "-c", "3", "-i", "0.2", "-W", "5", ip],
                           timeout_s=60)
    assert " 0% packet loss" in done.stdout, done.stdout
    print(f"sat0 -> sat1: RTT {_rtt_ms(done.stdout):.2f} ms")
    hostname = vm_net.vms.exec("sat1", ["cat", "/proc/sys/kernel/hostname"]).stdout.strip()
    assert hostname == "sat1"
    token = vm_net.vms.exec("sat0", ["sh", "-c", "stat -c %a /etc/testbed/token; "
                                                 "cat /etc/testbed/token"]).stdout
    assert token == "600\ns3cret\n"


def test_create_nodes_again_keeps_running_guests(vm_net: VmNet) -> None:
    """A second create_nodes (re-running a partial up) starts nothing new."""
    before = {n: vm_net.vms.exec(n, ["cat", "/proc/uptime"]).stdout.split()[0]
              for n in ("sat0", "sat1")}
    vm_net.vms.create_nodes([vm_net.plan.node("sat0"), vm_net.plan.node("sat1")])
    for n, up in before.items():
        now = float(vm_net.vms.exec(n, ["cat", "/proc/uptime"]).stdout.split()[0])
        assert now > float(up)  # same boot: uptime kept growing


def _health(ip: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://{ip}:{AGENT_PORT}/health", timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_agent_answers_health_over_management(vm_net: VmNet) -> None:
    for sat in ("sat0", "sat1"):
        n = vm_net.plan.node(sat)
        health = _health(n.mgmt_ip)
        assert health["name"] == sat
        assert health["role"] == "satellite"
        assert health["data_ip"] == n.data_ip


def test_spawn_kill_revive(vm_net: VmNet, tmp_path: Path) -> None:
    """spawn is ledgered with its guest pid; kill powers the VM off (ssh client ends);
    revive boots it again with its agent."""
    vms = vm_net.vms
    log = tmp_path / "spawn.log"
    proc = vms.spawn("sat1", ["sh", "-c", "echo started; exec sleep 600"], log_path=log)
    assert proc.pid > 1 and proc.poll() is None
    kinds = {(e.kind, e.name) for e in vm_net.ledger.entries()}
    assert ("guest-process", f"sat1:{proc.pid}") in kinds
    ps = vms.exec("sat1", ["cat", f"/proc/{proc.pid}/cmdline"]).stdout
    assert "sleep" in ps
    report = vms.kill("sat1")
    assert report.problems == []
    assert proc.pid in report.pids_killed
    assert not vms.is_running("sat1")
    assert proc.popen is not None and proc.popen.poll() is not None
    assert "started" in log.read_text()
    t0 = time.monotonic()
    vms.revive("sat1")
    print(f"revive sat1: SSH after {time.monotonic() - t0:.1f} s")
    assert _health(vm_net.plan.node("sat1").mgmt_ip)["name"] == "sat1"
    node_path = vms.node_path("sat1", vms.run_dir / "results")
    assert node_path == "/var/lib/testbed/run/results"


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from testbed.backends.libvirt import LibvirtBackend
    from testbed.backends.libvirt_image import GuestImage
    from testbed.fabric import AddressPlan, FabricConfig, NodeSpec, OvsFabric
    from testbed.ledger import Ledger
    from testbed.sysrun import Runner
    prefix, run_dir, image_dir, mgmt = sys.argv[1:5]
    runner = Runner()
    plan = AddressPlan.build(prefix, [NodeSpec("sat0")], mgmt_subnet=mgmt)
    ledger = Ledger(Path(run_dir) / "ledger.jsonl")
    OvsFabric(runner, ledger, FabricConfig(controller_port=None)).create_bridges(plan.nodes)
    b = LibvirtBackend(runner, ledger, plan, Path(run_dir), Path(run_dir),
                       image=GuestImage.load(Path(image_dir)))
    b.create_management()
    b.create_nodes()  # killed while it waits for the guest
""")


DOWN = textwrap.dedent("""
    import json, sys
    from testbed.ledger import Ledger, teardown
    from testbed.sysrun import Runner
    with Ledger(sys.argv[1]) as ledger:
        r = teardown(ledger, Runner())
    print(json.dumps({"removed": sorted({e.kind for e in r.removed}),
                      "failed": [f"{e.kind} {e.name}: {err}" for e, err in r.failed]}))
""")


def test_teardown_after_sigkill_of_creator(guest_image, ovs_daemon: Runner,
                                           unique_prefix: str, tmp_path: Path) -> None:
    """A child starts a VM and is SIGKILLed while the guest boots; teardown from its ledger
    leaves no domain, tap or qemu process."""
    mgmt = f"172.{random.randint(16, 29)}.{random.randint(0, 255)}.0/24"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, unique_prefix, str(tmp_path), str(guest_image.directory),
         mgmt], cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        deadline = time.monotonic() + 120
        console = tmp_path / "libvirt" / "sat0.console.log"
        while not (console.exists() and console.stat().st_size > 0):  # the guest runs /init
            assert child.poll() is None, f"child exited {child.returncode} before the VM ran"
            assert time.monotonic() < deadline, "no console output after 120 s"
            time.sleep(0.2)
        before = leftovers(unique_prefix)
        assert before["domains"] == [f"{unique_prefix}-vm0"]
        assert before["processes"] and len(before["links"]) == 4  # bridge, mgmt, 2 taps
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        down = subprocess.run(  # a fresh process, as `testbed down` after a crash
            [sys.executable, "-c", DOWN, str(tmp_path / "ledger.jsonl")], cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
            timeout=120)
    left = leftovers(unique_prefix)
    assert down.returncode == 0, down.stdout + down.stderr
    result = json.loads(down.stdout)
    assert result["failed"] == [], result
    assert not any(left.values()), left
    assert {"libvirt-domain", "link", "ovs-bridge"} <= set(result["removed"])
