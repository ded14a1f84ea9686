"""Undo of what the remote backend leaves on lab hosts, working from ledger entries alone.

Owns the ledger kinds `remote-process` (every process a run started on a host, found by the
run's tag in its environment and by pid + start time, so a reused pid is never signalled),
`remote-dir` (a per-run folder on a host) and `remote-addr` (the plan's data address, MAC and
static ARP entries on a host's data interface), their `@undoes` functions and the small
scripts they run there. Each entry carries the SSH target (address, port, user, key path,
known_hosts), so `testbed down` after a SIGKILL of the orchestrator reaches the host without
the inventory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from testbed.backends.remote_ssh import RemoteError, SshSession, SshTarget, connect
from testbed.ledger import Entry, LedgerError, Outcome, Undoer, undoes

TAG_VAR = "TESTBED_RUN_TAG"
"""Environment variable every remote process of a node carries (inherited by its children)."""

# Runs on the host with its python3 (>= 3.11, checked at deploy). Argument: JSON {tag, pids:
# [[pid, start_ticks]], term_s}. Finds processes carrying TAG_VAR=tag and the pids whose start
# time still matches, SIGTERMs their process groups, SIGKILLs what is left; prints what it found.
KILL_SCRIPT = r"""
import json, os, signal, sys, time
a = json.loads(sys.argv[1])
tag = ("@TAG_VAR@=" + a["tag"]).encode()
me = os.getpid()
def start(p):
    try:
        with open("/proc/" + str(p) + "/stat", "rb") as f:
            s = f.read()
        if s[s.rindex(b")") + 2:].split()[0] == b"Z":
            return None
        return int(s[s.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None
def tagged(p):
    try:
        with open("/proc/" + str(p) + "/environ", "rb") as f:
            return tag in f.read().split(b"\0")
    except OSError:
        return False
def find():
    found = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me and tagged(int(d)):
            found[int(d)] = start(int(d))
    for pid, ticks in a.get("pids", []):
        if start(pid) is not None and start(pid) == ticks:
            found[pid] = ticks
    return {p: s for p, s in found.items() if s is not None}
def signal_all(procs, sig):
    for p in procs:
        try:
            if os.getpgid(p) == p:
                os.killpg(p, sig)
            else:
                os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass
first = find()
signal_all(first, signal.SIGTERM)
deadline = time.monotonic() + a.get("term_s", 3.0)
left = first
while left and time.monotonic() < deadline:
    time.sleep(0.02)
    left = {p: s for p, s in left.items() if start(p) == s}
if left:
    signal_all(left, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = {p: s for p, s in left.items() if start(p) == s}
print(json.dumps({"found": sorted(first), "survivors": sorted(left)}))
""".replace("@TAG_VAR@", TAG_VAR)

# Arguments: dev, address/len, mac, then (ip, mac) pairs. Sets the plan's MAC, address and
# static ARP entries on the host's data interface.
ADDR_SCRIPT = (
    'set -e; dev=$1; addr=$2; mac=$3; shift 3; ip link set dev "$dev" address "$mac"; '
    'ip link set dev "$dev" up; ip addr replace "$addr" dev "$dev"; '
    'while [ $# -ge 2 ]; do ip neigh replace "$1" lladdr "$2" dev "$dev" nud permanent; '
    'shift 2; done')
# Arguments: dev, address/len, original mac, then neighbour IPs. Exit 3: interface or address
# already gone (absent).
UNADDR_SCRIPT = (
    'dev=$1; addr=$2; mac=$3; shift 3; [ -e "/sys/class/net/$dev" ] || exit 3; '
    'for ip in "$@"; do ip neigh del "$ip" dev "$dev" 2>/dev/null; done; '
    'ip link set dev "$dev" address "$mac" || exit 1; '
    'ip addr del "$addr" dev "$dev" 2>/dev/null || exit 3')

# Exit 3: nothing there (absent). Refuses anything but a folder.
RMDIR_SCRIPT = 'test -e "$1" || exit 3; test -d "$1" || exit 4; rm -rf -- "$1"'


def kill_tagged(session: SshSession, python: str, tag: str, *,
                pids: Sequence[tuple[int, int]] = (), term_s: float = 3.0) -> dict[str, list[int]]:
    """Stop every process on the host that carries `tag` (their process groups), plus each
    (pid, start_ticks) whose start time still matches. Returns {"found", "survivors"} pids."""
    args = json.dumps({"tag": tag, "pids": [list(p) for p in pids], "term_s": term_s})
    done = session.run([python, "-c", KILL_SCRIPT, args], timeout_s=term_s + 30)
    try:
        out = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise RemoteError(f"host {session.target.where}: unreadable answer of the kill script: "
                          f"{done.stdout!r} {done.stderr!r}") from exc
    return {"found": list(out["found"]), "survivors": list(out["survivors"])}


def remove_remote_dir(session: SshSession, path: str, run: str) -> bool:
    """Remove a per-run folder; False when it was already gone. Refuses paths that are not a
    run's folder (relative, or whose name does not start with the run's name)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not path.startswith("/") or not run or not name.startswith(run):
        raise LedgerError(f"remote-dir {path!r}: not a folder of run {run!r}; refusing to remove")
    done = session.run(["sh", "-c", RMDIR_SCRIPT, "sh", path], check=False, timeout_s=120)
    if done.returncode == 3:
        return False
    if done.returncode != 0:
        raise RemoteError(f"host {session.target.where}: removing {path} failed (status "
                          f"{done.returncode}): {done.stderr.strip()}")
    return True


class _Sessions:
    """One SSH session per target for one undo batch (an unreachable host fails its entries)."""

    def __init__(self) -> None:
        self._open: dict[SshTarget, SshSession | RemoteError] = {}

    def get(self, entry: Entry) -> SshSession:
        target = SshTarget.from_details(entry.details)
        if target not in self._open:
            try:
                self._open[target] = connect(target)
            except RemoteError as exc:
                self._open[target] = exc
        got = self._open[target]
        if isinstance(got, RemoteError):
            raise got
        return got

    def close(self) -> None:
        for s in self._open.values():
            if isinstance(s, SshSession):
                s.close()


def _undo_each(batch: Sequence[Entry], fn: Any) -> list[Outcome]:
    sessions = _Sessions()
    out: list[Outcome] = []
    try:
        for e in batch:
            try:
                out.append(Outcome(e, "removed" if fn(sessions.get(e), e) else "absent"))
            except Exception as exc:  # noqa: BLE001 - reported per entry, never swallowed
                out.append(Outcome(e, "failed", f"{type(exc).__name__}: {exc}"))
    finally:
        sessions.close()
    return out


@undoes("remote-process")
def _undo_remote_processes(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    """One kill per (host, tag): every process carrying the tag and every recorded pid whose
    start time matches. An entry with a pid is removed when that pid was found; the entry
    written before the start (no pid) counts only when no later entry names the process."""
    groups: dict[tuple[SshTarget, str, str], list[Entry]] = {}
    for e in batch:
        key = (SshTarget.from_details(e.details), str(e.details["tag"]), str(e.details["python"]))
        groups.setdefault(key, []).append(e)
    sessions = _Sessions()
    out: list[Outcome] = []
    try:
        for (_, tag, python), entries in groups.items():
            pids = [(int(e.details["pid"]), int(e.details["start_ticks"])) for e in entries
                    if "pid" in e.details]
            try:
                session = sessions.get(entries[0])
                got = kill_tagged(session, python, tag, pids=pids,
                                  term_s=u.process_term_timeout_s)
            except Exception as exc:  # noqa: BLE001 - reported per entry, never swallowed
                out += [Outcome(e, "failed", f"{type(exc).__name__}: {exc}") for e in entries]
                continue
            if got["survivors"]:
                msg = f"host {session.target.where}: pids {got['survivors']} survived SIGKILL"
                out += [Outcome(e, "failed", msg) for e in entries]
                continue
            found = set(got["found"])
            unclaimed = found - {p for p, _ in pids}
            named = {e.name for e in entries if "pid" in e.details}
            for e in entries:
                if "pid" in e.details:
                    hit = int(e.details["pid"]) in found
                else:
                    hit = e.name not in named and bool(unclaimed)
                out.append(Outcome(e, "removed" if hit else "absent"))
    finally:
        sessions.close()
    return out


@undoes("remote-dir")
def _undo_remote_dirs(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    return _undo_each(batch, lambda s, e: remove_remote_dir(s, str(e.details["path"]),
                                                            str(e.details["run"])))



def privileged(argv: list[str], sudo: bool) -> list[str]:
    """`argv` run as root: through `sudo -n` (never a password prompt) unless we are root."""
    return ["sudo", "-n", *argv] if sudo else argv


@undoes("remote-addr")
def _undo_remote_addrs(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    """Remove the static ARP entries and the address, and put the original MAC back."""
    def undo(s: SshSession, e: Entry) -> bool:
        d = e.details
        argv = privileged(["sh", "-c", UNADDR_SCRIPT, "sh", str(d["ifname"]), str(d["address"]),
                           str(d["original_mac"]), *map(str, d["neighbours"])],
                          bool(d.get("sudo")))
        done = s.run(argv, check=False, timeout_s=60)
        if done.returncode == 3:
            return False
        if done.returncode != 0:
            raise RemoteError(f"host {s.target.where}: restoring {d['ifname']} failed (status "
                              f"{done.returncode}): {done.stderr.strip()}")
        return True
    return _undo_each(batch, undo)
