"""AF_PACKET sockets for the userspace shaper: one per interface, opened inside the interface's
network namespace, promiscuous, blind to its own transmissions (PACKET_IGNORE_OUTGOING).

Owns socket setup and the netns switch around it. The promiscuous membership belongs to the
socket, so the kernel drops it when the socket closes (nothing to undo after a crash).
"""

from __future__ import annotations

import socket
import struct

from netem.errors import NetemError, UnsupportedError
from netem.nsutil import in_netns

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
SO_TIMESTAMPNS = 35
RCVBUF_BYTES = 8 * 1024 * 1024
SNDBUF_BYTES = 4 * 1024 * 1024



def open_packet_socket(ifname: str, netns: str | None = None) -> socket.socket:
    """A non-blocking, promiscuous AF_PACKET socket receiving every frame entering `ifname`,
    each with its kernel receive time (SO_TIMESTAMPNS ancillary data)."""
    with in_netns(netns):
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError:
            where = f"network namespace '{netns}'" if netns else "the shaper's namespace"
            raise NetemError(f"interface '{ifname}' not found in {where}") from None
        # Protocol 0 receives nothing until bind() names the interface and ETH_P_ALL.
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise UnsupportedError(
                f"cannot open an AF_PACKET socket for '{ifname}': the userspace shaper needs "
                "root (CAP_NET_RAW)") from None
    try:
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError as exc:
            raise UnsupportedError(
                f"PACKET_IGNORE_OUTGOING not supported by this kernel ({exc}); needs Linux 4.20+"
            ) from exc
        for force, plain, size in (
            (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF, RCVBUF_BYTES),
            (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF, SNDBUF_BYTES),
        ):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, size)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
        sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((ifname, ETH_P_ALL))
        mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def kernel_drops(sock: socket.socket) -> tuple[int, int]:
    """(frames received, frames dropped for a full receive buffer) since the last call."""
    raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    packets, drops = struct.unpack("II", raw)
    return packets, drops
