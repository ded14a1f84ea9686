"""Framing of the control channel between UserspaceShaper and its worker process.

A message is a 4-byte big-endian length followed by a pickle of a dict. Both ends are this
package's own code in a parent and the child it spawned over a socketpair, so pickle is safe
here; it carries LinkState and TraceProgram objects as they are. Owns framing only.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

from netem.errors import NetemError

_HEADER = struct.Struct("!I")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    """One framed message."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    """Send one message on a blocking socket."""
    sock.sendall(encode(message))


def recv_message(sock: socket.socket) -> dict[str, Any]:
    """Receive one message from a blocking socket (NetemError when the peer has gone)."""
    header = _recv_exact(sock, _HEADER.size)
    (length,) = _HEADER.unpack(header)
    if length > MAX_MESSAGE_BYTES:
        raise NetemError(f"control channel: message of {length} bytes, expected <= "
                         f"{MAX_MESSAGE_BYTES}")
    return pickle.loads(_recv_exact(sock, length))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise NetemError("control channel closed by the userspace shaper worker")
        chunks += chunk
    return bytes(chunks)


class MessageBuffer:
    """Reassembles messages from a non-blocking stream (the worker side)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add received bytes; return every message now complete."""
        self._buf += data
        out: list[dict[str, Any]] = []
        while len(self._buf) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buf)
            end = _HEADER.size + length
            if len(self._buf) < end:
                break
            out.append(pickle.loads(bytes(self._buf[_HEADER.size:end])))
            del self._buf[:end]
        return out
