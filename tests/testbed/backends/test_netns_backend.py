"""The netns backend on real resources: pings over OVS, TCP, management, cgroups, SIGKILL + down."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testbed.ledger import Ledger, teardown
from testbed.sysrun import process_alive

pytestmark = [pytest.mark.root, pytest.mark.ovs]

REPO = Path(__file__).resolve().parents[3]


def _ping(net, node: str, ip: str, count: int = 2) -> subprocess.CompletedProcess:
    done = net.backend.exec(node, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", ip],
                            check=False, timeout_s=20)
    return done


def test_data_ping_over_veth_link_and_none_without_path(net) -> None:
    a, b, c = (net.plan.node(x) for x in "abc")
    ok = _ping(net, "a", b.data_ip, count=3)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3 received" in ok.stdout
    # b--c goes through shaper ends that nothing bridges yet: c must be unreachable.
    cut = _ping(net, "a", c.data_ip, count=1)
    assert cut.returncode != 0
    # the reply came from b's data MAC: the static ARP entry is what the kernel used
    neigh = net.backend.exec("a", ["ip", "neigh", "show", b.data_ip]).stdout
    assert b.data_mac in neigh and "PERMANENT" in neigh


def test_shaper_ends_carry_traffic_once_bridged(net) -> None:
    """Stand in for the userspace shaper with a Linux bridge joining `-sa` and `-sb`."""
    from pyroute2 import IPRoute

    link = net.plan.link("b--c")
    sa, sb = link.shaper_ifnames
    joiner = f"{net.plan.prefix}j"
    with IPRoute() as ipr:
        ipr.link("add", ifname=joiner, kind="bridge")
        try:
            j = ipr.link_lookup(ifname=joiner)[0]
            for name in (sa, sb):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], master=j)
            ipr.link("set", index=j, state="up")
            done = _ping(net, "a", net.plan.node("c").data_ip, count=3)
            assert done.returncode == 0, done.stdout + done.stderr
        finally:
            ipr.link("del", index=ipr.link_lookup(ifname=joiner)[0])


def test_tcp_transfer_is_intact(net) -> None:
    """2 MB over TCP from a to b through both OVS bridges: checksums and payload are right."""
    size = 2_000_000
    server = textwrap.dedent("""
        import hashlib, socket, sys
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((sys.argv[1], 5201)); s.listen(1); s.settimeout(20)
        c, _ = s.accept(); c.settimeout(20); h = hashlib.sha256(); n = 0
        while True:
            d = c.recv(65536)
            if not d: break
            h.update(d); n += len(d)
        print(n, h.hexdigest())
    """)
    client = textwrap.dedent(f"""
        import socket, sys, time
        data = bytes((i * 7919) % 251 for i in range({size}))
        for _ in range(50):
            try:
                c = socket.create_connection((sys.argv[1], 5201), timeout=5); break
            except OSError:
                time.sleep(0.1)
        c.sendall(data); c.close()
    """)
    b_ip = net.plan.node("b").data_ip
    srv = net.backend.spawn("b", [sys.executable, "-c", server, b_ip],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    net.backend.exec("a", [sys.executable, "-c", client, b_ip], timeout_s=30)
    assert srv.popen is not None
    out, err = srv.popen.communicate(timeout=30)
    expected = hashlib.sha256(bytes((i * 7919) % 251 for i in range(size))).hexdigest()
    assert out.decode().split() == [str(size), expected], err.decode()


def test_management_network_reaches_every_node(net) -> None:
    for n in net.plan.nodes:
        done = subprocess.run(["ping", "-n", "-c", "1", "-W", "1", n.mgmt_ip],
                              capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, f"{n.name}: {done.stdout}{done.stderr}"
    done = _ping(net, "a", net.plan.node("c").mgmt_ip, count=1)
    assert done.returncode == 0, done.stdout
    # the management plane is not the data plane: no data address on mgmt0
    addrs = net.backend.exec("a", ["ip", "-o", "-4", "addr", "show", "dev", "mgmt0"]).stdout
    assert net.plan.node("a").mgmt_ip in addrs and net.plan.node("a").data_ip not in addrs


def test_exec_runs_in_namespace_and_cgroup(net) -> None:
    a = net.plan.node("a")
    own = net.backend.exec("a", ["cat", "/proc/self/cgroup"]).stdout
    group = net.backend.node_cgroup("a")
    assert group is not None
    for d in group.dirs:  # every controller's path of the node shows up in /proc/self/cgroup
        assert any(line.endswith(f"/{net.plan.prefix}/n{a.index}") for line in own.splitlines())
        assert d.exists()
    if group.version == "v1":
        assert (group.dirs[0] / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert int((group.dirs[1] / "memory.limit_in_bytes").read_text()) == 256 << 20
    links = net.backend.exec("a", ["ip", "-o", "link"]).stdout
    assert a.data_ifname in links and "mgmt0" in links
    assert net.plan.node("b").data_ifname not in links


def test_spawned_process_is_stopped_by_teardown(net) -> None:
    proc = net.backend.spawn("b", ["sleep", "300"])
    entry = [e for e in net.ledger.entries() if e.kind == "process"][-1]
    assert entry.details["pid"] == proc.pid
    group = net.backend.node_cgroup("b")
    assert proc.pid in group.pids()
    report = teardown([entry], net.runner)
    assert [e.name for e in report.removed] == [entry.name]
    assert proc.popen is not None
    proc.popen.wait(timeout=5)
    assert not process_alive(proc.pid, entry.details["start_ticks"])


def test_remove_node_leaves_the_others(net) -> None:
    c = net.plan.node("c")
    report = net.backend.remove_node("c")
    assert report.ok, report.summary()
    kinds = sorted({e.kind for e in report.removed})
    assert kinds == ["cgroup", "link", "netns", "ovs-port"]
    assert not Path(f"/var/run/netns/{c.netns}").exists()
    assert _ping(net, "a", net.plan.node("b").data_ip, count=1).returncode == 0


_CHILD = textwrap.dedent("""
    import sys, time
    from testbed.backends import NetnsBackend
    from testbed.cgroups import CgroupManager, detect_hierarchy
    from testbed.fabric import AddressPlan, FabricConfig, LinkSpec, NodeSpec, OvsFabric
    from testbed.ledger import Ledger
    from testbed.sysrun import Runner
    prefix, ledger_path, mgmt = sys.argv[1:4]
    nodes = [NodeSpec(f"s{i}") for i in range(4)]
    links = [LinkSpec(f"s{i}", f"s{(i + 1) % 4}") for i in range(4)]
    plan = AddressPlan.build(prefix, nodes, links, mgmt_subnet=mgmt)
    runner, ledger = Runner(), Ledger(ledger_path)
    fabric = OvsFabric(runner, ledger, FabricConfig(controller_port=None))
    backend = NetnsBackend(runner, ledger, plan,
                           cgroups=CgroupManager(detect_hierarchy(), prefix, ledger=ledger))
    fabric.create_bridges(plan.nodes)
    backend.create_management()
    backend.create_nodes()
    fabric.create_links(plan.links[:2])
    backend.spawn("s1", ["sleep", "600"])
    print("midway", flush=True)
    time.sleep(600)  # killed here, before the remaining links exist
    fabric.create_links(plan.links[2:])
""")


def test_down_after_sigkill_removes_everything(ovs_daemon, unique_prefix, tmp_path,
                                               leftovers) -> None:
    ledger_path = tmp_path / "ledger.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, unique_prefix, str(ledger_path), "172.29.251.0/24"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    cgroup_dirs: list[Path] = []
    try:
        line = child.stdout.readline()
        assert line.strip() == "midway", child.stderr.read() if child.poll() is not None else line
        before = leftovers(unique_prefix, [])
        assert len(before["netns"]) == 4 and len(before["bridges"]) == 4
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
        ledger = Ledger(ledger_path)
        entries = ledger.entries()
        cgroup_dirs = [Path(d) for e in entries if e.kind == "cgroup" for d in e.details["dirs"]]
        procs = [e for e in entries if e.kind == "process"]
        report = teardown(ledger, ovs_daemon)
    assert report.ok, report.summary()
    assert len(procs) == 1
    assert not process_alive(procs[0].details["pid"], procs[0].details["start_ticks"])
    left = leftovers(unique_prefix, cgroup_dirs)
    assert not any(left.values()), left
    again = teardown(Ledger(ledger_path), ovs_daemon)  # idempotent: all absent now
    assert again.ok and not again.removed and len(again.absent) == len(entries)
