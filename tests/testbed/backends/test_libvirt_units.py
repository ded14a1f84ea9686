"""The libvirt backend's pure parts: archive format, guest config, domain XML, recipe key,
mirror parsing, budgets to vCPUs and memory. No root, no libvirt."""

from __future__ import annotations

import gzip
import io
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from testbed.backends.libvirt_cpio import (
    ArchiveError,
    Member,
    NewcWriter,
    members_with_parents,
    read_names,
)
from testbed.backends.libvirt_domain import (
    MIN_GUEST_MEMORY_BYTES,
    DomainSpec,
    choose_accel,
    domain_xml,
    probe_accel,
    vcpus_and_memory,
)
from testbed.backends.libvirt_guest import GuestConfig, mgmt_mac_for
from testbed.backends.libvirt_image import ImageBuildError, Recipe, apt_mirror
from testbed.errors import InputError
from testbed.fabric.addressing import AddressPlan, NodeSpec


def _plan() -> AddressPlan:
    return AddressPlan.build("tu1", [NodeSpec("sat0"), NodeSpec("sat1"),
                                     NodeSpec("gs", role="ground")])


def test_newc_archive_lists_members_in_order_with_parents() -> None:
    members = members_with_parents([Member("etc/testbed/node.env", 0o644, b"A=1\n"),
                                    Member("etc/ssh/key", 0o600, b"k"),
                                    Member("bin/sh", 0o777, target="dash")])
    buf = io.BytesIO()
    w = NewcWriter(buf)
    w.add_many(members)
    w.close()
    data = buf.getvalue()
    assert len(data) % 512 == 0
    assert read_names(data) == ["etc", "etc/testbed", "etc/testbed/node.env", "etc/ssh",
                                "etc/ssh/key", "bin", "bin/sh"]


def test_newc_archive_is_read_by_cpio(tmp_path: Path) -> None:
    """GNU cpio (the reference reader) extracts what NewcWriter wrote, contents intact."""
    if shutil.which("cpio") is None:
        pytest.skip("binary 'cpio' not found on PATH (apt-get install cpio)")
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f.txt").write_text("hello")
    (src / "link").symlink_to("a/b/f.txt")
    archive = tmp_path / "x.cpio.gz"
    with gzip.open(archive, "wb") as gz:
        w = NewcWriter(gz)  # type: ignore[arg-type]
        assert w.write_tree(src) == 4
        w.close()
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(f"gzip -dc {shlex.quote(str(archive))} | cpio -idm --quiet", shell=True,
                   cwd=out, check=True)
    assert (out / "a" / "b" / "f.txt").read_text() == "hello"
    assert (out / "link").readlink() == Path("a/b/f.txt")


def test_member_names_must_be_relative() -> None:
    with pytest.raises(ArchiveError, match="relative"):
        Member("/etc/passwd", 0o644, b"")
    with pytest.raises(ArchiveError, match="relative"):
        Member("a/../../etc", 0o755)


def test_guest_config_round_trips_through_sh(tmp_path: Path) -> None:
    """node.env is shell: sourcing it gives back every value, agent argv intact."""
    plan = _plan()
    n = plan.node("sat1")
    argv = ["python3", "-m", "nodes.agent", "--name", "sat1", "--results", "/a b/'c'"]
    cfg = GuestConfig.for_node(n, plan.neighbours(), ["virtio_pci", "virtio_net"], argv)
    env = tmp_path / "node.env"
    env.write_text(cfg.env_text())
    script = (f'. {shlex.quote(str(env))}; eval "set -- $TESTBED_AGENT_ARGV"; '
              'printf "%s\\n" "$TESTBED_DATA_CIDR" "$TESTBED_MGMT_MAC" "$TESTBED_NEIGHBOURS" '
              '"$#" "$7"')
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == f"{n.data_ip}/{n.data_prefixlen}"
    assert out[1] == mgmt_mac_for(n.mgmt_ip)
    assert n.data_mac not in out[2]  # its own entry is left out
    assert out[2].split() == [f"{ip},{mac}" for ip, mac in plan.neighbours()
                              if mac != n.data_mac]
    assert out[3:] == [str(len(argv)), "/a b/'c'"]


def test_mgmt_and_data_macs_differ() -> None:
    plan = _plan()
    macs = [mgmt_mac_for(n.mgmt_ip) for n in plan.nodes] + [n.data_mac for n in plan.nodes]
    assert len(set(macs)) == len(macs)


def _spec(tmp_path: Path, **kw: object) -> DomainSpec:
    base = dict(name="tu1-vm0", node="sat0", accel="qemu", vcpus=2, memory_bytes=1 << 30,
                kernel=tmp_path / "vmlinuz", initramfs=tmp_path / "sat0.initramfs",
                mgmt_tap="tu1m0", mgmt_mac="02:01:ac:1e:00:02", data_tap="tu1d0",
                data_mac="02:00:0a:80:00:01", console_log=tmp_path / "c.log",
                cpu_quota_cores=1.5)
    base.update(kw)
    return DomainSpec(**base)  # type: ignore[arg-type]


def test_domain_xml_tcg(tmp_path: Path) -> None:
    root = ET.fromstring(domain_xml(_spec(tmp_path)))
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "tu1-vm0"
    assert root.findtext("vcpu") == "2"
    assert root.find("memory").text == str((1 << 30) // 1024)
    assert root.find("memory").get("unit") == "KiB"
    assert root.find("features/acpi") is not None
    assert root.findtext("os/kernel") == str(tmp_path / "vmlinuz")
    assert "rdinit=/init" in root.findtext("os/cmdline")
    ifaces = root.findall("devices/interface")
    assert [i.find("target").get("dev") for i in ifaces] == ["tu1m0", "tu1d0"]
    assert all(i.find("target").get("managed") == "no" for i in ifaces)
    assert ifaces[1].find("mac").get("address") == "02:00:0a:80:00:01"
    assert ifaces[1].find("driver/guest").get("csum") == "off"
    assert root.find("cputune") is None  # no CPU cap under TCG
    assert root.find("cpu") is None


def test_domain_xml_kvm_caps_cpu(tmp_path: Path) -> None:
    root = ET.fromstring(domain_xml(_spec(tmp_path, accel="kvm")))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"
    period = int(root.findtext("cputune/period"))
    quota = int(root.findtext("cputune/quota"))
    assert quota / period == pytest.approx(1.5 / 2)  # per vCPU


def test_domain_spec_rejects_too_little_memory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="memory_bytes=.*expected >= "):
        _spec(tmp_path, memory_bytes=64 << 20)


def test_vcpus_and_memory_from_budget() -> None:
    assert vcpus_and_memory(3.2, 32 << 30, max_vcpus=64, max_memory_bytes=1 << 40,
                            default_memory_bytes=1 << 30) == (4, 32 << 30)
    assert vcpus_and_memory(3.2, 32 << 30, max_vcpus=1, max_memory_bytes=1 << 30,
                            default_memory_bytes=1 << 30) == (1, 1 << 30)
    assert vcpus_and_memory(None, None, max_vcpus=4, max_memory_bytes=1 << 40,
                            default_memory_bytes=1 << 30) == (1, 1 << 30)
    assert vcpus_and_memory(0.3, 1 << 20, max_vcpus=4, max_memory_bytes=1 << 40,
                            default_memory_bytes=1 << 30) == (1, MIN_GUEST_MEMORY_BYTES)


def test_choose_accel_forced_and_invalid() -> None:
    assert choose_accel("qemu").accel == "qemu"
    assert "set in the backend options" in choose_accel("kvm").reason
    with pytest.raises(InputError, match="accel='xen', expected auto, kvm or qemu"):
        choose_accel("xen")


def test_probe_accel_without_device_falls_back_to_tcg(tmp_path: Path) -> None:
    choice = probe_accel(device=str(tmp_path / "no-kvm"))
    assert choice.accel == "qemu"
    assert "no-kvm" in choice.reason and "TCG" in choice.reason


def test_recipe_key_changes_with_inputs() -> None:
    a = Recipe().key("http://deb.debian.org/debian/")
    assert a == Recipe().key("http://deb.debian.org/debian/")
    assert a != Recipe(packages=("python3",)).key("http://deb.debian.org/debian/")
    assert a != Recipe().key("http://mirror.example/debian/")


def test_apt_mirror_reads_deb822_and_one_line(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://m.example/debian\nSuites: bookworm\n")
    assert apt_mirror([deb822]) == "http://m.example/debian/"
    one = tmp_path / "sources.list"
    one.write_text("deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert apt_mirror([tmp_path / "missing", one]) == "http://other.example/debian/"
    none = tmp_path / "none.list"
    none.write_text("deb https://packages.example/apt stable main\n")
    with pytest.raises(ImageBuildError, match="no Debian mirror"):
        apt_mirror([none])


def test_from_context_rejects_unknown_options_and_maps_paths(tmp_path: Path) -> None:
    from testbed.backends.base import BackendContext, NodeBackend, create_backend
    from testbed.backends.libvirt import LibvirtBackend
    from testbed.ledger import Ledger
    from testbed.sysrun import Runner

    ledger = Ledger(tmp_path / "ledger.jsonl")
    ctx = BackendContext(Runner(), ledger, _plan(), tmp_path / "run", tmp_path / "cache",
                         options={"kind": "libvirt", "accel": "qemu", "memroy_bytes": 1})
    with pytest.raises(InputError, match="unknown option.*memroy_bytes.*choose:.*memory_bytes"):
        LibvirtBackend.from_context(ctx)
    ctx = BackendContext(Runner(), ledger, _plan(), tmp_path / "run", tmp_path / "cache",
                         options={"kind": "libvirt", "accel": "qemu", "max_vcpus": 2})
    vms = create_backend("libvirt", ctx)  # the registry's path; checks the protocol
    assert isinstance(vms, LibvirtBackend) and isinstance(vms, NodeBackend)
    assert (vms.kind, vms.data_port, vms.accel_option) == ("libvirt", "backend", "qemu")
    assert vms.node_path("sat0", tmp_path / "run" / "results" / "a") == \
        "/var/lib/testbed/run/results/a"
    with pytest.raises(InputError, match="outside the run directory"):
        vms.node_path("sat0", tmp_path / "elsewhere")
    assert vms.python("sat0") == "python3"
    assert vms.domain_name(_plan().node("sat1")) == "tu1-vm1"
    ledger.close()


def test_unreachable_mirror_is_a_clear_error() -> None:
    from testbed.backends.libvirt_image import check_mirror

    with pytest.raises(ImageBuildError, match=r"mirror http://127.0.0.1:9/debian/ unreachable"):
        check_mirror("http://127.0.0.1:9/debian/", "bookworm", timeout_s=5)


def test_missing_debootstrap_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from testbed.backends.libvirt_image import build_image
    from testbed.errors import SystemRequirementError

    if os.geteuid() != 0:
        pytest.skip("needs root: build_image refuses to run without it before looking further")
    monkeypatch.setenv("PATH", str(tmp_path))  # no binaries at all
    with pytest.raises(SystemRequirementError, match="'debootstrap' not found"):
        build_image(tmp_path / "cache")
