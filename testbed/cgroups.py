"""Per-node cgroups holding a node's CPU quota and memory limit (cgroup v1 or v2).

Owns: detecting which hierarchy the host offers for the cpu and memory controllers, creating one
cgroup per node under a run cgroup, writing the budget (v1: cpu.cfs_quota_us/cpu.cfs_period_us and
memory.limit_in_bytes; v2: cpu.max and memory.max), moving processes in, and removing the cgroups.
Does not decide budgets (testbed.profiles does) nor start processes (the backends do).

Where: by default run cgroups go below the cgroup this process already lives in (per controller),
so limits the caller runs under (a systemd slice, a container) still apply to the nodes.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from testbed.errors import InputError, SystemRequirementError, TestbedError
from testbed.ledger import Entry, Ledger, Outcome, Undoer, one_by_one, undoes

CFS_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class CgroupError(TestbedError):
    """Writing or removing a cgroup failed (names the cgroup path and the file)."""


@dataclass(frozen=True)
class Hierarchy:
    """Where the cpu and memory controllers are mounted, and which cgroup version they use."""

    version: Literal["v1", "v2"]
    cpu_root: Path
    memory_root: Path
    # This process's own cgroup path (relative to each root), from /proc/self/cgroup.
    own_cpu: str = "/"
    own_memory: str = "/"


@dataclass(frozen=True)
class Budget:
    """A node's resource budget. None means unlimited.

    cpu_cores: CPU time per wall time (0.25 = a quarter of one core; 3.0 = three cores).
    memory_bytes: hard memory limit.
    """

    cpu_cores: float | None = None
    memory_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.cpu_cores is not None and not self.cpu_cores > 0:
            raise InputError(f"cpu_cores={self.cpu_cores}, expected > 0 or None (unlimited)")
        if self.memory_bytes is not None and self.memory_bytes < 4 * 1024 * 1024:
            raise InputError(
                f"memory_bytes={self.memory_bytes}, expected >= 4 MiB or None (unlimited)"
            )

    def cfs_quota_us(self, period_us: int = CFS_PERIOD_US) -> int:
        """The CFS quota for `period_us`; -1 when unlimited."""
        if self.cpu_cores is None:
            return -1
        return max(MIN_QUOTA_US, round(self.cpu_cores * period_us))


def parse_mountinfo(text: str) -> dict[str, Path]:
    """Mount points of cgroup controllers: {'cpu': path, 'memory': path, 'cgroup2': path}."""
    found: dict[str, Path] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        fs = right.split()
        if len(fields) < 5 or len(fs) < 3:
            continue
        mount_point = Path(fields[4].replace("\\040", " "))
        if fs[0] == "cgroup2":
            found.setdefault("cgroup2", mount_point)
        elif fs[0] == "cgroup":
            for opt in fs[2].split(","):
                if opt in ("cpu", "memory"):
                    found.setdefault(opt, mount_point)
    return found


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """This process's cgroup per controller ({'cpu': '/x', 'memory': '/y', '': '/z' for v2})."""
    own: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            own[""] = path
        for c in controllers.split(","):
            if c:
                own[c] = path
    return own


def detect_hierarchy(
    mountinfo_text: str | None = None, proc_cgroup_text: str | None = None
) -> Hierarchy:
    """Which cgroup version offers both cpu and memory here (v1 preferred when both exist).

    Raises SystemRequirementError naming what is missing.
    """
    if mountinfo_text is None:
        mountinfo_text = Path("/proc/self/mountinfo").read_text()
    if proc_cgroup_text is None:
        proc_cgroup_text = Path("/proc/self/cgroup").read_text()
    mounts = parse_mountinfo(mountinfo_text)
    own = parse_proc_cgroup(proc_cgroup_text)
    if "cpu" in mounts and "memory" in mounts:
        return Hierarchy(
            "v1", mounts["cpu"], mounts["memory"],
            own_cpu=own.get("cpu", "/"), own_memory=own.get("memory", "/"),
        )
    if "cgroup2" in mounts:
        root = mounts["cgroup2"]
        try:
            controllers = (root / "cgroup.controllers").read_text().split()
        except OSError as exc:
            raise SystemRequirementError(f"cannot read {root}/cgroup.controllers: {exc}") from exc
        missing = [c for c in ("cpu", "memory") if c not in controllers]
        if not missing:
            return Hierarchy(
                "v2", root, root, own_cpu=own.get("", "/"), own_memory=own.get("", "/")
            )
        raise SystemRequirementError(
            f"cgroup v2 at {root} lacks controllers {missing} and no v1 cpu+memory mounts exist"
        )
    raise SystemRequirementError(
        f"no cgroup hierarchy with cpu and memory controllers (found mounts: {sorted(mounts)})"
    )


@dataclass(frozen=True)
class NodeCgroup:
    """One cgroup, possibly spread over several v1 hierarchies (one dir per controller)."""

    name: str
    version: Literal["v1", "v2"]
    dirs: tuple[Path, ...]
    budget: Budget = field(default_factory=Budget)

    def attach(self, pid: int) -> None:
        """Move process `pid` (all its threads) into this cgroup."""
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def attach_self(self) -> None:
        """Move the calling process in; used as Popen preexec_fn (runs in the child)."""
        pid = str(os.getpid())
        for d in self.dirs:
            with open(d / "cgroup.procs", "w") as fh:
                fh.write(pid)

    def pids(self) -> list[int]:
        """Processes now in this cgroup (union over its dirs)."""
        return sorted(set().union(*(set(_read_pids(d)) for d in self.dirs)))

    def cpu_throttling(self) -> dict[str, int]:
        """CFS bandwidth counters (nr_periods, nr_throttled, throttled time) from cpu.stat."""
        return _kv(self.dirs[0] / "cpu.stat")

    def memory_events(self) -> dict[str, int]:
        """OOM counters: {'oom_kill': n, 'failcnt' or 'max': n}."""
        mem_dir = self.dirs[-1]
        if self.version == "v1":
            events = _kv(mem_dir / "memory.oom_control")
            events["failcnt"] = int((mem_dir / "memory.failcnt").read_text())
            return events
        return _kv(mem_dir / "memory.events")


class CgroupManager:
    """Creates node cgroups below a run cgroup and removes them; records them in the ledger."""

    def __init__(
        self,
        hierarchy: Hierarchy,
        run_name: str,
        *,
        ledger: Ledger | None = None,
        parent: str | None = None,
    ) -> None:
        """`parent`: path below each controller root; default: this process's own cgroup."""
        _check_name(run_name, "run_name")
        self.hierarchy = hierarchy
        self.run_name = run_name
        self.ledger = ledger
        self._parent = parent
        self._run_group: NodeCgroup | None = None

    def _roots(self) -> list[Path]:
        h = self.hierarchy
        if h.version == "v1":
            cpu_parent = self._parent if self._parent is not None else h.own_cpu
            mem_parent = self._parent if self._parent is not None else h.own_memory
            return [_join(h.cpu_root, cpu_parent), _join(h.memory_root, mem_parent)]
        parent = self._parent if self._parent is not None else h.own_cpu
        return [_join(h.cpu_root, parent)]

    def run_group_dirs(self) -> tuple[Path, ...]:
        """Where the run cgroup is (or would be), one dir per hierarchy; creates nothing."""
        return tuple(root / self.run_name for root in self._roots())

    def run_group(self) -> NodeCgroup:
        """The run's cgroup (created on first use), parent of every node cgroup."""
        if self._run_group is None:
            dirs = self.run_group_dirs()
            self._run_group = self._make(self.run_name, dirs, Budget(), enable_children=True)
        return self._run_group

    def create(self, node_name: str, budget: Budget) -> NodeCgroup:
        """Create the cgroup of one node with its budget (ledgered before it exists)."""
        _check_name(node_name, "node cgroup name")
        run = self.run_group()
        dirs = tuple(d / node_name for d in run.dirs)
        return self._make(f"{self.run_name}/{node_name}", dirs, budget, enable_children=False)

    def create_many(self, budgets: Sequence[tuple[str, Budget]]) -> list[NodeCgroup]:
        """Create many node cgroups with one ledger write."""
        run = self.run_group()
        items = []
        for node_name, budget in budgets:
            _check_name(node_name, "node cgroup name")
            items.append((f"{self.run_name}/{node_name}", tuple(d / node_name for d in run.dirs),
                          budget))
        if self.ledger is not None:
            self.ledger.record_many(
                ("cgroup", name, {"dirs": [str(d) for d in dirs]}) for name, dirs, _ in items
            )
        return [self._make(n, d, b, enable_children=False, ledgered=True) for n, d, b in items]

    def _make(
        self,
        name: str,
        dirs: tuple[Path, ...],
        budget: Budget,
        *,
        enable_children: bool,
        ledgered: bool = False,
    ) -> NodeCgroup:
        if self.ledger is not None and not ledgered:
            self.ledger.record("cgroup", name, dirs=[str(d) for d in dirs])
        for d in dirs:
            try:
                d.mkdir(exist_ok=True)
            except OSError as exc:
                raise CgroupError(f"cgroup {name}: cannot create {d}: {exc}") from exc
        group = NodeCgroup(name, self.hierarchy.version, dirs, budget)
        if self.hierarchy.version == "v2" and enable_children:
            _enable_v2_controllers(dirs[0].parent)
            _enable_v2_controllers(dirs[0])
        set_budget(group, budget)
        return group


def set_budget(group: NodeCgroup, budget: Budget) -> None:
    """Write `budget` into the cgroup's control files."""
    if group.version == "v1":
        cpu_dir, mem_dir = group.dirs
        _write(cpu_dir / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(cpu_dir / "cpu.cfs_quota_us", str(budget.cfs_quota_us()))
        _write(mem_dir / "memory.limit_in_bytes",
               "-1" if budget.memory_bytes is None else str(budget.memory_bytes))
        return
    (d,) = group.dirs
    quota = budget.cfs_quota_us()
    _write(d / "cpu.max", f"{'max' if quota < 0 else quota} {CFS_PERIOD_US}")
    _write(d / "memory.max", "max" if budget.memory_bytes is None else str(budget.memory_bytes))
    if budget.memory_bytes is not None and (d / "memory.swap.max").exists():
        _write(d / "memory.swap.max", "0")


def remove_cgroup_dirs(dirs: Iterable[Path], *, timeout_s: float = 5.0) -> bool:
    """Kill what is left in each dir, then rmdir it. True if something was removed.

    Already-gone dirs are fine. Child cgroups must be removed first (the ledger's reverse order
    does that). Raises CgroupError naming the dir when it cannot be removed.
    """
    removed = False
    for d in dirs:
        if not d.exists():
            continue
        deadline = time.monotonic() + timeout_s
        while True:
            pids = _read_pids(d)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                d.rmdir()
                removed = True
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise CgroupError(
                        f"cgroup {d}: cannot remove ({exc.strerror}); processes left: {pids}"
                    ) from exc
                time.sleep(0.02)
    return removed


def _enable_v2_controllers(d: Path) -> None:
    ctl = d / "cgroup.subtree_control"
    current = ctl.read_text().split() if ctl.exists() else []
    wanted = [c for c in ("cpu", "memory") if c not in current]
    if not wanted:
        return
    try:
        ctl.write_text(" ".join(f"+{c}" for c in wanted))
    except OSError as exc:
        raise SystemRequirementError(
            f"cgroup v2: cannot enable {wanted} in {ctl} ({exc.strerror}); a cgroup that holds "
            "processes cannot delegate controllers: pass a dedicated, empty parent cgroup"
        ) from exc


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(value)
    except OSError as exc:
        raise CgroupError(f"cgroup {path.parent}: writing {value!r} to {path.name}: {exc}") from exc


def _read_pids(d: Path) -> list[int]:
    try:
        return [int(x) for x in (d / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def _kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _join(root: Path, rel: str) -> Path:
    return root / rel.lstrip("/") if rel not in ("", "/") else root


def _check_name(name: str, what: str) -> None:
    if not name or not set(name) <= _NAME_CHARS or name in (".", ".."):
        raise InputError(f"{what}={name!r}, expected letters, digits, '-', '_' or '.'")


# --- ledger undo (kind `cgroup`) -----------------------------------------------------------------

@undoes("cgroup")
def _undo_cgroups(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    return one_by_one(batch, lambda e: remove_cgroup_dirs(Path(d) for d in e.details["dirs"]))
