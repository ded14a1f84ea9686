"""Fixtures for the controller's tests: a running OVS, free ports, a 4-node ring with a controller.

Everything a fixture creates carries the test's unique prefix and is removed in teardown, also
when the test fails; teardown then checks that no bridge, port, link, namespace or controller
process survived.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.process import ControllerProcess
from tests.conftest import require_binary, require_root
from tests.controller.ctl_fabric import Fabric, Ring, ensure_ovs, free_port, process_alive


@pytest.fixture(scope="session")
def ovs() -> None:
    """Open vSwitch running (started once if needed, then left running for other tests)."""
    require_root()
    require_binary("ovs-vsctl", "ovs-ofctl", "ip", "ping")
    reason = ensure_ovs()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def ring4(ovs: None, unique_prefix: str, tmp_path: Path) -> Iterator[Ring]:
    """Nodes 0-1-2-3-0 (dpid = index + 1), controller with a state file, generation 1 applied."""
    of_port = free_port()
    ctl = ControllerProcess(
        of_port=of_port,
        api_port=free_port(),
        log_path=tmp_path / "controller.log",
        state_path=tmp_path / "controller-state.json",
    )
    fabric = Fabric(prefix=unique_prefix, of_port=of_port)
    pids: list[int] = []
    try:
        ctl.start()
        pids.append(ctl.pid or 0)
        fabric.add_nodes(4)
        for i in range(4):
            fabric.add_link(i, (i + 1) % 4)
        fabric.set_neighbours()
        fabric.add_control_path()
        ring = Ring(fabric, ctl)
        ring.push()
        yield ring
        if ctl.pid:
            pids.append(ctl.pid)
    finally:
        ctl.stop()
        fabric.teardown()
    assert fabric.leftovers() == []
    assert [pid for pid in pids if pid and process_alive(pid)] == []
