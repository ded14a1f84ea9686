"""Fixtures for node-backend tests: a running OVS, and a small real network removed afterwards."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.backends import NetnsBackend
from testbed.cgroups import Budget, CgroupManager, detect_hierarchy
from testbed.fabric import (
    AddressPlan,
    FabricConfig,
    LinkSpec,
    NodeSpec,
    OvsFabric,
    ensure_ovs_daemon,
)
from testbed.ledger import Ledger, teardown
from testbed.sysrun import Runner


def list_leftovers(prefix: str, cgroup_dirs: list[Path]) -> dict[str, list[str]]:
    """What still exists with `prefix`, listed independently of the ledger."""
    netns = [n.split()[0] for n in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.splitlines()]
    bridges = subprocess.run(["ovs-vsctl", "--timeout=20", "list-br"], capture_output=True,
                             text=True, check=True).stdout.split()
    links = [line.split(":")[1].strip().split("@")[0] for line in subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout.splitlines()]
    return {
        "netns": [n for n in netns if n.startswith(prefix)],
        "bridges": [b for b in bridges if b.startswith(prefix)],
        "links": [x for x in links if x.startswith(prefix)],
        "cgroups": [str(d) for d in cgroup_dirs if d.exists()],
    }


@pytest.fixture(scope="session")
def ovs_daemon() -> Runner:
    """Open vSwitch running (started with ovs-ctl when needed; left running, a host service)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates namespaces, OVS bridges, cgroups")
    for binary in ("ovs-vsctl", "ovs-ofctl", "ip", "ping"):
        if shutil.which(binary) is None:
            pytest.skip(f"binary '{binary}' not found on PATH (Open vSwitch / iproute2 / ping)")
    runner = Runner()
    ensure_ovs_daemon(runner)
    return runner


@dataclass
class Net:
    plan: AddressPlan
    backend: NetnsBackend
    fabric: OvsFabric
    ledger: Ledger
    runner: Runner
    cgroup_dirs: list[Path]


@pytest.fixture
def net(ovs_daemon: Runner, unique_prefix: str, tmp_path: Path) -> Iterator[Net]:
    """Nodes a, b, c; link a--b plain veth, link b--c with userspace-shaper ends; NORMAL flows.

    Teardown removes everything from the ledger and checks by listing that nothing is left.
    """
    mgmt = f"172.{random.randint(16, 29)}.{random.randint(0, 255)}.0/24"
    plan = AddressPlan.build(
        unique_prefix,
        [NodeSpec("a"), NodeSpec("b"), NodeSpec("c", role="ground")],
        [LinkSpec("a", "b"), LinkSpec("b", "c", shaper="userspace")],
        mgmt_subnet=mgmt,
    )
    runner = ovs_daemon
    ledger = Ledger(tmp_path / "ledger.jsonl")
    fabric = OvsFabric(runner, ledger, FabricConfig(controller_port=None))
    cgroups = CgroupManager(detect_hierarchy(), unique_prefix, ledger=ledger)
    backend = NetnsBackend(runner, ledger, plan, cgroups=cgroups)
    try:
        fabric.create_bridges(plan.nodes)
        backend.create_management()
        backend.create_nodes(budgets={"a": Budget(cpu_cores=0.5, memory_bytes=256 << 20)})
        fabric.create_links(plan.links)
        for n in plan.nodes:
            fabric.add_flows(n.bridge, ["priority=0,actions=NORMAL"])
        yield Net(plan, backend, fabric, ledger, runner, list(cgroups.run_group_dirs()))
    finally:
        report = teardown(ledger, runner)
        left = list_leftovers(unique_prefix, list(cgroups.run_group_dirs()))
        ledger.close()
        assert report.ok, report.summary()
        assert not any(left.values()), left


@pytest.fixture
def leftovers() -> Callable[[str, list[Path]], dict[str, list[str]]]:
    return list_leftovers
