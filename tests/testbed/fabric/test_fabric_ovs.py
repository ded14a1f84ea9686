"""OVS fabric on a real ovs-vswitchd: bridge settings, batched transactions, ports, removal."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from testbed.errors import InputError, SystemRequirementError
from testbed.fabric import AddressPlan, FabricConfig, LinkSpec, NodeSpec, OvsFabric
from testbed.fabric.ovs import ensure_ovs_daemon
from testbed.ledger import Ledger, teardown
from testbed.sysrun import Completed, Runner

pytestmark = [pytest.mark.root, pytest.mark.ovs]


class CountingRunner(Runner):
    """The real runner, counting ovs-vsctl invocations."""

    def __init__(self) -> None:
        super().__init__()
        self.vsctl_calls = 0

    def run(self, argv, **kw) -> Completed:  # type: ignore[override]
        if argv[0] == "ovs-vsctl":
            self.vsctl_calls += 1
        return super().run(argv, **kw)


def _vsctl(*args: str) -> str:
    return subprocess.run(["ovs-vsctl", "--timeout=20", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_bridges_links_ports_in_few_transactions(ovs_runner, unique_prefix, tmp_path) -> None:
    nodes = [NodeSpec(f"s{i}") for i in range(30)]
    links = [LinkSpec(f"s{i}", f"s{(i + 1) % 30}", shaper="userspace" if i % 2 else "kernel")
             for i in range(30)]
    plan = AddressPlan.build(unique_prefix, nodes, links)
    runner = CountingRunner()
    ledger = Ledger(tmp_path / "ledger.jsonl")
    fabric = OvsFabric(runner, ledger, FabricConfig(controller_port=6699))
    try:
        fabric.create_bridges(plan.nodes)
        fabric.create_links(plan.links, wait=False)
        fabric.wait_links(plan.links)
        assert runner.vsctl_calls == 3  # bridges + data ports, link ports, one wait for all
        ours = [b for b in fabric.list_bridges() if b.startswith(unique_prefix)]
        assert sorted(ours) == sorted(n.bridge for n in plan.nodes)
        n7 = plan.nodes[7]
        assert _vsctl("get", "bridge", n7.bridge, "datapath_type") == "netdev"
        assert _vsctl("get", "bridge", n7.bridge, "fail_mode") == "secure"
        assert _vsctl("get", "bridge", n7.bridge, "protocols") == "[OpenFlow13]"
        assert _vsctl("get", "bridge", n7.bridge, "other-config:datapath-id") == \
            '"0000000000000008"'
        assert _vsctl("get-controller", n7.bridge) == "tcp:127.0.0.1:6699"
        # the datapath really uses the requested id and port numbers
        show = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "show", n7.bridge],
                              capture_output=True, text=True, check=True).stdout
        assert "dpid:0000000000000008" in show
        assert f" 1({n7.data_ifname})" in show
        lk = plan.links[7]  # userspace-shaped: OVS holds -a/-b, the shaper ends stay outside
        assert lk.shaper_ifnames is not None
        assert f" {lk.b.ofport}({lk.b.ifname})" in subprocess.run(
            ["ovs-ofctl", "-O", "OpenFlow13", "show", lk.b.bridge],
            capture_output=True, text=True, check=True).stdout
        assert _vsctl("port-to-br", lk.a.ifname) == lk.a.bridge
        assert not subprocess.run(["ovs-vsctl", "port-to-br", lk.shaper_ifnames[0]],
                                  capture_output=True).returncode == 0
        peer = json.loads(subprocess.run(["ip", "-j", "link", "show", lk.shaper_ifnames[0]],
                                         capture_output=True, text=True, check=True).stdout)
        assert peer[0]["operstate"] in ("UP", "LOWERLAYERDOWN", "UNKNOWN")
    finally:
        report = teardown(ledger, runner)
        ledger.close()
    assert report.ok, report.summary()
    assert not [b for b in _vsctl("list-br").split() if b.startswith(unique_prefix)]
    links_left = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f": {unique_prefix}" not in links_left


def test_add_flows_and_idempotent_create(ovs_runner, unique_prefix, tmp_path) -> None:
    plan = AddressPlan.build(unique_prefix, [NodeSpec("a")])
    ledger = Ledger(tmp_path / "ledger.jsonl")
    fabric = OvsFabric(ovs_runner, ledger, FabricConfig(controller_port=None))
    try:
        fabric.create_bridges(plan.nodes)
        fabric.create_bridges(plan.nodes)  # `up` twice: --may-exist, no error
        br = plan.nodes[0].bridge
        assert _vsctl("get-controller", br) == ""
        fabric.add_flows(br, ["priority=10,arp,actions=NORMAL", "priority=0,actions=drop"])
        flows = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", br],
                               capture_output=True, text=True, check=True).stdout
        assert "priority=10,arp actions=NORMAL" in flows and "priority=0 actions=drop" in flows
    finally:
        report = teardown(ledger, ovs_runner)
        ledger.close()
    assert report.ok, report.summary()
    assert [e.kind for e in report.removed] == ["ovs-port", "ovs-bridge"]
    assert len(report.absent) == 2  # the second create's entries


def test_config_validation() -> None:
    with pytest.raises(InputError, match="datapath_type='dpdk'"):
        FabricConfig(datapath_type="dpdk")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="controller_port=0"):
        FabricConfig(controller_port=0)


def test_missing_ovs_is_named(tmp_path: Path) -> None:
    class NoOvs(Runner):
        def which(self, name: str) -> str | None:
            return None

    with pytest.raises(SystemRequirementError, match="binary 'ovs-vsctl' not found.*openvswitch"):
        ensure_ovs_daemon(NoOvs())
