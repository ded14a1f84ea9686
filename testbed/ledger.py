"""The run's ledger: every resource the testbed creates, written down before it exists.

Owns the state file format (JSON lines `{"seq", "kind", "name", "details"}`, appended and
fsync'ed), reading it back after a crash, and `teardown`: undoing the entries in reverse order,
idempotently (already gone counts as done), reporting what was removed, what was absent and what
failed without stopping at the first failure.

Write-ahead: an entry is recorded *before* its resource is created, so a SIGKILL between the two
leaves an entry whose undo finds nothing (reported as absent), never a resource nobody knows of.
Consecutive entries of one kind are undone in one batch (one `ovs-vsctl` transaction, one netlink
group delete), which keeps `down` of a thousand nodes fast.

Does not create anything itself: the backends, the fabric and the shapers do, and record here.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from testbed.errors import InputError, TestbedError
from testbed.sysrun import (
    CommandError,
    Runner,
    process_alive,
    process_start_ticks,
)

KINDS = (
    "netns", "link", "ovs-bridge", "ovs-port", "qdisc", "cgroup", "process", "file", "dir",
    # testbed.backends.libvirt registers the undo of these three
    "daemon", "libvirt-domain", "guest-process",
)

Status = Literal["removed", "absent", "failed"]


class LedgerError(TestbedError):
    """Using the ledger wrongly (unknown kind, closed ledger)."""


@dataclass(frozen=True)
class Entry:
    """One resource: its kind (see KINDS), unique name, and what undo needs to find it."""

    seq: int
    kind: str
    name: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    entry: Entry
    status: Status
    error: str | None = None


@dataclass
class TeardownReport:
    """What `teardown` did: every entry appears in exactly one list."""

    removed: list[Entry] = field(default_factory=list)
    absent: list[Entry] = field(default_factory=list)
    failed: list[tuple[Entry, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    seconds_by_kind: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def add(self, outcome: Outcome) -> None:
        if outcome.status == "removed":
            self.removed.append(outcome.entry)
        elif outcome.status == "absent":
            self.absent.append(outcome.entry)
        else:
            self.failed.append((outcome.entry, outcome.error or "unknown error"))

    def summary(self) -> str:
        lines = [
            f"removed {len(self.removed)}, already gone {len(self.absent)}, "
            f"failed {len(self.failed)} in {self.elapsed_s:.1f} s"
        ]
        lines += [f"  FAILED {e.kind} {e.name}: {err}" for e, err in self.failed]
        return "\n".join(lines)


class Ledger:
    """Append-only ledger file of one run. Use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh: Any = None
        self._next_seq: int | None = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _open(self) -> Any:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._next_seq = max((e.seq for e in self.entries()), default=0) + 1
            self._fh = open(self.path, "ab")
        return self._fh

    def record(self, kind: str, name: str, **details: Any) -> Entry:
        """Write one entry durably (fsync) and return it. Call *before* creating the resource."""
        return self.record_many([(kind, name, details)])[0]

    def record_many(self, items: Iterable[tuple[str, str, Mapping[str, Any]]]) -> list[Entry]:
        """Write many entries with one write and one fsync (batched creation)."""
        fh = self._open()
        entries: list[Entry] = []
        lines: list[bytes] = []
        for kind, name, details in items:
            if kind not in KINDS:
                raise LedgerError(f"ledger entry {name!r}: unknown kind {kind!r}; choose: "
                                  + ", ".join(KINDS))
            seq = self._next_seq or 1
            entry = Entry(seq, kind, name, dict(details))
            self._next_seq = seq + 1
            entries.append(entry)
            lines.append(
                json.dumps(
                    {"seq": entry.seq, "kind": kind, "name": name, "details": entry.details},
                    separators=(",", ":"), sort_keys=True,
                ).encode() + b"\n"
            )
        if lines:
            fh.write(b"".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        return entries

    def entries(self) -> list[Entry]:
        """All entries in creation order. A torn last line (killed mid-write) is ignored.

        Raises InputError naming the file and line for damage anywhere else.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        # Without a final newline the last line is torn (the writer died mid-write); it was
        # written before its resource, so nothing was created for it: drop it.
        body = raw.split(b"\n")[:-1]
        out: list[Entry] = []
        for lineno, line in enumerate(body, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                out.append(Entry(int(obj["seq"]), str(obj["kind"]), str(obj["name"]),
                                 dict(obj.get("details", {}))))
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"unreadable ledger entry ({exc})", path=self.path,
                                 line=lineno) from exc
        return out


UndoFn = Callable[["Undoer", Sequence[Entry]], list[Outcome]]
UNDO: dict[str, UndoFn] = {}
UNDO_MODULES: dict[str, str] = {
    "daemon": "testbed.backends.libvirt_daemon",
    "libvirt-domain": "testbed.backends.libvirt",
    "guest-process": "testbed.backends.libvirt",
}
"""Kinds whose undo is registered beside the code that creates them, in a module imported on
first need (so `down` in a fresh process, after a crash, finds them)."""


def undo_for(kind: str) -> UndoFn | None:
    """The undo function of `kind`, importing the module that registers it if needed."""
    if kind not in UNDO and kind in UNDO_MODULES:
        import importlib

        importlib.import_module(UNDO_MODULES[kind])
    return UNDO.get(kind)


def undoes(kind: str) -> Callable[[UndoFn], UndoFn]:
    """Register the batch undo function of a ledger kind."""
    def deco(fn: UndoFn) -> UndoFn:
        UNDO[kind] = fn
        return fn
    return deco


class Undoer:
    """The host handles undo functions use (command runner; netlink opened on demand)."""

    def __init__(self, runner: Runner, *, process_term_timeout_s: float = 3.0) -> None:
        self.runner = runner
        self.process_term_timeout_s = process_term_timeout_s


def teardown(
    entries: Ledger | Sequence[Entry], runner: Runner, *, undoer: Undoer | None = None
) -> TeardownReport:
    """Undo `entries` in reverse order, batching consecutive entries of one kind.

    Never raises for a resource that will not go away: it lands in `report.failed` and the rest
    continues. Running it twice is harmless (the second run finds everything absent).
    """
    t0 = time.monotonic()
    items = entries.entries() if isinstance(entries, Ledger) else list(entries)
    for e in items:
        if undo_for(e.kind) is None:
            raise LedgerError(f"ledger entry {e.name!r}: unknown kind {e.kind!r}; choose: "
                              + ", ".join(KINDS))
    undoer = undoer or Undoer(runner)
    report = TeardownReport()
    ordered = sorted(items, key=lambda e: e.seq, reverse=True)
    i = 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j].kind == ordered[i].kind:
            j += 1
        batch = ordered[i:j]
        kind = batch[0].kind
        t_kind = time.monotonic()
        try:
            outcomes = UNDO[kind](undoer, batch)
        except Exception as exc:  # noqa: BLE001 - one kind's bug must not stop the rest
            outcomes = [Outcome(e, "failed", f"{type(exc).__name__}: {exc}") for e in batch]
        report.seconds_by_kind[kind] = (report.seconds_by_kind.get(kind, 0.0)
                                        + time.monotonic() - t_kind)
        for o in outcomes:
            report.add(o)
        i = j
    report.elapsed_s = time.monotonic() - t0
    return report


def _one_by_one(batch: Sequence[Entry], fn: Callable[[Entry], bool]) -> list[Outcome]:
    """Outcomes of calling `fn(entry) -> removed?` on each entry, failures caught per entry."""
    out = []
    for e in batch:
        try:
            out.append(Outcome(e, "removed" if fn(e) else "absent"))
        except Exception as exc:  # noqa: BLE001 - reported per entry, never swallowed
            out.append(Outcome(e, "failed", f"{type(exc).__name__}: {exc}"))
    return out


# --- processes ---------------------------------------------------------------------------------

def process_entry_details(pid: int, *, group: bool = True) -> dict[str, Any]:
    """Details that identify process `pid` for good (pid + start time), for `record`."""
    start = process_start_ticks(pid)
    if start is None:
        raise LedgerError(f"process {pid}: not running, cannot be recorded")
    return {"pid": pid, "start_ticks": start, "group": group}


@undoes("process")
def _undo_processes(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    """SIGTERM all (their group when recorded so), wait together, SIGKILL what is left.

    Zombies count as stopped; reaping them is their parent's business (never waitpid here: it
    would steal the exit status from the parent's Popen).
    """
    alive: list[Entry] = []
    out: list[Outcome] = []
    for e in batch:
        pid, start = int(e.details["pid"]), int(e.details["start_ticks"])
        if not process_alive(pid, start):  # gone, a zombie, or the pid now names another
            out.append(Outcome(e, "absent"))
            continue
        _signal(pid, signal.SIGTERM, bool(e.details.get("group", False)))
        alive.append(e)
    deadline = time.monotonic() + u.process_term_timeout_s
    while alive and time.monotonic() < deadline:
        alive_now = [e for e in alive
                     if process_alive(int(e.details["pid"]), int(e.details["start_ticks"]))]
        out += [Outcome(e, "removed") for e in alive if e not in alive_now]
        alive = alive_now
        if alive:
            time.sleep(0.02)
    for e in alive:
        pid, start = int(e.details["pid"]), int(e.details["start_ticks"])
        if process_alive(pid, start):
            _signal(pid, signal.SIGKILL, bool(e.details.get("group", False)))
        killed_by = time.monotonic() + 2.0
        while process_alive(pid, start) and time.monotonic() < killed_by:
            time.sleep(0.01)
        if process_alive(pid, start):
            out.append(Outcome(e, "failed", f"pid {pid} survived SIGKILL"))
        else:
            out.append(Outcome(e, "removed"))
    return out


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


# --- files -------------------------------------------------------------------------------------

@undoes("file")
def _undo_files(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    def rm(e: Entry) -> bool:
        try:
            Path(e.details.get("path", e.name)).unlink()
        except FileNotFoundError:
            return False
        return True
    return _one_by_one(batch, rm)


@undoes("dir")
def _undo_dirs(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    """rmdir (only if empty) unless the entry says recursive=true."""
    def rm(e: Entry) -> bool:
        path = Path(e.details.get("path", e.name))
        if not path.exists():
            return False
        if e.details.get("recursive", False):
            shutil.rmtree(path)
        else:
            path.rmdir()
        return True
    return _one_by_one(batch, rm)


# --- cgroups -----------------------------------------------------------------------------------

@undoes("cgroup")
def _undo_cgroups(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    from testbed.cgroups import remove_cgroup_dirs

    return _one_by_one(batch, lambda e: remove_cgroup_dirs(Path(d) for d in e.details["dirs"]))


# --- network namespaces and links --------------------------------------------------------------

@undoes("netns")
def _undo_netns(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    from testbed.fabric.netlink import remove_netns

    return _one_by_one(batch, lambda e: remove_netns(e.name))


@undoes("link")
def _undo_links(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    """Delete links per namespace in one kernel batch: tag them with a fresh netdev group, then
    delete that group (one unregister for all: ~30 ms for 50 veth pairs instead of ~1 s)."""
    from pyroute2.netlink.exceptions import NetlinkError

    from testbed.fabric.netlink import (
        NetlinkBatchError,
        NetnsError,
        RequestBatch,
        ifindex,
        iproute,
        netns_exists,
        raw_rtnl_socket,
    )

    by_ns: dict[str | None, list[Entry]] = {}
    for e in batch:
        by_ns.setdefault(e.details.get("netns"), []).append(e)
    out: list[Outcome] = []
    for ns, entries in by_ns.items():
        if ns is not None and not netns_exists(ns):
            out += [Outcome(e, "absent") for e in entries]
            continue
        try:
            ipr = iproute(ns)
            sock = raw_rtnl_socket(ns)
        except (NetnsError, OSError) as exc:
            out += [Outcome(e, "failed", f"cannot open netns {ns}: {exc}") for e in entries]
            continue
        with ipr, sock:
            present: list[tuple[Entry, int]] = []
            for e in entries:
                idx = ifindex(e.name, ns)
                if idx is None:
                    out.append(Outcome(e, "absent"))
                else:
                    present.append((e, idx))
            if not present:
                continue
            group = _free_group(ipr)
            try:
                with RequestBatch() as tag:
                    for e, idx in present:
                        tag.link("set", index=idx, group=group, label=f"link {e.name}")
                    tag.send(sock)
                ipr.link("del", index=0, group=group)
            except (NetlinkError, NetlinkBatchError):
                pass  # fall through to the per-link path, which names each failure
            for e, _ in present:
                if ifindex(e.name, ns) is None:
                    out.append(Outcome(e, "removed"))
                    continue
                try:
                    ipr.link("del", ifname=e.name)
                    out.append(Outcome(e, "removed"))
                except NetlinkError as exc:
                    if exc.code == errno.ENODEV:
                        out.append(Outcome(e, "removed"))  # went with its veth peer
                    else:
                        out.append(Outcome(e, "failed", f"netlink: {exc}"))
    return out


def _free_group(ipr: Any) -> int:
    """A netdev group number no link in this namespace uses (never 0, the default)."""
    used = {link.get_attr("IFLA_GROUP") for link in ipr.get_links()}
    while True:
        g = random.randint(1 << 20, (1 << 31) - 1)
        if g not in used:
            return g


@undoes("qdisc")
def _undo_qdiscs(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    """Delete a root/ingress/clsact qdisc; a missing interface or qdisc counts as absent."""
    from pyroute2.netlink.exceptions import NetlinkError

    from testbed.fabric.netlink import iproute, netns_exists

    def rm(e: Entry) -> bool:
        ns = e.details.get("netns")
        if ns is not None and not netns_exists(ns):
            return False
        parent = e.details.get("parent", "root")
        with iproute(ns) as ipr:
            idx = ipr.link_lookup(ifname=e.details["ifname"])
            if not idx:
                return False
            try:
                if parent == "root":
                    ipr.tc("del", index=idx[0], root=True)
                elif parent in ("ingress", "clsact"):
                    ipr.tc("del", kind=parent, index=idx[0], handle=0xFFFF0000)
                else:
                    raise LedgerError(f"qdisc {e.name}: parent={parent!r}, "
                                      "expected root, ingress or clsact")
            except NetlinkError as exc:
                if exc.code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                    return False
                raise
        return True
    return _one_by_one(batch, rm)


# --- Open vSwitch ------------------------------------------------------------------------------

def _ovs_names(u: Undoer, table: str) -> set[str] | str:
    """Names in an OVS table, or the error text when OVS cannot be asked."""
    try:
        done = u.runner.run(["ovs-vsctl", "--timeout=20", "--bare", "--columns=name", "list",
                             table], timeout_s=30)
    except (CommandError, TestbedError) as exc:
        return f"cannot list OVS {table}s (is ovs-vswitchd running?): {exc}"
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def _ovs_batch(u: Undoer, batch: Sequence[Entry], table: str,
               command: Callable[[Entry], list[str]]) -> list[Outcome]:
    existing = _ovs_names(u, table)
    if isinstance(existing, str):
        return [Outcome(e, "failed", existing) for e in batch]
    out = [Outcome(e, "absent") for e in batch if e.name not in existing]
    todo = [e for e in batch if e.name in existing]
    for start in range(0, len(todo), 500):
        chunk = todo[start:start + 500]
        argv = ["ovs-vsctl", "--timeout=120"]
        for e in chunk:
            argv += ["--", "--if-exists", *command(e)]
        try:
            u.runner.run(argv, timeout_s=180)
            out += [Outcome(e, "removed") for e in chunk]
        except (CommandError, TestbedError):
            for e in chunk:  # find which ones fail, one by one
                try:
                    u.runner.run(["ovs-vsctl", "--timeout=20", "--if-exists", *command(e)])
                    out.append(Outcome(e, "removed"))
                except (CommandError, TestbedError) as exc:
                    out.append(Outcome(e, "failed", str(exc)))
    return out


@undoes("ovs-bridge")
def _undo_ovs_bridges(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    return _ovs_batch(u, batch, "Bridge", lambda e: ["del-br", e.name])


@undoes("ovs-port")
def _undo_ovs_ports(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    return _ovs_batch(u, batch, "Port", lambda e: ["del-port", str(e.details["bridge"]), e.name])
