"""Benchmark: bring up N satellite nodes with +grid links (ring of rings, 4 per node), then down.

Targets (issue 4): 1,000 nodes up in < 120 s, < 15 MB host memory per node without workloads.
At 66 nodes it also starts every node's agent (as `nodes.agents: eager` does) and prints what
an agent costs per node: the reason `auto` starts agents on demand above 100 nodes.
N = 66 and 264 always; N = 1,000 with BENCH_UP_1000=1 (takes minutes). Prints one table row per
N with the targets beside the measured figures and where the time went, per phase.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nodes import client
from testbed.backends import NetnsBackend
from testbed.backends.base import NodeProcess
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
from testbed.workloads.pool import AGENT_PORT, EAGER_MAX_NODES, map_nodes, write_token

pytestmark = [pytest.mark.bench, pytest.mark.root, pytest.mark.ovs, pytest.mark.slow]

TARGET_S_PER_1000 = 120.0
TARGET_MB_PER_NODE = 15.0
AGENTS_AT = 66
SIZES = [(6, 11), (12, 22)] + ([(25, 40)] if os.environ.get("BENCH_UP_1000") == "1" else [])


def ring_of_rings(planes: int, per_plane: int) -> tuple[list[NodeSpec], list[LinkSpec]]:
    """Each satellite links to its two in-plane and two cross-plane neighbours."""
    nodes = [NodeSpec(f"p{p}s{s}") for p in range(planes) for s in range(per_plane)]
    links = []
    for p in range(planes):
        for s in range(per_plane):
            links.append(LinkSpec(f"p{p}s{s}", f"p{p}s{(s + 1) % per_plane}"))
            links.append(LinkSpec(f"p{p}s{s}", f"p{(p + 1) % planes}s{s}"))
    return nodes, links


def mem_available_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


@pytest.fixture(scope="module")
def runner() -> Runner:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates namespaces, OVS bridges, cgroups")
    for binary in ("ovs-vsctl", "ip"):
        if shutil.which(binary) is None:
            pytest.skip(f"binary '{binary}' not found on PATH (Open vSwitch / iproute2)")
    r = Runner()
    ensure_ovs_daemon(r)
    return r


@pytest.mark.timeout(3600)
@pytest.mark.parametrize(("planes", "per_plane"), SIZES, ids=[f"{p * s}" for p, s in SIZES])
def test_bench_up(runner: Runner, planes: int, per_plane: int, tmp_path: Path,
                  unique_prefix: str) -> None:
    n = planes * per_plane
    nodes, links = ring_of_rings(planes, per_plane)
    plan = AddressPlan.build(unique_prefix, nodes, links,
                             mgmt_subnet=f"172.{random.randint(16, 29)}.0.0/16")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    fabric = OvsFabric(runner, ledger, FabricConfig(controller_port=None))
    cgroups = CgroupManager(detect_hierarchy(), unique_prefix, ledger=ledger)
    backend = NetnsBackend(runner, ledger, plan, cgroups=cgroups)
    budgets = {x.name: Budget(cpu_cores=0.5, memory_bytes=512 << 20) for x in plan.nodes}
    phases: dict[str, float] = {}
    procs: list[NodeProcess] = []
    mem0 = mem_available_kb()
    t0 = time.monotonic()
    try:
        t = time.monotonic()
        fabric.create_bridges(plan.nodes)
        phases["bridges"] = time.monotonic() - t
        # Links first without waiting: ovs-vswitchd adds their ports (its long pole) while
        # this process creates the nodes on the other core.
        t = time.monotonic()
        fabric.create_links(plan.links, wait=False)
        phases["links"] = time.monotonic() - t
        t = time.monotonic()
        backend.create_management()
        backend.create_nodes(budgets=budgets)
        phases["nodes"] = time.monotonic() - t
        t = time.monotonic()
        fabric.wait_links(plan.links)
        phases["ovs-wait"] = time.monotonic() - t
        up_s = time.monotonic() - t0
        time.sleep(2.0)  # let deferred kernel/OVS work settle before reading memory
        mem_per_node_mb = (mem0 - mem_available_kb()) / 1024 / n
        # sanity: the nodes are alive (management pings to a few of them)
        for node in random.sample(plan.nodes, 3):
            done = subprocess.run(["ping", "-n", "-c", "1", "-W", "2", node.mgmt_ip],
                                  capture_output=True, text=True, timeout=10)
            assert done.returncode == 0, f"{node.name}: {done.stdout}"
        agents = _agents(backend, plan, tmp_path, procs) if n == AGENTS_AT else None
    finally:
        report = teardown(ledger, runner)
        ledger.close()
        for proc in procs:  # reap the agents teardown stopped
            if proc.popen is not None:
                proc.popen.wait(timeout=10)
    assert report.ok, report.summary()
    down_s = report.elapsed_s
    target_up_s = TARGET_S_PER_1000 * n / 1000
    steps = {**fabric.timings_s, **backend.timings_s}
    print(
        f"\n{'N':>5} {'links':>6} {'up s':>7} {'target s':>9} {'MB/node':>8} {'target':>7} "
        f"{'down s':>7}  phases (s)\n"
        f"{n:>5} {len(plan.links):>6} {up_s:>7.1f} {'<' + format(target_up_s, '.0f'):>9} "
        f"{mem_per_node_mb:>8.2f} {'<15':>7} {down_s:>7.1f}  "
        + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
        + "\n      up steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items())
        + "\n      down by kind (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds_by_kind.items())
    )
    if agents is not None:
        agents_s, agent_mb = agents
        print(f"      + an agent on every node: all healthy in {agents_s:.1f} s, "
              f"{agent_mb:.1f} MB per node more ({mem_per_node_mb + agent_mb:.1f} MB/node with "
              f"agents; 1,000 eager agents would need ~{agent_mb * 1000 / 1024:.1f} GB: "
              f"`nodes.agents: auto` starts them on demand above {EAGER_MAX_NODES} nodes)")
    assert up_s < target_up_s * 3, f"{up_s:.1f} s is far over the {target_up_s:.0f} s target"


def _agents(backend: NetnsBackend, plan: AddressPlan, folder: Path,
            procs: list[NodeProcess]) -> tuple[float, float]:
    """Start every node's agent with the run's token (into `procs`), wait until all answer;
    seconds taken and host memory per node they added."""
    backend.token_file = write_token(folder)
    mem1 = mem_available_kb()
    t = time.monotonic()
    for x in plan.nodes:
        procs.append(backend.spawn(
            x.name, backend.agent_argv(x.name, mgmt_port=AGENT_PORT, results=folder),
            log_path=folder / f"agent-{x.name}.log"))
    map_nodes(lambda name: client.wait_healthy(f"{plan.node(name).mgmt_ip}:{AGENT_PORT}",
                                               timeout_s=300), [x.name for x in plan.nodes])
    agents_s = time.monotonic() - t
    time.sleep(2.0)
    return agents_s, (mem1 - mem_available_kb()) / 1024 / len(plan.nodes)
