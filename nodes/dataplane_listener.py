"""The data-plane listener: reads MSG frames on the node's data IP, stamps, acks, queues.

Owns the receiving side only: one thread per connection, arrival stamps, acknowledgements, the
per-topic inbox and the counts of frame errors. Frames are checked by dataplane_wire.py.
"""

from __future__ import annotations

import logging
import queue
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from nodes.addr import format_hostport
from nodes.dataplane_wire import (
    ACK_CORRUPT,
    ACK_OK,
    CHUNK_BYTES,
    CRC,
    DEFAULT_MAX_PAYLOAD_BYTES,
    MsgHeader,
    decode_msg_header,
    encode_ack,
    socket_reader,
)
from nodes.errors import DataPlaneError, FrameError, RecvTimeoutError

log = logging.getLogger("nodes.dataplane")


@dataclass(frozen=True)
class Message:
    """A received message: who sent it, on which topic, its payload and both ends' instants."""

    src: str
    topic: str
    payload: bytes
    t_send_unix_ns: int
    t_recv_unix_ns: int
    msg_id: int


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
        read_exact = socket_reader(sock)
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
        (sent_crc,) = CRC.unpack(read_exact(CRC.size, "payload checksum"))
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

