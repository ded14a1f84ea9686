"""Data-plane wire format, version 1: encoding and checking MSG and ACK frames.

Owns the bytes only (no sockets but the exact-read helper). The layout is documented in
nodes/README.md ("Data plane") and in nodes/dataplane.py; every bad frame is a FrameError naming
the field, the value and what was expected.
"""

from __future__ import annotations

import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from nodes.errors import DataPlaneError, FrameError

VERSION = 1
MSG_MAGIC = b"LEOD"
ACK_MAGIC = b"LEOK"
TYPE_MSG = 1
ACK_OK, ACK_CORRUPT = 0, 1
MSG_HEAD = struct.Struct(">4sBBHHQQQ")  # magic, version, type, src_len, topic_len, payload_len,
#                                          t_send_unix_ns, msg_id (then CRC of these 34 bytes)
ACK_HEAD = struct.Struct(">4sBBQQQ")  # magic, version, status, msg_id, payload_len, t_recv_unix_ns
CRC = struct.Struct(">I")
MAX_NAME_BYTES = 255
CHUNK_BYTES = 256 * 1024
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 30


@dataclass(frozen=True)
class MsgHeader:
    """The fields of a MSG frame before its payload."""

    src: str
    topic: str
    payload_len: int
    t_send_unix_ns: int
    msg_id: int


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
    head = MSG_HEAD.pack(MSG_MAGIC, VERSION, TYPE_MSG, len(src_b), len(topic_b), payload_len,
                     t_send_unix_ns, msg_id)
    return head + CRC.pack(zlib.crc32(head)) + src_b + topic_b


def encode_ack(status: int, msg_id: int, payload_len: int, t_recv_unix_ns: int) -> bytes:
    body = ACK_HEAD.pack(ACK_MAGIC, VERSION, status, msg_id, payload_len, t_recv_unix_ns)
    return body + CRC.pack(zlib.crc32(body))


def _check_magic_version(what: str, magic: bytes, expected: bytes, version: int) -> None:
    if magic != expected:
        raise FrameError(f"{what} frame: magic {magic!r}, expected {expected!r}")
    if version != VERSION:
        raise FrameError(f"{what} frame: version {version}, expected {VERSION}")


def decode_msg_header(read_exact: Callable[[int, str], bytes],
                      max_payload_bytes: int) -> MsgHeader:
    """Reads and checks a MSG header through `read_exact(n, what)`; FrameError when bad."""
    head = read_exact(MSG_HEAD.size, "header")
    magic, version, ftype, src_len, topic_len, payload_len, t_send, msg_id = MSG_HEAD.unpack(head)
    _check_magic_version("message", magic, MSG_MAGIC, version)
    (crc,) = CRC.unpack(read_exact(CRC.size, "header checksum"))
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
    if len(raw) != ACK_HEAD.size + CRC.size:
        raise FrameError(f"ack frame: {len(raw)} bytes, expected {ACK_HEAD.size + CRC.size}")
    magic, version, status, msg_id, length, t_recv = ACK_HEAD.unpack(raw[:ACK_HEAD.size])
    _check_magic_version("ack", magic, ACK_MAGIC, version)
    (crc,) = CRC.unpack(raw[ACK_HEAD.size:])
    if crc != zlib.crc32(raw[:ACK_HEAD.size]):
        raise FrameError("ack frame: checksum mismatch (corrupted ack)")
    return status, msg_id, length, t_recv


def socket_reader(sock: socket.socket) -> Callable[[int, str], bytes]:
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

