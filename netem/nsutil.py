"""Network-namespace helpers every layer shares: entering a named namespace on the calling
thread, and writing sysctls there. The lower layer owns them so the testbed, the shapers and
the replay tool do not each keep a copy. Creating and removing namespaces is the testbed's
(testbed.fabric.netlink); netem only enters those that exist.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from pathlib import Path

from netem.errors import NetemError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetnsNotFoundError(NetemError):
    """A named network namespace does not exist."""


def netns_path(name: str) -> Path:
    """Where the bind mount of namespace `name` lives (as `ip netns` keeps them)."""
    return Path(NETNS_RUN_DIR) / name


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetemError(f"setns into network namespace {what} failed: {os.strerror(err)} "
                         f"(errno {err})")


@contextlib.contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the body with the calling thread inside named namespace `netns` (None: stay), then
    come back. Sockets created inside stay bound to that namespace; other threads never move.

    Raises NetnsNotFoundError when the namespace does not exist."""
    if netns is None:
        yield
        return
    path = netns_path(netns)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFoundError(f"network namespace '{netns}' does not exist ({path})") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, netns)
        try:
            yield
        finally:
            _setns(home, "of the calling thread (returning)")
    finally:
        os.close(target)
        os.close(home)


def write_sysctl(key: str, value: str, netns: str | None = None) -> bool:
    """Write a /proc/sys value (`net.ipv4.ip_forward` or `net/ipv4/ip_forward`); `net.` keys
    apply to the namespace the write happens in. Returns False when the key does not exist on
    this kernel (e.g. IPv6 disabled on the command line): nothing to do."""
    path = Path("/proc/sys", *key.replace(".", "/").split("/")) if "/" not in key else \
        Path("/proc/sys") / key
    with in_netns(netns):
        if not path.exists():
            return False
        path.write_text(value)
    return True
