"""Netlink inside named network namespaces without forking, and batched netlink requests.

Owns the low-level mechanics the backends and the fabric share: creating/removing a named netns
(as `ip netns add/del` do: a bind mount under /var/run/netns), opening a pyroute2 IPRoute bound
to a namespace by switching only the calling thread (`setns`) for the moment the socket is made
(about 1 ms, where IPRoute(netns=...) forks a helper), and sending many pre-encoded requests in
one `sendmsg` (static ARP tables of a thousand entries per node).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import random
import socket
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyroute2 import IPBatch, IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_NEWNEIGH
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from netem.nsutil import in_netns
from testbed.errors import TestbedError
from testbed.ledger import Entry, Outcome, Undoer, one_by_one, undoes

NETNS_RUN_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MNT_DETACH = 2
NUD_PERMANENT = 0x80
NLMSG_ERROR = 2
_NDMSG_IFINDEX_OFFSET = 20  # nlmsghdr (16) + family, pad1, pad2 (4)
_SEND_CHUNK_BYTES = 32 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_netns_lock = threading.Lock()


class NetnsError(TestbedError):
    """A namespace operation failed (names the namespace and the errno text)."""


class NetlinkBatchError(TestbedError):
    """Some requests of a batch failed; `failures` lists (label or #index, errno text)."""

    def __init__(self, message: str, *, failures: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


def host_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of the host's own namespace: every address's subnet and every
    route's destination (what a new management subnet must not overlap). Needs no root."""
    nets: list[ipaddress.IPv4Network] = []
    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=socket.AF_INET):
            addr = msg.get_attr("IFA_ADDRESS")
            if addr:
                nets.append(ipaddress.IPv4Network(f"{addr}/{msg['prefixlen']}", strict=False))
        for msg in ipr.get_routes(family=socket.AF_INET):
            dst = msg.get_attr("RTA_DST")
            if dst and msg["dst_len"] > 0:
                nets.append(ipaddress.IPv4Network(f"{dst}/{msg['dst_len']}", strict=False))
    return nets


def netns_path(name: str) -> Path:
    """Where the bind mount of namespace `name` lives."""
    return NETNS_RUN_DIR / name


def netns_exists(name: str) -> bool:
    return netns_path(name).exists()


def list_netns() -> list[str]:
    """Names of the namespaces under /var/run/netns."""
    try:
        return sorted(p.name for p in NETNS_RUN_DIR.iterdir())
    except FileNotFoundError:
        return []


def _oserror(what: str, name: str) -> NetnsError:
    code = ctypes.get_errno()
    return NetnsError(f"netns {name}: {what} failed: {os.strerror(code)} (errno {code})")


def _setns(fd: int, name: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise _oserror("setns", name)


def _ensure_run_dir() -> None:
    """Make /var/run/netns a shared mount, as iproute2 does, so new mounts propagate."""
    NETNS_RUN_DIR.mkdir(parents=True, exist_ok=True)
    d = str(NETNS_RUN_DIR).encode()
    if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    if _libc.mount(d, d, b"none", MS_BIND | MS_REC, None) != 0:
        raise _oserror("bind-mount of the run dir", str(NETNS_RUN_DIR))
    if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
        raise _oserror("sharing the run dir", str(NETNS_RUN_DIR))


def create_netns(name: str) -> None:
    """Create the named namespace (like `ip netns add`), in-process: unshare in this thread only.

    Raises NetnsError if it already exists or the kernel refuses.
    """
    if "/" in name or name in ("", ".", ".."):
        raise NetnsError(f"netns name {name!r}: expected a plain file name")
    with _netns_lock:
        _ensure_run_dir()
        path = netns_path(name)
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        except FileExistsError as exc:
            raise NetnsError(f"netns {name}: already exists") from exc
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = _oserror("unshare", name)
                path.unlink()
                raise err
            try:
                src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
                if _libc.mount(src, str(path).encode(), b"none", MS_BIND, None) != 0:
                    err = _oserror("bind mount", name)
                    path.unlink()
                    raise err
            finally:
                _setns(home, "(original)")
        finally:
            os.close(home)


def remove_netns(name: str) -> bool:
    """Remove the named namespace (like `ip netns del`). False if it did not exist."""
    path = netns_path(name)
    if not path.exists():
        return False
    if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point any more
            raise _oserror("umount", name)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def iproute(netns: str | None = None) -> IPRoute:
    """An IPRoute whose socket lives in `netns` (None: this thread's namespace). Close it."""
    if netns is None:
        return IPRoute()
    with in_netns(netns):
        return IPRoute()


def raw_rtnl_socket(netns: str | None = None) -> socket.socket:
    """A bare NETLINK_ROUTE socket in `netns`, for batched sends."""
    def make() -> socket.socket:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        s.bind((0, 0))
        return s

    if netns is None:
        return make()
    with in_netns(netns):
        return make()


def ifindex(name: str, netns: str | None = None) -> int | None:
    """Index of interface `name` (in `netns`), None if absent. An ioctl: ~10 us, no dump."""
    try:
        if netns is None:
            return socket.if_nametoindex(name)
        with in_netns(netns):
            return socket.if_nametoindex(name)
    except OSError:
        return None


class RequestBatch:
    """Many rtnetlink requests encoded by pyroute2 (IPBatch), sent together by `send`.

    Encoding needs no system access: give interfaces by index, namespaces by open fd. Each
    request carries a label (e.g. "node s3: data port") so a failure names its object.
    """

    def __init__(self) -> None:
        self._ipb = IPBatch()
        self._raw = bytearray()
        self._labels: list[str] = []

    def close(self) -> None:
        self._ipb.close()

    def __enter__(self) -> RequestBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take(self, label: str) -> None:
        self._raw += self._ipb.asyncore.batch
        self._ipb.reset()
        self._labels.extend([label] * (_count_messages(self._raw) - len(self._labels)))

    def link(self, command: str, *, label: str, **kwargs: object) -> None:
        self._ipb.link(command, **kwargs)
        self._take(label)

    def addr(self, command: str, *, label: str, **kwargs: object) -> None:
        self._ipb.addr(command, **kwargs)
        self._take(label)

    def raw(self, data: bytes | bytearray, *, label: str) -> None:
        """Append already encoded requests (e.g. a neighbour_batch buffer)."""
        self._raw += data
        self._labels.extend([label] * (_count_messages(self._raw) - len(self._labels)))

    @property
    def size_bytes(self) -> int:
        return len(self._raw)

    def send(self, sock: socket.socket) -> int:
        """Send everything queued (then forget it); returns the number of requests.

        Raises NetlinkBatchError naming the labels of the failed requests.
        """
        data, labels = self._raw, self._labels
        self._raw, self._labels = bytearray(), []
        starts = []
        pos = 0
        while pos + 16 <= len(data):
            (length,) = struct.unpack_from("<I", data, pos)
            starts.append(pos)
            # only failures answer (see send_batch): drop ACK and ECHO requests
            (flags,) = struct.unpack_from("<H", data, pos + 6)
            struct.pack_into("<H", data, pos + 6, flags & ~(NLM_F_ACK | NLM_F_ECHO))
            struct.pack_into("<I", data, pos + 8, len(starts))
            pos += (length + 3) & ~3
        if starts:
            send_batch(sock, data, starts, labels)
        return len(starts)


def _count_messages(data: bytes | bytearray) -> int:
    count = pos = 0
    while pos + 16 <= len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        if length < 16:
            raise NetlinkBatchError(f"malformed netlink request at byte {pos}: length {length}")
        count += 1
        pos += (length + 3) & ~3
    return count


def encode_neighbours(entries: Sequence[tuple[str, str]]) -> tuple[bytes, list[int]]:
    """Pre-encode permanent IPv4 neighbour requests [(ip, mac)], ifindex left 0.

    Returns the concatenated messages and each message's offset (see `neighbour_batch`).
    """
    parts: list[bytes] = []
    offsets: list[int] = []
    pos = 0
    for ip, mac in entries:
        m = ndmsg()
        m["family"] = socket.AF_INET
        m["ifindex"] = 0
        m["state"] = NUD_PERMANENT
        m["attrs"] = [["NDA_DST", ip], ["NDA_LLADDR", mac]]
        m["header"]["type"] = RTM_NEWNEIGH
        m["header"]["flags"] = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE
        m.encode()
        data = bytes(m.data)
        offsets.append(pos)
        parts.append(data)
        pos += len(data)
    return b"".join(parts), offsets


def neighbour_batch(
    template: bytes, offsets: Sequence[int], ifindex: int, skip: int | None = None
) -> tuple[bytearray, list[int]]:
    """The template's requests for interface `ifindex`, without message number `skip`."""
    if skip is None:
        buf = bytearray(template)
        starts = list(offsets)
    else:
        end = offsets[skip + 1] if skip + 1 < len(offsets) else len(template)
        size = end - offsets[skip]
        buf = bytearray(template[: offsets[skip]] + template[end:])
        starts = offsets[:skip] + [o - size for o in offsets[skip + 1 :]]
    for seq, off in enumerate(starts, start=1):
        struct.pack_into("<I", buf, off + 8, seq)
        struct.pack_into("<i", buf, off + _NDMSG_IFINDEX_OFFSET, ifindex)
    return buf, starts


def send_batch(
    sock: socket.socket,
    buf: bytes | bytearray,
    starts: Sequence[int],
    labels: Sequence[str] | None = None,
) -> None:
    """Send pre-encoded requests (sequence numbers 1..n) and wait until the kernel did them all.

    Requests carry no ACK flag, so only failures answer; a final ACKed request (GETLINK of
    ifindex 1, `lo`) marks the end. Raises NetlinkBatchError listing the failed requests.
    """
    view = memoryview(buf)
    chunk_start = 0
    bounds = list(starts) + [len(buf)]
    for i in range(1, len(bounds)):
        if bounds[i] - chunk_start >= _SEND_CHUNK_BYTES or i == len(bounds) - 1:
            sock.send(view[chunk_start : bounds[i]])
            chunk_start = bounds[i]
    barrier_seq = len(starts) + 1
    # ifinfomsg: family, pad, type, index=1 (lo), flags, change
    barrier = struct.pack("<IHHII", 32, RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, barrier_seq, 0)
    barrier += struct.pack("<BxHiII", socket.AF_UNSPEC, 0, 1, 0, 0)
    sock.send(barrier)
    failures: list[tuple[int, str]] = []
    while True:
        try:
            data = sock.recv(1 << 20)
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            raise NetlinkBatchError(
                f"netlink batch of {len(starts)} requests: so many failed that their error "
                "replies overflowed the socket buffer (first ones lost)"
            ) from exc
        pos = 0
        done = False
        while pos + 16 <= len(data):
            length, mtype, _flags, seq, _pid = struct.unpack_from("<IHHII", data, pos)
            if length < 16:
                break
            if mtype == NLMSG_ERROR:
                (code,) = struct.unpack_from("<i", data, pos + 16)
                if seq == barrier_seq:
                    done = True
                elif code != 0:
                    failures.append((seq - 1, os.strerror(-code)))
            elif seq == barrier_seq:
                pass  # the link message answering the barrier; its ACK follows
            pos += (length + 3) & ~3
        if done:
            break
    if failures:
        named = [(labels[i] if labels and 0 <= i < len(labels) else f"#{i}", e)
                 for i, e in failures]
        shown = "; ".join(f"{what}: {e}" for what, e in named[:10])
        raise NetlinkBatchError(f"{len(failures)} of {len(starts)} netlink requests failed: "
                                f"{shown}", failures=named)


# --- ledger undo (kinds `netns`, `link`, `qdisc`) ------------------------------------------------

@undoes("netns")
def _undo_netns(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    return one_by_one(batch, lambda e: remove_netns(e.name))


@undoes("link")
def _undo_links(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    """Delete links per namespace in one kernel batch: tag them with a fresh netdev group, then
    delete that group (one unregister for all: ~30 ms for 50 veth pairs instead of ~1 s)."""
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
                    raise NetnsError(f"qdisc {e.name}: parent={parent!r}, "
                                      "expected root, ingress or clsact")
            except NetlinkError as exc:
                if exc.code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                    return False
                raise
        return True
    return one_by_one(batch, rm)
