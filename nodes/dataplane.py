"""Messages and blobs between nodes over the emulated data network, timestamped at both ends.

Owns the data-plane framing, the listener an agent runs on its data IP and the two calls a
workload makes: `send(peer, topic, payload) -> SendReceipt` and `recv(topic, timeout_s) ->
Message`. Everything crosses the emulated links (TCP from this node's data IP to the peer's);
peers are named, their data IPs come from the pushed RunContext.

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

import logging
import queue
import socket
import socketserver
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from nodes.addr import format_hostport
from nodes.context import ContextRef
from nodes.errors import DataPlaneError, FrameError, RecvTimeoutError, UnknownPeerError

log = logging.getLogger("nodes.dataplane")

VERSION = 1
MSG_MAGIC = b"LEOD"
ACK_MAGIC = b"LEOK"
TYPE_MSG = 1
ACK_OK, ACK_CORRUPT = 0, 1
_MSG = struct.Struct(">4sBBHHQQQ")
_ACK = struct.Struct(">4sBBQQQ")
_CRC = struct.Struct(">I")
MAX_NAME_BYTES = 255
CHUNK_BYTES = 256 * 1024
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 30


@dataclass(frozen=True)
class SendReceipt:
    """A delivered message: sender's send and ack-arrival instants, the receiver's arrival
    instant (its clock, from the ack), payload bytes and the message id."""

    t_send_unix_ns: int
    t_acked_unix_ns: int
    bytes: int
    t_peer_recv_unix_ns: int
    msg_id: int


@dataclass(frozen=True)
class Message:
    """A received message: who sent it, on which topic, its payload and both ends' instants."""

    src: str
    topic: str
    payload: bytes
    t_send_unix_ns: int
    t_recv_unix_ns: int
    msg_id: int


@dataclass(frozen=True)
class MsgHeader:
    src: str
    topic: str
    payload_len: int
    t_send_unix_ns: int
    msg_id: int


# framing -------------------------------------------------------------------------------------
def _name_bytes(field: str, value: str) -> bytes:
    raw = value.encode("utf-8")
    if not raw or len(raw) > MAX_NAME_BYTES:
        raise DataPlaneError(f"message {field}={value!r}: {len(raw)} bytes, expected "
                             f"1..{MAX_NAME_BYTES}")
    return raw


def encode_msg_header(src: str, topic: str, payload_len: int, t_send_unix_ns: int,
                      msg_id: int) -> bytes:
    """The MSG header plus src and topic (what precedes the payload)."""
    src_b, topic_b = _name_bytes("src", src), _name_bytes("topic", topic)
    head = _MSG.pack(MSG_MAGIC, VERSION, TYPE_MSG, len(src_b), len(topic_b), payload_len,
                     t_send_unix_ns, msg_id)
    return head + _CRC.pack(zlib.crc32(head)) + src_b + topic_b


def encode_ack(status: int, msg_id: int, payload_len: int, t_recv_unix_ns: int) -> bytes:
    body = _ACK.pack(ACK_MAGIC, VERSION, status, msg_id, payload_len, t_recv_unix_ns)
    return body + _CRC.pack(zlib.crc32(body))


def _check_magic_version(what: str, magic: bytes, expected: bytes, version: int) -> None:
    if magic != expected:
        raise FrameError(f"{what} frame: magic {magic!r}, expected {expected!r}")
    if version != VERSION:
        raise FrameError(f"{what} frame: version {version}, expected {VERSION}")


def decode_msg_header(read_exact: Callable[[int, str], bytes],
                      max_payload_bytes: int) -> MsgHeader:
    """Reads and checks a MSG header through `read_exact(n, what)`; FrameError when bad."""
    head = read_exact(_MSG.size, "header")
    magic, version, ftype, src_len, topic_len, payload_len, t_send, msg_id = _MSG.unpack(head)
    _check_magic_version("message", magic, MSG_MAGIC, version)
    (crc,) = _CRC.unpack(read_exact(_CRC.size, "header checksum"))
    if crc != zlib.crc32(head):
        raise FrameError(f"message frame: header checksum {crc:#010x}, expected "
                         f"{zlib.crc32(head):#010x} (corrupted header)")
    if ftype != TYPE_MSG:
        raise FrameError(f"message frame: type {ftype}, expected {TYPE_MSG}")
    if payload_len > max_payload_bytes:
        raise FrameError(f"message frame: payload_len={payload_len}, expected at most "
                         f"{max_payload_bytes}")
    try:
        src = read_exact(src_len, "src").decode("utf-8")
        topic = read_exact(topic_len, "topic").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"message frame: src/topic not UTF-8: {exc}") from None
    return MsgHeader(src=src, topic=topic, payload_len=payload_len, t_send_unix_ns=t_send,
                     msg_id=msg_id)


def decode_ack(raw: bytes) -> tuple[int, int, int, int]:
    """(status, msg_id, payload_len, t_recv_unix_ns) of an ACK frame; FrameError when bad."""
    if len(raw) != _ACK.size + _CRC.size:
        raise FrameError(f"ack frame: {len(raw)} bytes, expected {_ACK.size + _CRC.size}")
    magic, version, status, msg_id, length, t_recv = _ACK.unpack(raw[:_ACK.size])
    _check_magic_version("ack", magic, ACK_MAGIC, version)
    (crc,) = _CRC.unpack(raw[_ACK.size:])
    if crc != zlib.crc32(raw[:_ACK.size]):
        raise FrameError("ack frame: checksum mismatch (corrupted ack)")
    return status, msg_id, length, t_recv


def _socket_reader(sock: socket.socket) -> Callable[[int, str], bytes]:
    """`read_exact(n, what)` on a socket: FrameError naming `what` when the stream ends early."""

    def read_exact(n: int, what: str) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(min(n - len(buf), CHUNK_BYTES))
            if not chunk:
                raise FrameError(f"truncated frame: connection ended in {what} after "
                                 f"{len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    return read_exact


# receiving -----------------------------------------------------------------------------------
class Inbox:
    """Received messages by topic; `get(topic, timeout_s)` blocks until one arrives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, queue.Queue[Message]] = {}

    def _queue(self, topic: str) -> queue.Queue[Message]:
        with self._lock:
            return self._queues.setdefault(topic, queue.Queue())

    def put(self, message: Message) -> None:
        self._queue(message.topic).put(message)

    def get(self, node: str, topic: str, timeout_s: float) -> Message:
        try:
            return self._queue(topic).get(timeout=timeout_s)
        except queue.Empty:
            raise RecvTimeoutError(f"node {node}: no message on topic {topic!r} within "
                                   f"{timeout_s} s") from None


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], listener: DataPlaneListener):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.listener = listener
        super().__init__(address, _Conn)


class _Conn(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.server.listener.serve_connection(self.request, self.client_address)


class DataPlaneListener:
    """TCP listener on the node's data IP: reads MSG frames, stamps arrival, acks, queues.

    `stats()` counts messages, bytes and frame errors (what a truncated or corrupted frame did).
    """

    def __init__(self, host: str, port: int, inbox: Inbox, *,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, idle_timeout_s: float = 60.0,
                 clock_ns: Callable[[], int] = time.time_ns):
        self.host, self.port = host, port
        self.inbox = inbox
        self.max_payload_bytes = max_payload_bytes
        self.idle_timeout_s = idle_timeout_s
        self._clock_ns = clock_ns
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stats = {"messages": 0, "bytes": 0, "frame_errors": 0, "corrupted": 0}
        self.last_error = ""

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise DataPlaneError(f"data-plane listener {self.host}:{self.port}: not started")
        return self._server.server_address[:2]  # type: ignore[return-value]

    def start(self) -> None:
        try:
            self._server = _Server((self.host, self.port), self)
        except OSError as exc:
            raise DataPlaneError(f"data-plane listener: cannot listen on "
                                 f"{format_hostport(self.host, self.port)}: {exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, name="dataplane",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for key, value in deltas.items():
                self._stats[key] += value

    def serve_connection(self, sock: socket.socket, remote: tuple[str, int]) -> None:
        """Frames until the peer closes at a frame boundary or a frame is bad."""
        sock.settimeout(self.idle_timeout_s)
        read_exact = _socket_reader(sock)
        try:
            while True:
                first = sock.recv(1)
                if not first:
                    return  # clean close between frames
                pending = [first]

                def read_first(n: int, what: str, _p: list[bytes] = pending) -> bytes:
                    if _p:
                        head = _p.pop()
                        return head + read_exact(n - len(head), what)
                    return read_exact(n, what)

                header = decode_msg_header(read_first, self.max_payload_bytes)
                self._receive_payload(sock, header, read_exact)
        except FrameError as exc:
            self.last_error = str(exc)
            self._count(frame_errors=1)
            log.warning("data-plane frame error", extra={"remote": format_hostport(*remote[:2]),
                                                          "error": str(exc)})
        except OSError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._count(frame_errors=1)
            log.warning("data-plane connection failed",
                        extra={"remote": format_hostport(*remote[:2]), "error": str(exc)})

    def _receive_payload(self, sock: socket.socket, header: MsgHeader,
                         read_exact: Callable[[int, str], bytes]) -> None:
        buf = bytearray()
        crc = 0
        while len(buf) < header.payload_len:
            chunk = read_exact(min(CHUNK_BYTES, header.payload_len - len(buf)), "payload")
            crc = zlib.crc32(chunk, crc)
            buf += chunk
        (sent_crc,) = _CRC.unpack(read_exact(_CRC.size, "payload checksum"))
        t_recv = self._clock_ns()
        if sent_crc != crc:
            self._count(corrupted=1)
            self.last_error = (f"message {header.msg_id} from {header.src}: payload checksum "
                               f"{sent_crc:#010x}, computed {crc:#010x}")
            sock.sendall(encode_ack(ACK_CORRUPT, header.msg_id, len(buf), t_recv))
            return
        self.inbox.put(Message(src=header.src, topic=header.topic, payload=bytes(buf),
                               t_send_unix_ns=header.t_send_unix_ns, t_recv_unix_ns=t_recv,
                               msg_id=header.msg_id))
        self._count(messages=1, bytes=len(buf))
        sock.sendall(encode_ack(ACK_OK, header.msg_id, len(buf), t_recv))


# the node's data plane -----------------------------------------------------------------------
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
            sock.sendall(_CRC.pack(crc))
            raw = _socket_reader(sock)(_ACK.size + _CRC.size, "ack")
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
