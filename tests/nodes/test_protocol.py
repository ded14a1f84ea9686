"""The wire format and the receiver's verdicts, on a socketpair: nothing counted unverified."""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.errors import ProtocolError
from nodes.events import FileStatus
from nodes.metrics import Metrics
from nodes.protocol import (
    ACK_MAGIC,
    FILE_MAGIC,
    Ack,
    AckStatus,
    FileHeader,
    decode_prefix,
    read_frame,
)
from nodes.receiver import GroundReceiver

PAYLOAD = bytes(range(256)) * 300  # 76,800 bytes, more than one 64 KiB chunk


def header_for(payload: bytes, name: str = "a.png", tid: str = "0:a.png") -> FileHeader:
    return FileHeader(sender="sat1", file=name, size_bytes=len(payload),
                      sha256=hashlib.sha256(payload).hexdigest(), transfer_id=tid)


def test_header_round_trip_and_layout() -> None:
    header = header_for(PAYLOAD)
    frame = header.encode()
    magic, version, length = struct.unpack("!4sBI", frame[:9])
    assert (magic, version, length) == (b"LEOF", 1, len(frame) - 9)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(frame)
        obj = read_frame(b, FILE_MAGIC)
    assert obj is not None and FileHeader.from_json(obj) == header


def test_header_for_file_hashes_like_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(PAYLOAD)
    header = FileHeader.for_file(path, sender="sat1", transfer_id="0:x.bin")
    assert header.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert header.size_bytes == len(PAYLOAD) and header.file == "x.bin"


@pytest.mark.parametrize("field,value,match", [
    ("file", "../etc/passwd", "plain file-name"),
    ("file", "..", "plain file-name"),
    ("file", "", "non-empty"),
    ("sender", "sat/1", "plain file-name"),
    ("size_bytes", -1, "integer >= 0"),
    ("size_bytes", True, "integer >= 0"),
    ("sha256", "ABC", "64 lowercase hex"),
    ("transfer_id", "", "transfer_id"),
])
def test_header_rejects_bad_fields(field: str, value: object, match: str) -> None:
    fields = dict(sender="sat1", file="a.png", size_bytes=1, sha256="0" * 64, transfer_id="t")
    fields[field] = value
    with pytest.raises(ProtocolError, match=match):
        FileHeader(**fields)  # type: ignore[arg-type]


def test_prefix_errors_name_the_problem() -> None:
    with pytest.raises(ProtocolError, match="magic"):
        decode_prefix(struct.pack("!4sBI", b"XXXX", 1, 2), FILE_MAGIC)
    with pytest.raises(ProtocolError, match="version 9"):
        decode_prefix(struct.pack("!4sBI", FILE_MAGIC, 9, 2), FILE_MAGIC)
    with pytest.raises(ProtocolError, match="at most"):
        decode_prefix(struct.pack("!4sBI", FILE_MAGIC, 1, 1 << 30), FILE_MAGIC)


def test_ack_rejects_unknown_status() -> None:
    with pytest.raises(ProtocolError, match="ack status 'maybe'"):
        Ack.from_json({"status": "maybe", "transfer_id": "t", "bytes": 0, "detail": ""})


class Link:
    """A receiver serving one end of a socketpair in a thread; the test drives the other end."""

    def __init__(self, rx: GroundReceiver):
        self.rx = rx
        self.client, server = socket.socketpair()
        self.client.settimeout(5)
        self.thread = threading.Thread(target=self._serve, args=(server,), daemon=True)
        self.thread.start()

    def _serve(self, server: socket.socket) -> None:
        with server:
            self.rx.serve_connection(server, "pair")

    def ack(self) -> Ack:
        obj = read_frame(self.client, ACK_MAGIC)
        assert obj is not None, "receiver closed without an ack"
        return Ack.from_json(obj)

    def close(self) -> None:
        self.client.close()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def link(tmp_path: Path) -> Iterator[Link]:
    rx = GroundReceiver("127.0.0.1", 0, store_dir=tmp_path / "store",
                        metrics=Metrics({"node": "gs"}))
    lk = Link(rx)
    yield lk
    lk.close()


def test_good_file_is_acked_counted_and_stored_byte_identical(link: Link, tmp_path: Path) -> None:
    link.client.sendall(header_for(PAYLOAD).encode() + PAYLOAD)
    ack = link.ack()
    assert (ack.status, ack.bytes, ack.transfer_id) == (AckStatus.OK, len(PAYLOAD), "0:a.png")
    assert (tmp_path / "store" / "sat1" / "a.png").read_bytes() == PAYLOAD
    tally = link.rx.tallies()["sat1"]
    assert (tally.files_received, tally.bytes_received) == (1, len(PAYLOAD))


def test_hash_mismatch_is_rejected_and_not_counted(link: Link, tmp_path: Path) -> None:
    corrupted = bytearray(PAYLOAD)
    corrupted[1000] ^= 0xFF
    link.client.sendall(header_for(PAYLOAD).encode() + bytes(corrupted))
    ack = link.ack()
    assert ack.status is AckStatus.HASH_MISMATCH
    assert hashlib.sha256(bytes(corrupted)).hexdigest() in ack.detail
    assert link.rx.tallies()["sat1"].files_received == 0
    assert [e.status for e in link.rx.events()] == [FileStatus.HASH_MISMATCH]
    assert not (tmp_path / "store" / "sat1" / "a.png").exists()
    assert list((tmp_path / "store" / "sat1").iterdir()) == []  # no partial file left
    # the connection stays usable: the resend of the right bytes is counted
    link.client.sendall(header_for(PAYLOAD).encode() + PAYLOAD)
    assert link.ack().status is AckStatus.OK
    assert link.rx.events()[-1].attempts == 2
    assert link.rx.tallies()["sat1"].files_received == 1


def test_partial_transfer_is_not_counted(link: Link, tmp_path: Path) -> None:
    link.client.sendall(header_for(PAYLOAD).encode() + PAYLOAD[:50_000])
    link.client.shutdown(socket.SHUT_WR)  # the link dies mid-file
    assert read_frame(link.client, ACK_MAGIC) is None  # no ack for a partial file
    link.thread.join(5)
    [event] = link.rx.events()
    assert event.status is FileStatus.INCOMPLETE and event.bytes == 50_000
    assert "50000 of 76800" in event.error
    assert link.rx.tallies()["sat1"].files_received == 0
    assert list((tmp_path / "store" / "sat1").iterdir()) == []


def test_duplicate_transfer_is_acked_but_counted_once(link: Link) -> None:
    for _ in range(2):  # the first ack was "lost": the sender resends the same transfer
        link.client.sendall(header_for(PAYLOAD).encode() + PAYLOAD)
    assert [link.ack().status, link.ack().status] == [AckStatus.OK, AckStatus.DUPLICATE]
    tally = link.rx.tallies()["sat1"]
    assert (tally.files_received, tally.duplicates) == (1, 1)


def test_bad_header_is_rejected_and_connection_closed(link: Link) -> None:
    frame = bytearray(header_for(PAYLOAD, name="a.png").encode())
    bad = bytes(frame).replace(b'"a.png"', b'"../x"')
    bad = struct.pack("!4sBI", FILE_MAGIC, 1, len(bad) - 9) + bad[9:]
    link.client.sendall(bad)
    ack = link.ack()
    assert ack.status is AckStatus.REJECTED and "plain file-name" in ack.detail
    assert read_frame(link.client, ACK_MAGIC) is None  # receiver hung up
    assert link.rx.events()[0].status is FileStatus.REJECTED


def test_oversized_file_is_rejected(tmp_path: Path) -> None:
    rx = GroundReceiver("127.0.0.1", 0, max_file_bytes=1000)
    lk = Link(rx)
    try:
        lk.client.sendall(header_for(PAYLOAD).encode())
        ack = lk.ack()
        assert ack.status is AckStatus.REJECTED and "at most 1000" in ack.detail
    finally:
        lk.close()
