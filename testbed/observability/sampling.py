"""What the exporter samples off the clock's thread: satellite positions from the orbit engine,
a trace's programmed rate around an instant, a node cgroup's CPU and memory use.

Owns reading these sources; never writes to the network, the shaper or a cgroup.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from testbed.orbit import GroundStation, Satellite, ecef_to_geodetic, look_angles, propagate

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Positions:
    """Where each satellite is at one scenario instant, and which stations see it."""

    lat_deg: np.ndarray
    lon_deg: np.ndarray
    alt_m: np.ndarray
    visible: np.ndarray
    """(satellites, stations) bool: above the station's elevation mask."""


class PositionSampler:
    """Positions of `satellites` (node order) at scenario instants, for the exporter's thread.

    One vectorised sgp4 call per sample (about a millisecond for a thousand satellites)."""

    def __init__(self, satellites: Sequence[Satellite], stations: Sequence[GroundStation],
                 epoch: datetime) -> None:
        self.satellites = list(satellites)
        self.stations = list(stations)
        self.epoch64 = np.datetime64(epoch.replace(tzinfo=None), "ns")

    def at(self, scenario_t_ns: int) -> Positions:
        times = np.array([self.epoch64 + np.timedelta64(int(scenario_t_ns), "ns")])
        xyz_km = propagate(self.satellites, times).positions_km[:, 0, :]
        lat, lon, alt_km = ecef_to_geodetic(xyz_km)
        visible = np.zeros((len(self.satellites), len(self.stations)), bool)
        for j, gs in enumerate(self.stations):
            visible[:, j] = look_angles(xyz_km, gs).elevation_deg >= gs.min_elevation_deg
        return Positions(lat, lon, alt_km * 1e3, visible)


class ProgramRate:
    """A trace program's delivery rate over the window before an offset (bits per second).

    `opportunities_ns` repeat every `period_ns`, each lets `opportunity_bytes` through."""

    def __init__(self, opportunities_ns: Sequence[int], period_ns: int,
                 opportunity_bytes: int) -> None:
        self._opp = np.asarray(opportunities_ns, dtype=np.int64)
        self._period_ns = int(period_ns)
        self._bytes = opportunity_bytes

    def rate_bps(self, offset_ns: int, window_ns: int = NS_PER_S) -> float:
        """Rate over [offset - window, offset) of the repeating program."""
        if self._period_ns <= 0 or window_ns <= 0:
            return float("nan")
        end = offset_ns % self._period_ns
        start = end - window_ns
        count = 0
        whole, start_rem = divmod(start, self._period_ns)  # whole <= 0 when the window wraps
        count += (-whole) * len(self._opp) if whole < 0 else 0
        lo = int(np.searchsorted(self._opp, start_rem, side="left"))
        hi = int(np.searchsorted(self._opp, end, side="left"))
        count += hi - lo
        return count * self._bytes * 8 / (window_ns / 1e9)


@dataclass(frozen=True)
class NodeUsage:
    cpu_s: float
    throttled_s: float | None
    memory_bytes: int | None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat_kv(path: Path) -> dict[str, int]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _pid_cpu_s(pid: int) -> float:
    """utime + stime of a process (fields 14, 15 of /proc/PID/stat); 0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def node_usage(version: str, dirs: Sequence[Path], pids: Sequence[int]) -> NodeUsage:
    """CPU and memory of one node cgroup (`NodeCgroup.version`, `.dirs`, `.pids()`).

    cgroup v2: cpu.stat's usage_usec (the whole cgroup's history) and memory.current. v1 (the
    cpu controller without cpuacct here): the CPU of the processes now inside, so a process
    that left or died stops counting (the counter may then step down: a counter reset to
    Prometheus), and memory.usage_in_bytes.
    """
    cpu_dir, mem_dir = dirs[0], dirs[-1]
    stat = _stat_kv(cpu_dir / "cpu.stat")
    if version == "v2":
        cpu_s = stat.get("usage_usec", 0) / 1e6
        throttled = stat.get("throttled_usec")
        return NodeUsage(cpu_s, None if throttled is None else throttled / 1e6,
                         _read_int(mem_dir / "memory.current"))
    throttled_ns = stat.get("throttled_time")
    return NodeUsage(sum(_pid_cpu_s(p) for p in pids),
                     None if throttled_ns is None else throttled_ns / 1e9,
                     _read_int(mem_dir / "memory.usage_in_bytes"))
