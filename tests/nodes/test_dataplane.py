"""Data-plane framing and delivery over real loopback sockets: blobs larger than 1 MiB, files,
timestamps, acks, and the errors of truncated, corrupted and unknown frames and peers."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nodes.context import ContextRef, RunContext
from nodes.dataplane import DataPlane, DataPlaneListener, Inbox
from nodes.dataplane_wire import decode_ack, decode_msg_header, encode_ack, encode_msg_header
from nodes.errors import (
    ContextError,
    DataPlaneError,
    FrameError,
    RecvTimeoutError,
    UnknownPeerError,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def planes() -> Iterator[tuple[DataPlane, DataPlane]]:
    """a (127.0.0.2) and b (127.0.0.3), both listening on one free port; closed in teardown."""
    port = free_port()
    peers = {"a": "127.0.0.2", "b": "127.0.0.3"}
    made = []
    try:
        for name in ("a", "b"):
            ref = ContextRef()
            ref.set(RunContext(node=name, peers=peers, data_port=port))
            dp = DataPlane(name, peers[name], ref)
            made.append(dp)
            dp.listen(port)
        yield made[0], made[1]
    finally:
        for dp in made:
            dp.close()


def reader(data: bytes) -> Callable[[int, str], bytes]:
    stream = io.BytesIO(data)

    def read_exact(n: int, what: str) -> bytes:
        got = stream.read(n)
        if len(got) < n:
            raise FrameError(f"truncated frame: stream ended in {what} after {len(got)} of "
                             f"{n} bytes")
        return got

    return read_exact


def test_header_round_trip_and_ack_round_trip() -> None:
    raw = encode_msg_header("sat1", "images/tile", 12345, 1_700_000_000_123_456_789, 7)
    h = decode_msg_header(reader(raw), max_payload_bytes=1 << 20)
    assert (h.src, h.topic, h.payload_len, h.t_send_unix_ns, h.msg_id) == (
        "sat1", "images/tile", 12345, 1_700_000_000_123_456_789, 7)
    assert decode_ack(encode_ack(0, 7, 12345, 99)) == (0, 7, 12345, 99)


@pytest.mark.parametrize("mutate,match", [
    (lambda raw: b"XXXX" + raw[4:], r"magic b'XXXX', expected b'LEOD'"),
    (lambda raw: raw[:4] + b"\x02" + raw[5:], "version 2, expected 1"),
    (lambda raw: raw[:20] + bytes([raw[20] ^ 1]) + raw[21:], "header checksum"),
    (lambda raw: raw[:10], "truncated frame: stream ended in header after 10 of 34"),
    (lambda raw: raw[:36], "truncated frame: stream ended in header checksum after 2 of 4"),
    (lambda raw: raw[:38], "truncated frame: stream ended in src after 0 of 4"),
])
def test_bad_headers_are_named(mutate: Callable[[bytes], bytes], match: str) -> None:
    raw = encode_msg_header("sat1", "t", 10, 1, 1)
    with pytest.raises(FrameError, match=match):
        decode_msg_header(reader(mutate(raw)), max_payload_bytes=1 << 20)


def test_payload_over_the_limit_is_refused_from_the_header() -> None:
    raw = encode_msg_header("sat1", "t", 2 << 20, 1, 1)
    with pytest.raises(FrameError, match="payload_len=2097152, expected at most 1048576"):
        decode_msg_header(reader(raw), max_payload_bytes=1 << 20)


def test_corrupted_ack_is_refused() -> None:
    ack = bytearray(encode_ack(0, 1, 2, 3))
    ack[10] ^= 0xFF
    with pytest.raises(FrameError, match="ack frame: checksum mismatch"):
        decode_ack(bytes(ack))


def test_blob_and_file_cross_with_timestamps(planes: tuple[DataPlane, DataPlane],
                                             tmp_path: Path) -> None:
    a, b = planes
    blob = bytes(range(256)) * (12 * 4096)  # 12 MiB: streamed, no 1 MiB limit
    t0 = time.time_ns()
    receipt = a.send("b", "blob", blob)
    msg = b.recv("blob", timeout_s=5)
    assert msg.payload == blob and (msg.src, msg.topic) == ("a", "blob")
    assert receipt.bytes == len(blob) and receipt.msg_id == msg.msg_id
    assert t0 <= receipt.t_send_unix_ns == msg.t_send_unix_ns
    assert msg.t_send_unix_ns <= msg.t_recv_unix_ns == receipt.t_peer_recv_unix_ns
    assert receipt.t_peer_recv_unix_ns <= receipt.t_acked_unix_ns
    path = tmp_path / "f.bin"
    path.write_bytes(blob[: 3 * 1024 * 1024 + 17])
    b.send("a", "file", path)
    assert a.recv("file", timeout_s=5).payload == path.read_bytes()
    assert b.listener is not None and b.listener.stats()["bytes"] == len(blob)


def test_empty_payload_and_topics_are_separate(planes: tuple[DataPlane, DataPlane]) -> None:
    a, b = planes
    a.send("b", "x", b"")
    a.send("b", "y", b"second")
    assert b.recv("y", timeout_s=2).payload == b"second"
    assert b.recv("x", timeout_s=2).payload == b""
    with pytest.raises(RecvTimeoutError, match="node b: no message on topic 'x' within 0.1 s"):
        b.recv("x", timeout_s=0.1)


def test_unknown_peer_lists_the_valid(planes: tuple[DataPlane, DataPlane]) -> None:
    a, _ = planes
    with pytest.raises(UnknownPeerError, match="node a: unknown peer 'mars'; choose: a, b"):
        a.send("mars", "t", b"x")


def test_nobody_listening_is_a_data_plane_error() -> None:
    ref = ContextRef()
    ref.set(RunContext(node="a", peers={"b": "127.0.0.1"}, data_port=free_port()))
    with pytest.raises(DataPlaneError, match=r"send 't' to b \(127.0.0.1:\d+\): cannot connect"):
        DataPlane("a", None, ref).send("b", "t", b"x", timeout_s=1)


def test_no_context_yet() -> None:
    with pytest.raises(ContextError, match="node a: data plane: no run context pushed yet"):
        DataPlane("a", "127.0.0.1", ContextRef()).send("b", "t", b"x")


def raw_listener() -> tuple[DataPlaneListener, Inbox]:
    inbox = Inbox()
    listener = DataPlaneListener("127.0.0.1", 0, inbox)
    listener.start()
    return listener, inbox


def test_corrupted_payload_is_acked_corrupt_and_dropped() -> None:
    listener, inbox = raw_listener()
    try:
        payload = b"hello world"
        frame = (encode_msg_header("x", "t", len(payload), 1, 5) + b"hellO world"
                 + struct.pack(">I", zlib.crc32(payload)))
        with socket.create_connection(listener.address, timeout=5) as s:
            s.sendall(frame)
            status, msg_id, length, _ = decode_ack(s.recv(64))
        assert (status, msg_id, length) == (1, 5, len(payload))
        assert listener.stats()["corrupted"] == 1 and listener.stats()["messages"] == 0
        assert "payload checksum" in listener.last_error
        with pytest.raises(RecvTimeoutError):
            inbox.get("n", "t", 0.05)
    finally:
        listener.stop()


def test_truncated_frame_on_the_wire_is_counted_and_named() -> None:
    listener, inbox = raw_listener()
    try:
        frame = encode_msg_header("x", "t", 1000, 1, 1) + b"only 20 bytes here.."
        with socket.create_connection(listener.address, timeout=5) as s:
            s.sendall(frame)
        deadline = time.monotonic() + 5
        while listener.stats()["frame_errors"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert listener.stats()["frame_errors"] == 1
        assert listener.last_error == ("truncated frame: connection ended in payload after 20 "
                                       "of 1000 bytes")
    finally:
        listener.stop()


def test_sender_sees_a_peer_that_closes_before_the_ack() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        ref = ContextRef()
        ref.set(RunContext(node="a", peers={"b": "127.0.0.1"}, data_port=srv.getsockname()[1]))
        dp = DataPlane("a", None, ref)
        srv.settimeout(5)

        frame_bytes = 38 + len("a") + len("t") + 10 + 4  # header+crc, src, topic, payload, crc

        def swallow() -> None:
            """Reads the whole frame, then closes without an ack."""
            conn, _ = srv.accept()
            with conn:
                got = b""
                while len(got) < frame_bytes and (chunk := conn.recv(frame_bytes - len(got))):
                    got += chunk

        t = threading.Thread(target=swallow)
        t.start()
        with pytest.raises(DataPlaneError, match="no ack: truncated frame: connection ended "
                                                 "in ack after 0 of 34 bytes"):
            dp.send("b", "t", b"x" * 10, timeout_s=5)
        t.join(5)
