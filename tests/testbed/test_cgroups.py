"""Cgroups and device profiles: hierarchy detection, real CPU quota and memory limit,
calibration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.cgroups import (
    Budget,
    CgroupManager,
    Hierarchy,
    detect_hierarchy,
    parse_mountinfo,
    parse_proc_cgroup,
    remove_cgroup_dirs,
)
from testbed.errors import InputError, SystemRequirementError
from testbed.ledger import Ledger, teardown
from testbed.profiles import (
    CALIBRATION_FILE,
    Calibration,
    DeviceProfile,
    budget_for,
    calibrate,
    get_profile,
    profile_from_mapping,
)
from testbed.sysrun import Runner

V1_MOUNTINFO = """\
25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_MOUNTINFO = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
PROC_CGROUP_V1 = "4:memory:/user.slice/x\n2:cpu,cpuacct:/user.slice\n0::/user.slice/u\n"


def test_parse_mountinfo_and_proc_cgroup() -> None:
    mounts = parse_mountinfo(V1_MOUNTINFO)
    assert mounts == {"cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
                      "memory": Path("/sys/fs/cgroup/memory"),
                      "cgroup2": Path("/sys/fs/cgroup/unified")}
    assert parse_proc_cgroup(PROC_CGROUP_V1) == {
        "memory": "/user.slice/x", "cpu": "/user.slice", "cpuacct": "/user.slice",
        "": "/user.slice/u"}


def test_detect_prefers_v1_and_names_what_is_missing() -> None:
    h = detect_hierarchy(V1_MOUNTINFO, PROC_CGROUP_V1)
    assert (h.version, h.own_cpu, h.own_memory) == ("v1", "/user.slice", "/user.slice/x")
    with pytest.raises(SystemRequirementError, match="no cgroup hierarchy"):
        detect_hierarchy("25 24 0:22 / /sys rw - sysfs sysfs rw\n", "")


def test_detect_v2_needs_cpu_and_memory_controllers(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset io pids\n")
    info = f"35 24 0:30 / {tmp_path} rw - cgroup2 cgroup2 rw\n"
    with pytest.raises(SystemRequirementError, match=r"lacks controllers \['cpu', 'memory'\]"):
        detect_hierarchy(info, "0::/\n")
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    assert detect_hierarchy(info, "0::/svc\n") == Hierarchy("v2", tmp_path, tmp_path, "/svc",
                                                          "/svc")


def test_v2_writes_cpu_max_memory_max_and_enables_controllers(tmp_path: Path) -> None:
    """A fake cgroup2 tree (plain files): checks exactly what gets written."""
    (tmp_path / "svc").mkdir()
    h = Hierarchy("v2", tmp_path, tmp_path, "/svc", "/svc")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    mgr = CgroupManager(h, "run1", ledger=ledger)
    g = mgr.create("n0", Budget(cpu_cores=0.25, memory_bytes=64 << 20))
    assert g.dirs == (tmp_path / "svc" / "run1" / "n0",)
    assert (g.dirs[0] / "cpu.max").read_text() == "25000 100000"
    assert (g.dirs[0] / "memory.max").read_text() == str(64 << 20)
    assert (tmp_path / "svc" / "run1" / "cgroup.subtree_control").read_text() == "+cpu +memory"
    unlimited = mgr.create("n1", Budget())
    assert (unlimited.dirs[0] / "cpu.max").read_text() == "max 100000"
    assert [e.name for e in ledger.entries()] == ["run1", "run1/n0", "run1/n1"]
    ledger.close()


def test_budget_validation() -> None:
    with pytest.raises(InputError, match="cpu_cores=0"):
        Budget(cpu_cores=0)
    with pytest.raises(InputError, match="memory_bytes=1000"):
        Budget(memory_bytes=1000)
    assert Budget(cpu_cores=0.25).cfs_quota_us() == 25_000
    assert Budget(cpu_cores=0.001).cfs_quota_us() == 1_000  # kernel minimum 1 ms
    assert Budget().cfs_quota_us() == -1


# --- real cgroups ------------------------------------------------------------------------------

@pytest.fixture
def manager(unique_prefix: str, tmp_path: Path) -> Iterator[CgroupManager]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates cgroups")
    try:
        h = detect_hierarchy()
    except SystemRequirementError as exc:
        pytest.skip(f"no usable cgroup hierarchy: {exc}")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    mgr = CgroupManager(h, unique_prefix, ledger=ledger)
    try:
        yield mgr
    finally:
        report = teardown(ledger, Runner())
        ledger.close()
        assert report.ok, report.summary()
        assert not any(d.exists() for d in mgr.run_group_dirs())


_BUSY = textwrap.dedent("""
    import time, sys
    t0 = time.monotonic(); c0 = time.process_time()
    while time.monotonic() - t0 < float(sys.argv[1]):
        pass
    print(time.process_time() - c0, time.monotonic() - t0)
""")


@pytest.mark.root
def test_cpu_quota_quarter_core(manager: CgroupManager) -> None:
    """A busy loop in a 0.25-CPU cgroup gets ~25 % of a core (its own CPU time / wall time)."""
    g = manager.create("busy", Budget(cpu_cores=0.25))
    done = subprocess.run([sys.executable, "-c", _BUSY, "2.0"], preexec_fn=g.attach_self,
                          capture_output=True, text=True, timeout=30, check=True)
    cpu_s, wall_s = map(float, done.stdout.split())
    share = cpu_s / wall_s
    assert 0.15 <= share <= 0.30, f"CPU share {share:.3f} for quota 0.25"
    stats = g.cpu_throttling()
    assert stats["nr_throttled"] >= 5, stats  # the quota, not luck, held it back


@pytest.mark.root
def test_memory_beyond_limit_is_oom_killed(manager: CgroupManager) -> None:
    g = manager.create("mem", Budget(memory_bytes=64 << 20))
    hog = "import sys; b = [b'x' * (16 << 20) for _ in range(int(sys.argv[1]))]; print('ok')"
    small = subprocess.run([sys.executable, "-c", hog, "1"], preexec_fn=g.attach_self,
                           capture_output=True, text=True, timeout=30)
    assert small.returncode == 0 and small.stdout.strip() == "ok"
    big = subprocess.run([sys.executable, "-c", hog, "16"], preexec_fn=g.attach_self,
                         capture_output=True, text=True, timeout=30)
    assert big.returncode in (-signal.SIGKILL, 1), big
    assert "ok" not in big.stdout
    events = g.memory_events()
    assert events.get("oom_kill", 0) >= 1 or events.get("failcnt", 0) > 0, events


@pytest.mark.root
def test_processes_left_in_a_cgroup_are_killed_on_removal(manager: CgroupManager) -> None:
    g = manager.create("left", Budget())
    proc = subprocess.Popen(["sleep", "300"], preexec_fn=g.attach_self)
    try:
        assert g.pids() == [proc.pid]
        assert remove_cgroup_dirs(g.dirs) is True
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert not any(d.exists() for d in g.dirs)
        assert remove_cgroup_dirs(g.dirs) is False  # already gone is fine
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- device profiles ---------------------------------------------------------------------------

def test_registry_and_unknown_profile() -> None:
    assert get_profile("jetson-agx-xavier").cores == 8
    with pytest.raises(InputError, match="choose: gs-server, jetson-agx-xavier, jetson-orin"):
        get_profile("jetson-nano")
    with pytest.raises(InputError, match="kebab-case"):
        DeviceProfile("Jetson_X", cores=1, core_speed_vs_reference=1.0, memory_bytes=1 << 30)


def test_custom_profile_from_scenario_data() -> None:
    p = profile_from_mapping("rpi-5", {"cores": 4, "core_speed_vs_reference": 0.3,
                                       "memory_mib": 4096})
    assert (p.cores, p.memory_bytes) == (4, 4096 << 20)
    with pytest.raises(InputError, match=r"unknown fields \['ram'\]"):
        profile_from_mapping("x", {"cores": 1, "core_speed_vs_reference": 1, "memory_mib": 64,
                                   "ram": 1})
    with pytest.raises(InputError, match="cores=0"):
        profile_from_mapping("x", {"cores": 0, "core_speed_vs_reference": 1, "memory_mib": 64})


def test_budget_scales_with_host_speed() -> None:
    cal = Calibration(0.07, 2.0, "cpu", "cpython-3.11", 1, 0.0)
    b = budget_for(get_profile("jetson-agx-xavier"), cal)
    assert b.cpu_cores == pytest.approx(8 * 0.40 / 2.0)
    assert b.memory_bytes == 32 << 30


def test_calibration_is_cached(tmp_path: Path) -> None:
    first = calibrate(tmp_path, repeats=1)
    stored = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    assert stored["host_kernel_s"] == first.host_kernel_s > 0
    assert calibrate(tmp_path, repeats=1) == first  # no second measurement
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({**stored, "cpu_model": "other"}))
    assert calibrate(tmp_path, repeats=1).cpu_model == first.cpu_model  # re-measured


@pytest.mark.root
def test_quota_makes_the_reference_kernel_run_at_the_profile_speed(
    manager: CgroupManager, tmp_path: Path
) -> None:
    """A 1-core board at a fifth of this host's core speed: the kernel takes ~5x as long.

    A fifth, not a half: on a shared 2-core host a process may get only half a core anyway, and
    the quota must be what slows it down (checked with the throttling counter too). The quota's
    own effect is checked on CPU time over wall time, which host load can only lower; the
    slowdown against the calibration, taken at another moment, gets a wide upper bound because
    a busy shared host slows both sides differently.
    """
    cal = calibrate(tmp_path, repeats=5)
    board = DeviceProfile("fifth-speed", cores=1,
                          core_speed_vs_reference=0.2 * cal.host_core_speed_vs_reference,
                          memory_bytes=1 << 30)
    budget = budget_for(board, cal)
    assert budget.cpu_cores == pytest.approx(0.2)
    g = manager.create("board", budget)
    code = ("import time; from testbed.profiles import reference_kernel\n"
            "t, c = time.perf_counter(), time.process_time()\n"
            "reference_kernel(); reference_kernel(); reference_kernel()\n"
            "print((time.perf_counter() - t) / 3, (time.process_time() - c) / 3)")
    done = subprocess.run([sys.executable, "-c", code], preexec_fn=g.attach_self,
                          capture_output=True, text=True, timeout=60, check=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    wall_s, cpu_s = map(float, done.stdout.split())
    share = cpu_s / wall_s
    assert 0.12 <= share <= 0.23, f"the board got {share:.2f} of a core, its quota is 0.20"
    ratio = wall_s / cal.host_kernel_s
    assert 3.5 <= ratio <= 10.0, f"kernel slowed {ratio:.2f}x, expected ~5x"
    assert g.cpu_throttling()["nr_throttled"] >= 3
