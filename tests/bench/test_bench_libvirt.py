"""Benchmark: satellite VMs (libvirt backend) for 1 and 2 guests started together: seconds from
`create_nodes` to the agent answering /health on the management network, and the resident
memory of each guest's qemu process, printed beside the expected figures (TCG: about 3 s to a
shell and about 220 MB per guest with the whole root in RAM; the agent's Python adds to both).

The image is built once (cached); libvirtd is started before the clock runs; the KVM/TCG probe
runs once for the module.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.backends.libvirt_domain import AccelChoice, choose_accel
from testbed.fabric import AddressPlan, FabricConfig, NodeSpec, OvsFabric, ensure_ovs_daemon
from testbed.ledger import Ledger, teardown
from testbed.sysrun import Runner
from tests.conftest import require_binary, require_root
from tests.testbed.backends.test_libvirt import built_image, cache_dir, leftovers

pytestmark = [pytest.mark.bench, pytest.mark.vm, pytest.mark.root]
AGENT_PORT = 9100
EXPECTED_BOOT_S = 3.0  # TCG, to a shell (measured when the design was written)
EXPECTED_RSS_MB = 220.0


@pytest.fixture(scope="module")
def guest_image():  # noqa: ANN201 - GuestImage
    require_root()
    require_binary("ovs-vsctl", "ip")
    return built_image()


@pytest.fixture(scope="module")
def ovs_daemon(guest_image) -> Runner:
    runner = Runner()
    ensure_ovs_daemon(runner)
    return runner


@pytest.fixture(scope="module")
def accel(guest_image) -> AccelChoice:
    return choose_accel("auto", guest_image.kernel_path)


def _health_times(ips: dict[str, str], t0: float, stop: threading.Event,
                  out: dict[str, float]) -> None:
    while not stop.is_set() and len(out) < len(ips):
        for node, ip in ips.items():
            if node in out:
                continue
            try:
                with urllib.request.urlopen(f"http://{ip}:{AGENT_PORT}/health",
                                            timeout=1) as r:
                    if json.loads(r.read()).get("name") == node:
                        out[node] = time.monotonic() - t0
            except OSError:
                pass
        time.sleep(0.1)


def _qemu_rss_mb(domain: str) -> float:
    pid = int(Path(f"/run/libvirt/qemu/{domain}.pid").read_text().strip())
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for qemu of {domain} (pid {pid})")


def _boot(count: int, image, accel: AccelChoice, runner: Runner, tmp: Path
          ) -> Iterator[list[tuple[str, float, float, float]]]:
    from testbed.backends.libvirt import LibvirtBackend

    prefix = "b" + os.urandom(3).hex()[:5]
    names = [f"sat{i}" for i in range(count)]
    plan = AddressPlan.build(prefix, [NodeSpec(n) for n in names],
                             mgmt_subnet=f"172.{random.randint(16, 29)}."
                                         f"{random.randint(0, 255)}.0/24")
    ledger = Ledger(tmp / "ledger.jsonl")
    agents = {n: ["python3", "-m", "nodes.agent", "--name", n, "--role", "satellite",
                  "--mgmt-listen", f"{plan.node(n).mgmt_ip}:{AGENT_PORT}"] for n in names}
    vms = LibvirtBackend(runner, ledger, plan, tmp, cache_dir(), image=image,
                         accel=accel.accel, agents=agents)
    try:
        OvsFabric(runner, ledger, FabricConfig(controller_port=None)).create_bridges(plan.nodes)
        vms.create_management()
        vms.connection()  # libvirtd up before the clock runs
        health: dict[str, float] = {}
        stop = threading.Event()
        t0 = time.monotonic()
        poller = threading.Thread(target=_health_times,
                                  args=({n: plan.node(n).mgmt_ip for n in names}, t0, stop,
                                        health))
        poller.start()
        try:
            vms.create_nodes()
            ssh_s = time.monotonic() - t0
            poller.join(timeout=120)
        finally:
            stop.set()
            poller.join()
        assert set(health) == set(names), f"agents answering: {sorted(health)}"
        rows = [(n, ssh_s, health[n], _qemu_rss_mb(vms.domain_name(plan.node(n))))
                for n in names]
        print(f"\n  {count} VM(s): {vms.timings_s}")
        yield rows
    finally:
        vms.close()
        report = teardown(ledger, runner)
        ledger.close()
        assert report.ok, report.summary()
        assert not any(leftovers(prefix).values())


def test_bench_vm_boot_and_memory(guest_image, accel: AccelChoice, ovs_daemon: Runner,
                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    table: list[str] = [
        f"libvirt guests ({accel.accel}: {accel.reason})",
        f"{'VMs':>3} {'node':>5} {'all SSH s':>9} {'agent /health s':>15} {'qemu RSS MB':>11}"
        f"   expected: ~{EXPECTED_BOOT_S:.0f} s to a shell, ~{EXPECTED_RSS_MB:.0f} MB (TCG)",
    ]
    for count in (1, 2):
        gen = _boot(count, guest_image, accel, ovs_daemon, tmp_path_factory.mktemp(f"b{count}"))
        rows = next(gen)
        for node, ssh_s, health_s, rss_mb in rows:
            table.append(f"{count:>3} {node:>5} {ssh_s:>9.1f} {health_s:>15.1f} "
                         f"{rss_mb:>11.0f}")
            assert 0 < health_s < 300
            assert 50 < rss_mb < 2048  # a guest with 1 GiB of RAM, its root unpacked in it
        gen.close()  # teardown and leftover check
    print("\n" + "\n".join(table))
