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
Kinds are open: the module that creates a kind of resource registers its undo function beside
that code (`@undoes("netns")` in testbed.fabric.netlink) and is listed in `UNDO_PROVIDERS`.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from testbed.errors import InputError, TestbedError
from testbed.sysrun import (
    Runner,
    process_alive,
    process_start_ticks,
)

UNDO_PROVIDERS: list[str] = [
    "testbed.fabric.netlink",   # netns, link, qdisc
    "testbed.fabric.ovs",       # ovs-bridge, ovs-port
    "testbed.cgroups",          # cgroup
    "testbed.backends.libvirt",         # libvirt-domain, guest-process
    "testbed.backends.libvirt_daemon",  # daemon
    "testbed.backends.remote_undo",     # remote-process, remote-dir, remote-addr
]
"""Modules that register undo functions for their own kinds (`@undoes`), imported before the
ledger checks a kind or tears down. The ledger itself owns `process`, `file` and `dir`. A module
that cannot be imported here (a lab client library missing) is remembered with its error, which
teardown reports on that module's entries."""
_PROVIDER_ERRORS: dict[str, str] = {}
_PROVIDERS_LOADED: set[str] = set()


def register_undo_provider(module: str) -> None:
    """Add a module whose import registers undo functions (a plug-in backend's kinds)."""
    if module not in UNDO_PROVIDERS:
        UNDO_PROVIDERS.append(module)


def load_undo_providers() -> dict[str, str]:
    """Import every provider once; returns {module: import error} for those that failed."""
    for module in UNDO_PROVIDERS:
        if module in _PROVIDERS_LOADED:
            continue
        _PROVIDERS_LOADED.add(module)
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but needs something missing
                _PROVIDER_ERRORS[module] = f"{type(exc).__name__}: {exc}"
        except ImportError as exc:
            _PROVIDER_ERRORS[module] = f"{type(exc).__name__}: {exc}"
    return dict(_PROVIDER_ERRORS)


def kinds() -> list[str]:
    """Every ledger kind with a registered undo function."""
    load_undo_providers()
    return sorted(UNDO)


def _check_kind(kind: str, name: str) -> None:
    if kind in UNDO:
        return
    problems = load_undo_providers()
    if kind not in UNDO:
        hint = ("; providers that failed to import: " + "; ".join(
            f"{m} ({err})" for m, err in problems.items())) if problems else ""
        raise LedgerError(f"ledger entry {name!r}: unknown kind {kind!r}; choose: "
                          + ", ".join(sorted(UNDO)) + hint)

Status = Literal["removed", "absent", "failed"]


class LedgerError(TestbedError):
    """Using the ledger wrongly (unknown kind, closed ledger)."""


@dataclass(frozen=True)
class Entry:
    """One resource: its kind (see `kinds()`), unique name, and what undo needs to find it."""

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
            _check_kind(kind, name)
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
        _check_kind(e.kind, e.name)
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


def retire_ledger(path: Path, runner: Runner) -> TeardownReport | None:
    """Undo a leftover ledger (a run killed before its teardown) and keep it beside as
    `ledger.<unix time>.removed.jsonl`, so a new run can start its own; None when there is
    none. Its entries are never dropped unread."""
    if not path.exists():
        return None
    with Ledger(path) as ledger:
        report = teardown(ledger, runner)
    path.rename(path.with_name(f"{path.stem}.{int(time.time())}.removed{path.suffix}"))
    return report


def one_by_one(batch: Sequence[Entry], fn: Callable[[Entry], bool]) -> list[Outcome]:
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
    return one_by_one(batch, rm)


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
    return one_by_one(batch, rm)
