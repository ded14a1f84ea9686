"""A satellite guest's libvirt domain: the XML (pure) and the choice between KVM and TCG.

Owns `DomainSpec` (what one guest is: name, vCPUs, memory, kernel, initramfs, its two NICs as
existing taps) and `domain_xml(spec)`, and `probe_accel()`: KVM when /dev/kvm opens and
creates a VM and a vCPU, TCG (`type='qemu'`, about 10x slower) otherwise, with the reason.
Does not talk to libvirt (testbed.backends.libvirt does) nor create the taps.
"""

from __future__ import annotations

import fcntl
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import quoteattr

from testbed.errors import InputError

Accel = Literal["kvm", "qemu"]
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_CREATE_VCPU = 0xAE41
KVM_API_VERSION = 12
MIN_GUEST_MEMORY_BYTES = 512 << 20  # the guest root (~250 MB unpacked) lives in guest RAM
KERNEL_CMDLINE = "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=4 net.ifnames=0"


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    reason: str


def probe_accel(kernel: Path | None = None, *, device: str = "/dev/kvm",
                timeout_s: float = 20.0) -> AccelChoice:
    """KVM when `device` creates a VM and a vCPU *and* (given `kernel`) QEMU boots that kernel
    under KVM with the domain's CPU model (`-cpu host`) to its "no root" panic within
    `timeout_s`; TCG otherwise, saying why. The boot check matters: nested hosts may accept
    the ioctls yet fail or hang real guests."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return AccelChoice("qemu", f"{device}: {exc.strerror}: TCG emulation")
    vm = -1
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        if version != KVM_API_VERSION:
            return AccelChoice("qemu", f"{device}: KVM API {version}, expected "
                                       f"{KVM_API_VERSION}: TCG emulation")
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
        os.close(vcpu)
    except OSError as exc:
        return AccelChoice("qemu", f"{device}: KVM refuses to create a VM or vCPU "
                                   f"({exc.strerror}): TCG emulation")
    finally:
        if vm >= 0:
            os.close(vm)
        os.close(fd)
    if kernel is None:
        return AccelChoice("kvm", f"{device} creates VMs and vCPUs (no boot check)")
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return AccelChoice("qemu", "qemu-system-x86_64 not on PATH for the KVM boot check")
    argv = [qemu, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-display",
            "none", "-serial", "stdio", "-no-reboot", "-kernel", str(kernel), "-append",
            "console=ttyS0 panic=-1 loglevel=4"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        return AccelChoice("qemu", f"a kernel under KVM printed no panic within "
                                   f"{timeout_s:.0f} s (the guest hangs): TCG emulation")
    output = proc.stdout + proc.stderr
    if "Kernel panic" in output or "Unable to mount root" in output:
        return AccelChoice("kvm", f"{device} boots a kernel under KVM: hardware virtualisation")
    last = output.strip().splitlines()[-1:] or ["(no output)"]
    return AccelChoice("qemu", f"QEMU with KVM failed to boot a kernel ({last[0][:160]}): "
                               "TCG emulation")


def choose_accel(option: str, kernel: Path | None = None) -> AccelChoice:
    """`option` is "auto" (probe, booting `kernel` when given), "kvm" or "qemu" (forced)."""
    if option == "auto":
        return probe_accel(kernel)
    if option in ("kvm", "qemu"):
        return AccelChoice(option, f"accel={option} set in the backend options")  # type: ignore[arg-type]
    raise InputError(f"libvirt backend: accel={option!r}, expected auto, kvm or qemu",
                     field="backend.accel")


@dataclass(frozen=True)
class DomainSpec:
    """One guest. `cpu_quota_cores`: a CFS cap on the whole guest (KVM only; under TCG the
    guest is already ~10x slower than the board it stands for)."""

    name: str
    node: str
    accel: Accel
    vcpus: int
    memory_bytes: int
    kernel: Path
    initramfs: Path
    mgmt_tap: str
    mgmt_mac: str
    data_tap: str
    data_mac: str
    console_log: Path
    cpu_quota_cores: float | None = None
    cmdline: str = KERNEL_CMDLINE
    tcg_cache_mib: int = 128

    def __post_init__(self) -> None:
        if self.vcpus < 1:
            raise InputError(f"domain {self.name} (node {self.node}): vcpus={self.vcpus}, "
                             "expected >= 1", field="vcpus")
        if self.memory_bytes < MIN_GUEST_MEMORY_BYTES:
            raise InputError(f"domain {self.name} (node {self.node}): memory_bytes="
                             f"{self.memory_bytes}, expected >= {MIN_GUEST_MEMORY_BYTES} "
                             "(the guest root lives in RAM)", field="memory_bytes")


def vcpus_and_memory(cpu_cores: float | None, memory_bytes: int | None, *, max_vcpus: int,
                     max_memory_bytes: int, default_memory_bytes: int
                     ) -> tuple[int, int]:
    """vCPUs (whole cores covering the budget, capped) and memory (budget, capped)."""
    vcpus = 1 if cpu_cores is None else max(1, math.ceil(cpu_cores - 1e-9))
    memory = default_memory_bytes if memory_bytes is None else memory_bytes
    return min(vcpus, max_vcpus), max(MIN_GUEST_MEMORY_BYTES, min(memory, max_memory_bytes))


def domain_xml(spec: DomainSpec) -> str:
    """Transient-domain XML: direct kernel boot, serial console to a file, two virtio NICs on
    existing taps (`managed='no'`: the backend made and ledgered them), qemu as root without
    relabelling (kernel and image are shared, read-only, across runs)."""
    q = quoteattr
    kib = spec.memory_bytes // 1024
    cputune = ""
    if spec.cpu_quota_cores is not None and spec.accel == "kvm":
        period_us = 100_000
        quota_us = max(1000, round(spec.cpu_quota_cores / spec.vcpus * period_us))
        cputune = (f"  <cputune><period>{period_us}</period><quota>{quota_us}</quota>"
                   "</cputune>\n")
    cpu = "  <cpu mode='host-passthrough'/>\n" if spec.accel == "kvm" else ""
    tcg = "" if spec.accel == "kvm" else (  # QEMU's default translation cache is 1 GiB
        f"<tcg><tb-cache unit='MiB'>{spec.tcg_cache_mib}</tb-cache></tcg>")
    no_offload = ("<driver name='qemu'><host csum='off' gso='off' tso4='off' tso6='off' "
                  "ecn='off' ufo='off'/><guest csum='off' tso4='off' tso6='off' ecn='off' "
                  "ufo='off'/></driver>")
    return (
        f"<domain type={q(spec.accel)}>\n"
        f"  <name>{_text(spec.name)}</name>\n"
        f"  <title>testbed node {_text(spec.node)}</title>\n"
        f"  <memory unit='KiB'>{kib}</memory>\n"
        f"  <vcpu placement='static'>{spec.vcpus}</vcpu>\n"
        f"{cputune}"
        "  <os>\n"
        "    <type arch='x86_64' machine='pc'>hvm</type>\n"
        f"    <kernel>{_text(str(spec.kernel))}</kernel>\n"
        f"    <initrd>{_text(str(spec.initramfs))}</initrd>\n"
        f"    <cmdline>{_text(spec.cmdline)}</cmdline>\n"
        "  </os>\n"
        f"  <features><acpi/>{tcg}</features>\n"
        f"{cpu}"
        "  <clock offset='utc'/>\n"
        "  <on_poweroff>destroy</on_poweroff>\n"
        "  <on_reboot>destroy</on_reboot>\n"
        "  <on_crash>destroy</on_crash>\n"
        "  <devices>\n"
        "    <interface type='ethernet'>\n"
        f"      <mac address={q(spec.mgmt_mac)}/>\n"
        f"      <target dev={q(spec.mgmt_tap)} managed='no'/>\n"
        "      <model type='virtio'/>\n"
        "    </interface>\n"
        "    <interface type='ethernet'>\n"
        f"      <mac address={q(spec.data_mac)}/>\n"
        f"      <target dev={q(spec.data_tap)} managed='no'/>\n"
        "      <model type='virtio'/>\n"
        f"      {no_offload}\n"
        "    </interface>\n"
        "    <serial type='file'>\n"
        f"      <source path={q(str(spec.console_log))}/>\n"
        "      <target port='0'/>\n"
        "    </serial>\n"
        "    <controller type='usb' model='none'/>\n"
        "    <memballoon model='none'/>\n"
        "  </devices>\n"
        "  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>\n"
        "</domain>\n"
    )


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
