"""libvirt's daemons on a host without an init system: start them when none answers, ledgered.

Owns `ensure_libvirt(ledger, uri)`: when a local qemu:// URI gets no answer, start `virtlogd`
(libvirt's log daemon for guest consoles and logs) and `libvirtd` with pid files, recording each
as a "daemon" ledger entry *before* it starts, and wait until the URI answers; and the undo of
that kind: stop the daemon named by its pid file (checked against the binary, so a recycled pid
is never signalled), unless it still runs domains of another run. Never stops a daemon it did
not start. Remote URIs (qemu+ssh://) are never started here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.errors import SystemRequirementError, TestbedError
from testbed.ledger import Entry, Ledger, Outcome, Undoer, undoes

LIBVIRTD = "/usr/sbin/libvirtd"
VIRTLOGD = "/usr/sbin/virtlogd"
LIBVIRTD_PIDFILE = "/run/libvirtd.pid"
VIRTLOGD_PIDFILE = "/run/virtlogd.pid"
VIRTLOGD_SOCKET = "/run/libvirt/virtlogd-sock"
LIBVIRT_HINT = "apt-get install libvirt-daemon-system qemu-system-x86"


class LibvirtDaemonError(TestbedError):
    """libvirt's daemons cannot be reached or started (names the URI or daemon)."""


def libvirt_module() -> Any:
    """The libvirt-python module, with its default stderr error printer silenced (errors are
    raised as libvirtError and reported by the caller)."""
    try:
        import libvirt
    except ImportError as exc:
        raise SystemRequirementError("the libvirt backend needs libvirt-python: pip install "
                                     "'leo-testbed[lab]' (builds against libvirt-dev)") from exc
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def is_local(uri: str) -> bool:
    return uri.startswith("qemu:///")


def try_open(uri: str) -> Any | None:
    """A libvirt connection to `uri`, or None when nothing answers."""
    libvirt = libvirt_module()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError:
        return None


def ensure_libvirt(ledger: Ledger, uri: str, *, timeout_s: float = 30.0) -> list[str]:
    """Make `uri` answer; returns the daemons started (and ledgered) here, [] if it answered.

    Raises LibvirtDaemonError when a remote URI does not answer or the daemons do not come up.
    """
    conn = try_open(uri)
    if conn is not None:
        conn.close()
        return []
    if not is_local(uri):
        raise LibvirtDaemonError(f"libvirt URI {uri} does not answer; start libvirtd on that "
                                 "host (remote daemons are never started from here)")
    started: list[str] = []
    if not _socket_answers(VIRTLOGD_SOCKET):
        _start(ledger, "virtlogd", VIRTLOGD, VIRTLOGD_PIDFILE)
        started.append("virtlogd")
    _start(ledger, "libvirtd", LIBVIRTD, LIBVIRTD_PIDFILE)
    started.append("libvirtd")
    deadline = time.monotonic() + timeout_s
    while True:
        conn = try_open(uri)
        if conn is not None:
            conn.close()
            return started
        if time.monotonic() > deadline:
            raise LibvirtDaemonError(f"started {', '.join(started)} but {uri} does not answer "
                                     f"after {timeout_s:.0f} s")
        time.sleep(0.2)


def _start(ledger: Ledger, name: str, binary: str, pidfile: str) -> None:
    if not Path(binary).exists():
        raise SystemRequirementError(f"libvirt URI does not answer and {binary} is missing; "
                                     f"{LIBVIRT_HINT}")
    ledger.record("daemon", name, binary=binary, pidfile=pidfile, recorded_unix_s=time.time())
    proc = subprocess.run([binary, "--daemon", "--pid-file", pidfile], capture_output=True,
                          text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise LibvirtDaemonError(f"{binary} --daemon exited {proc.returncode}: "
                                 f"{proc.stderr.strip() or proc.stdout.strip()}")


def _socket_answers(path: str) -> bool:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(2.0)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def daemon_pid(binary: str, pidfile: str) -> int | None:
    """The pid in `pidfile` if that process runs `binary`, else None."""
    try:
        pid = int(Path(pidfile).read_text().strip())
        exe = os.readlink(f"/proc/{pid}/exe")
    except (OSError, ValueError):
        return None
    exe = exe.removesuffix(" (deleted)")
    return pid if os.path.realpath(exe) == os.path.realpath(binary) else None


@undoes("daemon")
def _undo_daemons(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    """SIGTERM a daemon we started, wait up to 10 s, then SIGKILL. libvirtd that still runs
    domains (another run's) is left running and reported as failed."""
    out: list[Outcome] = []
    for e in batch:
        binary, pidfile = str(e.details["binary"]), str(e.details["pidfile"])
        pid = daemon_pid(binary, pidfile)
        recorded = float(e.details.get("recorded_unix_s", 0.0))
        if pid is None or not _started_near(pid, recorded):
            out.append(Outcome(e, "absent"))  # gone, or another start of it (not ours)
            continue
        if e.name == "libvirtd":
            busy = _running_domains()
            if busy:
                out.append(Outcome(e, "failed", f"libvirtd (pid {pid}) still runs domains "
                                                f"{', '.join(busy)}: left running"))
                continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        out.append(Outcome(e, "failed", f"{e.name} pid {pid} survived SIGKILL")
                   if _alive(pid) else Outcome(e, "removed"))
    return out


def _started_near(pid: int, recorded_unix_s: float, *, window_s: float = 120.0) -> bool:
    """True when process `pid` started within `window_s` after the entry was recorded (the
    daemon this entry started, not a later one that reuses the pid file)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
    except (OSError, ValueError, StopIteration):
        return False
    started = btime + ticks / os.sysconf("SC_CLK_TCK")
    return recorded_unix_s - 2.0 <= started <= recorded_unix_s + window_s


def kvm_node_warning(device: str = "/dev/kvm") -> str | None:
    """Why libvirt would re-probe QEMU at every domain start, or None.

    libvirt checks that QEMU's user (libvirt-qemu, group kvm on Debian) can open /dev/kvm; on
    hosts without udev the node stays root-only (0600) and the capability cache never
    validates (about 4 s per domain start when idle, 40 s on busy cores)."""
    try:
        st = os.stat(device)
    except OSError:
        return None
    if st.st_mode & 0o060 == 0o060:
        return None
    return (f"{device} is not group read-write (mode {st.st_mode & 0o777:o}): libvirt "
            "re-probes QEMU at every domain start; apply Debian's udev default: "
            f"chgrp kvm {device} && chmod 0660 {device}")


def _running_domains() -> list[str]:
    try:
        conn = try_open("qemu:///system")
    except SystemRequirementError:
        return []
    if conn is None:
        return []
    try:
        return [d.name() for d in conn.listAllDomains(1)]  # VIR_CONNECT_LIST_DOMAINS_ACTIVE
    finally:
        conn.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
