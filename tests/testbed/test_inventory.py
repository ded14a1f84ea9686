"""The lab inventory: the documented example loads; every bad input names file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.inventory import InventoryError, load_inventory

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "experiments" / "lab" / "inventory.example.yaml"

GOOD = """\
hosts:
  - name: j1
    role: board
    address: 10.0.0.21
    user: testbed
    key_path: keys/id_ed25519
    known_hosts: /etc/testbed/known_hosts
    board: jetson-orin
    accelerators: [{kind: cuda-gpu, count: 1}]
    fabric_port: enp5s0
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    return path


def test_documented_example_loads() -> None:
    inv = load_inventory(EXAMPLE)
    assert [h.role for h in inv.hosts] == ["hypervisor", "board", "board", "ground-server"]
    assert [h.name for h in inv.by_role("board")] == ["jetson1", "jetson2"]
    j1 = inv.host("jetson1")
    assert j1.board == "jetson-agx-xavier" and j1.accelerators[0].kind == "cuda-gpu"
    assert j1.key_path.is_absolute() and "~" not in str(j1.key_path)
    assert j1.known_hosts == (EXAMPLE.parent / "lab" / "known_hosts").resolve()
    assert inv.host("kvm1").libvirt_uri.startswith("qemu+ssh://")
    assert j1.ssh_address == "192.168.10.21:22"


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    inv = load_inventory(_write(tmp_path, GOOD))
    h = inv.host("j1")
    assert h.port == 22 and h.python == "python3" and h.work_dir == "/tmp/testbed"
    assert h.key_path == (tmp_path / "keys" / "id_ed25519").resolve()
    with pytest.raises(InventoryError, match="unknown host 'j9'; the inventory has: j1"):
        inv.host("j9")


@pytest.mark.parametrize(("edit", "line", "field", "message"), [
    (lambda t: t + "    password: hunter2\n", 11, "hosts.0.password",
     "passwords are not accepted"),
    (lambda t: t.replace("jetson-orin", "jetson-nano"), 8, "hosts.0.board",
     "unknown device profile 'jetson-nano'; choose: gs-server, jetson-agx-xavier, jetson-orin"),
    (lambda t: t.replace("role: board", "role: boards"), 3, "hosts.0.role",
     "Input should be 'hypervisor', 'board' or 'ground-server'"),
    (lambda t: t + "    port: '22'\n", 11, "hosts.0.port", "valid integer"),
    (lambda t: t + "    port: 70000\n", 11, "hosts.0.port", "less than or equal to 65535"),
    (lambda t: t + "    colour: red\n", 11, "hosts.0.colour",
     "unknown key 'colour'; valid keys here: accelerators, address,"),
    (lambda t: t.replace("    user: testbed\n", ""), 2, "hosts.0.user",
     "required field is missing"),
    (lambda t: t.replace("    board: jetson-orin\n", ""), 2, "hosts.0",
     "role board needs `board`"),
    (lambda t: t + "    libvirt_uri: qemu:///system\n", 2, "hosts.0",
     "libvirt_uri is only for role hypervisor"),
    (lambda t: t.replace("count: 1", "count: 0"), 9, "hosts.0.accelerators.0.count",
     "greater than or equal to 1"),
    (lambda t: t.replace("fabric_port: enp5s0", "fabric_port: 'eth0; reboot'"), 10,
     "hosts.0.fabric_port", "'eth0; reboot' is not an interface name"),
    (lambda t: t + "    work_dir: relative/dir\n", 11, "hosts.0.work_dir",
     "must be an absolute folder"),
    (lambda t: t + t[len("hosts:\n"):], 11, "hosts.1.name",
     "host name 'j1' appears twice"),
    (lambda t: t.replace("name: j1", "name: J_1"), 2, "hosts.0.name", "kebab-case"),
])
def test_bad_inputs_name_file_line_field(tmp_path: Path, edit, line: int, field: str,
                                         message: str) -> None:
    path = _write(tmp_path, edit(GOOD))
    with pytest.raises(InventoryError) as err:
        load_inventory(path)
    text = str(err.value)
    assert f"{path}:{line}: {field}: " in text, text
    assert message in text, text
    assert err.value.path == str(path) and err.value.line == line and err.value.field == field


def test_syntax_and_shape_errors(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"inv.yaml:3: YAML syntax"):
        load_inventory(_write(tmp_path, "hosts:\n  - name: a\n  bad: [\n"))
    with pytest.raises(InventoryError, match=r"inv.yaml:1: the top level must be a mapping"):
        load_inventory(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(InventoryError, match=r"inv.yaml:1: hosts: List should have at least 1"):
        load_inventory(_write(tmp_path, "hosts: []\n"))
    with pytest.raises(InventoryError, match="file not found"):
        load_inventory(tmp_path / "missing.yaml")
