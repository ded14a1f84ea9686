"""Device profiles: the CPU and memory budget of an on-board computer or ground server.

Owns the profile registry (kebab-case names shared with scenario YAML: `jetson-agx-xavier`,
`jetson-orin`, `gs-server`, plus custom profiles from scenario data) and the CPU calibration that
turns a board's speed into a cgroup CPU quota on *this* host. Does not create cgroups
(testbed.cgroups does).

How the quota is computed:

    quota_cores = profile.cores * profile.core_speed_vs_reference / host_core_speed_vs_reference

`core_speed_vs_reference` is the board's single-core speed relative to a *reference core*;
`host_core_speed_vs_reference` is measured here by timing a fixed pure-Python kernel
(`reference_kernel`, single-threaded, integer and dict work like control-plane code) and dividing
its time on the reference core (`REFERENCE_KERNEL_S`) by its time on this host. The result is
cached per CPU model and Python version in `<cache_dir>/cpu-calibration.json`.

Where the numbers come from (ESTIMATES, roughly +-30 %):
- Reference core: the development host's core (a virtualised AMD EPYC server core), whose
  `reference_kernel` time under CPython 3.11 is `REFERENCE_KERNEL_S`; such a core scores about
  1,200 in Geekbench 5 single-core (public Geekbench browser results for EPYC Milan/Genoa).
- Jetson AGX Xavier (8x NVIDIA Carmel ARMv8.2 @ 2.26 GHz, 32 GB): Geekbench 5 single-core about
  480 in public results -> 0.40 of the reference core.
- Jetson AGX Orin 64GB (12x Cortex-A78AE @ 2.2 GHz, 64 GB): Geekbench 5 single-core about 780
  in public results -> 0.65 of the reference core.
- gs-server: a GPU ground server of the reference core's class (32 cores, 128 GB).
Boards share memory between CPU and GPU; the limit is the board's total memory. Measure the real
boards with `reference_kernel` in the lab and update these numbers when possible.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testbed.cgroups import Budget
from testbed.errors import InputError, TestbedError

GIB = 1024**3
MIB = 1024**2
REFERENCE_KERNEL_VERSION = 1
REFERENCE_KERNEL_ITERATIONS = 400_000
# Best-of-7 time of reference_kernel() on the reference core (development host, CPython 3.11).
REFERENCE_KERNEL_S = 0.14
CALIBRATION_FILE = "cpu-calibration.json"
_KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class DeviceProfile:
    """A device's budget. `core_speed_vs_reference`: single-core speed / reference core's."""

    name: str
    cores: int
    core_speed_vs_reference: float
    memory_bytes: int
    source: str = ""

    def __post_init__(self) -> None:
        if not _KEBAB.match(self.name):
            raise InputError(f"profile name {self.name!r}: expected kebab-case like "
                             "'jetson-orin'", field="profile")
        if self.cores < 1:
            raise InputError(f"profile {self.name}: cores={self.cores}, expected >= 1",
                             field="cores")
        if not 0 < self.core_speed_vs_reference <= 100:
            raise InputError(f"profile {self.name}: core_speed_vs_reference="
                             f"{self.core_speed_vs_reference}, expected in (0, 100]",
                             field="core_speed_vs_reference")
        if self.memory_bytes < 16 * MIB:
            raise InputError(f"profile {self.name}: memory_bytes={self.memory_bytes}, "
                             "expected >= 16 MiB", field="memory_bytes")


PROFILES: dict[str, DeviceProfile] = {}


def register_profile(profile: DeviceProfile) -> DeviceProfile:
    """Add a profile to the registry; InputError if the name is taken."""
    if profile.name in PROFILES:
        raise InputError(f"profile {profile.name!r} already registered", field="profile")
    PROFILES[profile.name] = profile
    return profile


def get_profile(name: str) -> DeviceProfile:
    """The registered profile `name`; InputError listing the valid names otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise InputError(f"unknown device profile {name!r}; choose: "
                         + ", ".join(sorted(PROFILES)), field="profile") from None


def profile_from_mapping(name: str, data: Mapping[str, Any]) -> DeviceProfile:
    """A custom profile from scenario data: {cores, core_speed_vs_reference, memory_mib}."""
    allowed = {"cores", "core_speed_vs_reference", "memory_mib", "source"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InputError(f"profile {name}: unknown fields {unknown}; expected: "
                         + ", ".join(sorted(allowed)), field="profile")
    missing = sorted({"cores", "core_speed_vs_reference", "memory_mib"} - set(data))
    if missing:
        raise InputError(f"profile {name}: missing fields {missing}", field="profile")
    try:
        return DeviceProfile(
            name=name,
            cores=int(data["cores"]),
            core_speed_vs_reference=float(data["core_speed_vs_reference"]),
            memory_bytes=int(float(data["memory_mib"]) * MIB),
            source=str(data.get("source", "scenario")),
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"profile {name}: {exc}", field="profile") from exc


register_profile(DeviceProfile(
    "jetson-agx-xavier", cores=8, core_speed_vs_reference=0.40, memory_bytes=32 * GIB,
    source="estimate: Geekbench 5 single-core ~480 vs ~1200 for the reference core",
))
register_profile(DeviceProfile(
    "jetson-orin", cores=12, core_speed_vs_reference=0.65, memory_bytes=64 * GIB,
    source="estimate: Jetson AGX Orin 64GB, Geekbench 5 single-core ~780 vs ~1200",
))
register_profile(DeviceProfile(
    "gs-server", cores=32, core_speed_vs_reference=1.0, memory_bytes=128 * GIB,
    source="estimate: GPU ground server with reference-class cores",
))


def reference_kernel(iterations: int = REFERENCE_KERNEL_ITERATIONS) -> int:
    """A fixed single-threaded pure-Python workload (integer arithmetic, dict reads/writes)."""
    acc = 0
    table: dict[int, int] = {}
    total = 0
    for i in range(iterations):
        acc = (acc * 1103515245 + 12345 + i) & 0xFFFFFFFF
        table[acc & 4095] = i
        total += table.get((acc >> 7) & 4095, 0) & 7
    return acc ^ total ^ len(table)


@dataclass(frozen=True)
class Calibration:
    """This host's speed on the reference kernel."""

    host_kernel_s: float
    host_core_speed_vs_reference: float
    cpu_model: str
    python: str
    kernel_version: int
    measured_unix_s: float


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_kernel_s(repeats: int = 7) -> float:
    """Best time of `repeats` runs of the reference kernel (best-of filters other load)."""
    if repeats < 1:
        raise InputError(f"repeats={repeats}, expected >= 1")
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        reference_kernel()
        best = min(best, time.perf_counter() - t0)
    return best


def calibrate(cache_dir: str | Path, *, force: bool = False, repeats: int = 7) -> Calibration:
    """This host's calibration, from the cache when it matches this CPU and Python."""
    path = Path(cache_dir) / CALIBRATION_FILE
    key = {
        "cpu_model": _cpu_model(),
        "python": f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}",
        "kernel_version": REFERENCE_KERNEL_VERSION,
    }
    if not force and path.exists():
        try:
            cached = json.loads(path.read_text())
            if all(cached.get(k) == v for k, v in key.items()):
                return Calibration(**cached)
        except (ValueError, TypeError) as exc:
            raise TestbedError(
                f"calibration cache {path} is unreadable ({exc}); delete it") from exc
    kernel_s = measure_kernel_s(repeats)
    cal = Calibration(
        host_kernel_s=kernel_s,
        host_core_speed_vs_reference=REFERENCE_KERNEL_S / kernel_s,
        cpu_model=key["cpu_model"],
        python=key["python"],
        kernel_version=REFERENCE_KERNEL_VERSION,
        measured_unix_s=time.time(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(asdict(cal), indent=2))
    tmp.replace(path)
    return cal


def budget_for(profile: DeviceProfile, calibration: Calibration) -> Budget:
    """The cgroup budget that gives `profile`'s CPU speed and memory on this host."""
    cpu_cores = (profile.cores * profile.core_speed_vs_reference
                 / calibration.host_core_speed_vs_reference)
    return Budget(cpu_cores=cpu_cores, memory_bytes=profile.memory_bytes)
