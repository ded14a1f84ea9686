"""Messages and blobs between nodes over the emulated data network, timestamped at both ends.

Owns the node's data plane: the listener an agent runs on its data IP (dataplane_listener.py)
and the two calls a workload makes: `send(peer, topic, payload) -> SendReceipt` and
`recv(topic, timeout_s) -> Message`. The framing is dataplane_wire.py's. Everything crosses
the emulated links (TCP from this node's data IP to the peer's); peers are named, their data
IPs come from the pushed RunContext.

Wire format, version 1 (all integers big-endian; one TCP connection may carry many frames):

    MSG  = magic b"LEOD" | u8 version=1 | u8 type=1 | u16 src_len | u16 topic_len
           | u64 payload_len | u64 t_send_unix_ns | u64 msg_id | u32 crc32(all before it)
           | src (UTF-8) | topic (UTF-8) | payload | u32 crc32(payload)
    ACK  = magic b"LEOK" | u8 version=1 | u8 status (0 ok, 1 payload corrupted)
           | u64 msg_id | u64 payload_len | u64 t_recv_unix_ns | u32 crc32(all before it)

The sender stamps `t_send_unix_ns` just before the header leaves; the receiver stamps
`t_recv_unix_ns` once the last byte arrived and acknowledges, so the sender knows delivery (and
the receiver's arrival time). Payloads stream in chunks; a Path payload is read from disk as it is
sent. A bad magic, version or header checksum closes the connection (the stream cannot be
trusted further); a corrupted payload is acked with status 1 and dropped; a connection that ends
inside a frame is a truncated frame. Each case raises or logs a FrameError naming the field.
One-way times compare two hosts' wall clocks: they are only as good as their synchronisation.
"""

from __future__ import annotations

import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from nodes.addr import format_hostport
from nodes.context import ContextRef
from nodes.dataplane_listener import DataPlaneListener, Inbox, Message
from nodes.dataplane_wire import (
    ACK_HEAD,
    ACK_OK,
    CHUNK_BYTES,
    CRC,
    DEFAULT_MAX_PAYLOAD_BYTES,
    decode_ack,
    encode_msg_header,
    socket_reader,
)
from nodes.errors import DataPlaneError, FrameError, UnknownPeerError

__all__ = ["DataPlane", "DataPlaneListener", "Inbox", "Message", "SendReceipt"]


@dataclass(frozen=True)
class SendReceipt:
    """A delivered message: sender's send and ack-arrival instants, the receiver's arrival
    instant (its clock, from the ack), payload bytes and the message id."""

    t_send_unix_ns: int
    t_acked_unix_ns: int
    bytes: int
    t_peer_recv_unix_ns: int
    msg_id: int


class DataPlane:
    """One node's data plane: its listener (started from the pushed context) and `send`/`recv`.

    Args:
        node: this node's name (the `src` of what it sends).
        data_ip: its address on the data network (listens there, sends from there).
        context: the pushed run context (peers' data IPs, the port).
    """

    def __init__(self, node: str, data_ip: str | None, context: ContextRef, *,
                 clock_ns: Callable[[], int] = time.time_ns,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES):
        self.node = node
        self.data_ip = data_ip
        self.context = context
        self.inbox = Inbox()
        self._clock_ns = clock_ns
        self.max_payload_bytes = max_payload_bytes
        self._listener: DataPlaneListener | None = None
        self._lock = threading.Lock()
        self._next_id = 0

    @property
    def listener(self) -> DataPlaneListener | None:
        return self._listener

    def listen(self, port: int) -> None:
        """(Re)starts the listener on `data_ip:port`; nothing to do without a data IP or when
        it already listens there. DataPlaneError when the port is taken."""
        if self.data_ip is None:
            return
        with self._lock:
            if self._listener is not None and self._listener.port == port:
                return
            if self._listener is not None:
                self._listener.stop()
                self._listener = None
            listener = DataPlaneListener(self.data_ip, port, self.inbox,
                                         max_payload_bytes=self.max_payload_bytes,
                                         clock_ns=self._clock_ns)
            listener.start()
            self._listener = listener

    def close(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.stop()
                self._listener = None

    def peer_address(self, peer: str) -> tuple[str, int]:
        ctx = self.context.require(f"node {self.node}: data plane")
        ip = ctx.peers.get(peer)
        if ip is None:
            raise UnknownPeerError(self.node, peer, list(ctx.peers))
        return ip, ctx.data_port

    def recv(self, topic: str, timeout_s: float) -> Message:
        """The oldest unread message on `topic`; RecvTimeoutError after `timeout_s`."""
        return self.inbox.get(self.node, topic, timeout_s)

    def send(self, peer: str, topic: str, payload: bytes | Path, *,
             timeout_s: float = 30.0) -> SendReceipt:
        """Sends `payload` (bytes, or a file streamed from disk) to `peer` and waits for its ack.

        Raises UnknownPeerError (listing the valid names), DataPlaneError (refused, timed out,
        closed before the ack), FrameError (the peer reports the payload corrupted).
        """
        host, port = self.peer_address(peer)
        with self._lock:
            self._next_id += 1
            msg_id = self._next_id
        size = payload.stat().st_size if isinstance(payload, Path) else len(payload)
        where = f"node {self.node}: send {topic!r} to {peer} ({format_hostport(host, port)})"
        try:
            sock = socket.create_connection(
                (host, port), timeout=timeout_s,
                source_address=(self.data_ip, 0) if self.data_ip else None)
        except OSError as exc:
            raise DataPlaneError(f"{where}: cannot connect: {exc}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t_send = self._clock_ns()
            sock.sendall(encode_msg_header(self.node, topic, size, t_send, msg_id))
            crc = self._stream(sock, payload, size)
            sock.sendall(CRC.pack(crc))
            raw = socket_reader(sock)(ACK_HEAD.size + CRC.size, "ack")
            t_acked = self._clock_ns()
        except FrameError as exc:
            raise DataPlaneError(f"{where}: no ack: {exc}") from None
        except OSError as exc:
            raise DataPlaneError(f"{where}: {type(exc).__name__}: {exc}") from None
        finally:
            sock.close()
        status, acked_id, length, t_recv = decode_ack(raw)
        if acked_id != msg_id or length != size:
            raise FrameError(f"{where}: ack for message {acked_id} of {length} bytes, expected "
                             f"message {msg_id} of {size} bytes")
        if status != ACK_OK:
            raise FrameError(f"{where}: the peer reports the payload of message {msg_id} "
                             "corrupted (checksum mismatch)")
        return SendReceipt(t_send_unix_ns=t_send, t_acked_unix_ns=t_acked, bytes=size,
                           t_peer_recv_unix_ns=t_recv, msg_id=msg_id)

    @staticmethod
    def _stream(sock: socket.socket, payload: bytes | Path, size: int) -> int:
        crc = 0
        if isinstance(payload, Path):
            with payload.open("rb") as f:
                return _stream_file(sock, f, size)
        view = memoryview(payload)
        for offset in range(0, size, CHUNK_BYTES):
            chunk = view[offset:offset + CHUNK_BYTES]
            crc = zlib.crc32(chunk, crc)
            sock.sendall(chunk)
        return crc


def _stream_file(sock: socket.socket, f: BinaryIO, size: int) -> int:
    crc, sent = 0, 0
    while sent < size:
        chunk = f.read(min(CHUNK_BYTES, size - sent))
        if not chunk:
            raise DataPlaneError(f"file {getattr(f, 'name', '?')!r} shrank while sent: "
                                 f"{sent} of {size} bytes")
        crc = zlib.crc32(chunk, crc)
        sock.sendall(chunk)
        sent += len(chunk)
    return crc

