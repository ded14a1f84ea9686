"""The file-transfer wire format between a satellite sender and the ground receiver.

Owns framing and field validation only (no sockets policy, no retries). One TCP connection
carries any number of files, one after another:

    sender   -> FILE frame: b"LEOF" | version u8 | header length u32 BE | header JSON
                            {"sender", "file", "size_bytes", "sha256", "transfer_id"}
    sender   -> exactly `size_bytes` payload bytes
    receiver -> ACK frame:  b"LEOA" | version u8 | length u32 BE | JSON
                            {"status", "transfer_id", "bytes", "detail"}

`status` is `ok` (hash verified, counted), `duplicate` (verified, already counted for this
`transfer_id`: the sender's earlier ack was lost), `hash-mismatch` (not counted; resend) or
`rejected` (bad header; the receiver closes the connection; do not resend unchanged).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from nodes.errors import ProtocolError

VERSION = 1
FILE_MAGIC = b"LEOF"
ACK_MAGIC = b"LEOA"
_PREFIX = struct.Struct("!4sBI")  # magic, version, JSON length
PREFIX_BYTES = _PREFIX.size
MAX_FRAME_JSON_BYTES = 16 * 1024
MAX_NAME_BYTES = 255
MAX_SENDER_BYTES = 64
MAX_TRANSFER_ID_BYTES = 512
CHUNK_BYTES = 64 * 1024
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class AckStatus(StrEnum):
    OK = "ok"
    DUPLICATE = "duplicate"
    HASH_MISMATCH = "hash-mismatch"
    REJECTED = "rejected"


def _check_name(field: str, value: object, max_bytes: int) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"header field {field}={value!r}: expected a non-empty string")
    if len(value.encode("utf-8")) > max_bytes:
        raise ProtocolError(f"header field {field}={value[:40]!r}...: expected at most "
                            f"{max_bytes} UTF-8 bytes")
    if value in (".", "..") or any(c in value for c in "/\\\0") or not value.isprintable():
        raise ProtocolError(f"header field {field}={value!r}: expected a plain file-name-like "
                            "string (no '/', '\\', NUL, control characters, '.' or '..')")
    return value


@dataclass(frozen=True)
class FileHeader:
    """Announces one file: who sends it, its base name, size in bytes and sha256 (hex)."""

    sender: str
    file: str
    size_bytes: int
    sha256: str
    transfer_id: str

    def __post_init__(self) -> None:
        _check_name("sender", self.sender, MAX_SENDER_BYTES)
        _check_name("file", self.file, MAX_NAME_BYTES)
        if type(self.size_bytes) is not int or self.size_bytes < 0:
            raise ProtocolError(f"header field size_bytes={self.size_bytes!r}: expected an "
                                "integer >= 0")
        if not isinstance(self.sha256, str) or not _SHA256_RE.fullmatch(self.sha256):
            raise ProtocolError(f"header field sha256={self.sha256!r}: expected 64 lowercase "
                                "hex digits")
        if (not isinstance(self.transfer_id, str) or not self.transfer_id
                or len(self.transfer_id.encode("utf-8")) > MAX_TRANSFER_ID_BYTES):
            raise ProtocolError(f"header field transfer_id={self.transfer_id!r}: expected a "
                                f"non-empty string of at most {MAX_TRANSFER_ID_BYTES} bytes")

    @classmethod
    def for_file(cls, path: Path, *, sender: str, transfer_id: str) -> FileHeader:
        """Header of a file on disk: reads it once to hash it (streamed, 64 KiB chunks)."""
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
        return cls(sender=sender, file=path.name, size_bytes=size, sha256=digest.hexdigest(),
                   transfer_id=transfer_id)

    def encode(self) -> bytes:
        return encode_frame(FILE_MAGIC, asdict(self))

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> FileHeader:
        fields = {"sender", "file", "size_bytes", "sha256", "transfer_id"}
        if set(obj) != fields:
            raise ProtocolError(f"file header keys {sorted(obj)}: expected {sorted(fields)}")
        return cls(**obj)  # type: ignore[arg-type]  # __post_init__ validates every field


@dataclass(frozen=True)
class Ack:
    """The receiver's verdict on one file."""

    status: AckStatus
    transfer_id: str
    bytes: int
    detail: str = ""

    def encode(self) -> bytes:
        return encode_frame(ACK_MAGIC, {"status": self.status.value, "transfer_id":
                                        self.transfer_id, "bytes": self.bytes,
                                        "detail": self.detail})

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> Ack:
        try:
            status = AckStatus(obj.get("status"))
        except ValueError:
            raise ProtocolError(f"ack status {obj.get('status')!r}: expected one of "
                                f"{[s.value for s in AckStatus]}") from None
        transfer_id, nbytes, detail = obj.get("transfer_id"), obj.get("bytes"), obj.get("detail")
        if not isinstance(transfer_id, str) or type(nbytes) is not int or not isinstance(
                detail, str):
            raise ProtocolError(f"ack {obj!r}: expected transfer_id str, bytes int, detail str")
        return cls(status=status, transfer_id=transfer_id, bytes=nbytes, detail=detail)


def encode_frame(magic: bytes, obj: dict[str, object]) -> bytes:
    """Prefix + compact JSON; raises ProtocolError when the JSON exceeds the frame limit."""
    payload = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(payload) > MAX_FRAME_JSON_BYTES:
        raise ProtocolError(f"frame JSON of {len(payload)} bytes: expected at most "
                            f"{MAX_FRAME_JSON_BYTES}")
    return _PREFIX.pack(magic, VERSION, len(payload)) + payload


def decode_prefix(prefix: bytes, magic: bytes) -> int:
    """Validates a frame prefix; returns the JSON length that follows."""
    if len(prefix) != _PREFIX.size:
        raise ProtocolError(f"frame prefix of {len(prefix)} bytes: expected {_PREFIX.size}")
    got_magic, version, length = _PREFIX.unpack(prefix)
    if got_magic != magic:
        raise ProtocolError(f"frame magic {got_magic!r}: expected {magic!r}")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}: expected {VERSION}")
    if length > MAX_FRAME_JSON_BYTES:
        raise ProtocolError(f"frame JSON length {length}: expected at most "
                            f"{MAX_FRAME_JSON_BYTES}")
    return length


def decode_json(payload: bytes) -> dict[str, object]:
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame JSON: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame JSON {type(obj).__name__}: expected an object")
    return obj


def recv_exact(sock: socket.socket, nbytes: int) -> bytes:
    """Reads exactly `nbytes`; returns fewer only when the peer closed (EOF) first."""
    parts: list[bytes] = []
    remaining = nbytes
    while remaining:
        chunk = sock.recv(min(remaining, CHUNK_BYTES))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)



def read_frame(sock: socket.socket, magic: bytes) -> dict[str, object] | None:
    """One frame's JSON; None on a clean EOF before the first byte; ProtocolError otherwise."""
    prefix = recv_exact(sock, _PREFIX.size)
    if not prefix:
        return None
    length = decode_prefix(prefix, magic)
    payload = recv_exact(sock, length)
    if len(payload) != length:
        raise ProtocolError(f"frame JSON cut short: {len(payload)} of {length} bytes before EOF")
    return decode_json(payload)
