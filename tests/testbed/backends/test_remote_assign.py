"""Which inventory host runs which node (no host is contacted: pure selection logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.backends.base import NodeBackendError
from testbed.backends.remote import RemoteBackend
from testbed.backends.remote_ssh import SshTarget, remote_command
from testbed.errors import InputError
from testbed.fabric.addressing import AddressPlan, NodeSpec
from testbed.inventory import Inventory, InventoryError, InventoryHost
from testbed.ledger import Ledger
from testbed.sysrun import Runner


def _host(name: str, role: str, board: str | None = None) -> InventoryHost:
    return InventoryHost(name=name, role=role, address=f"{name}.lab", user="tb",
                         key_path=Path("/k"), known_hosts=Path("/kh"), board=board)


INV = Inventory(hosts=[_host("kvm1", "hypervisor"), _host("j1", "board", "jetson-orin"),
                       _host("j2", "board", "jetson-orin"), _host("gpu1", "ground-server")])
PLAN = AddressPlan.build("tasg", [NodeSpec("s0"), NodeSpec("s1"), NodeSpec("s2"),
                                  NodeSpec("gs", role="ground")])


def _backend(tmp_path: Path, **kwargs) -> RemoteBackend:
    return RemoteBackend(Runner(), Ledger(tmp_path / "l.jsonl"), PLAN, INV,
                         run_dir=tmp_path / "run", **kwargs)


def test_default_assignment_by_role_in_inventory_order(tmp_path: Path) -> None:
    be = _backend(tmp_path)
    assert [be.host_of(n).name for n in ("s0", "s1", "gs")] == ["j1", "j2", "gpu1"]
    assert be.mgmt_address("s1") == "j2.lab"
    with pytest.raises(NodeBackendError, match=r"node s2: no inventory host for it \(role "
                       r"satellite\)"):
        be.host_of("s2")
    assert be.python("s0") == "/tmp/testbed/tasg-s0/venv/bin/python"


def test_explicit_assignment_and_its_errors(tmp_path: Path) -> None:
    be = _backend(tmp_path, assign={"s2": "j1"})
    # explicit first; the others take the boards nobody was given, in order
    assert [be.host_of(n).name for n in ("s2", "s0")] == ["j1", "j2"]
    with pytest.raises(NodeBackendError, match="node s1: no inventory host"):
        be.host_of("s1")
    with pytest.raises(InputError, match="assign: unknown node 's9'; the plan has: gs, s0"):
        _backend(tmp_path, assign={"s9": "j1"})
    with pytest.raises(InventoryError, match="unknown host 'j7'; the inventory has: kvm1"):
        _backend(tmp_path, assign={"s0": "j7"})
    with pytest.raises(InputError, match="needs a lab inventory"):
        RemoteBackend(Runner(), Ledger(tmp_path / "l.jsonl"), PLAN, None, run_dir=tmp_path)


def test_ssh_target_round_trips_through_ledger_details() -> None:
    t = SshTarget.from_host(INV.host("j1"), connect_timeout_s=4.0)
    assert SshTarget.from_details({"node": "s0", **t.to_details()}) == t
    assert t.where == "j1 (tb@j1.lab:22)"


def test_remote_command_quotes_every_word() -> None:
    line = remote_command(["echo", "a; rm -rf /", "$HOME"], cwd="/x y", env={"K": "v w"})
    assert line == "cd '/x y' && env 'K=v w' echo 'a; rm -rf /' '$HOME'"
