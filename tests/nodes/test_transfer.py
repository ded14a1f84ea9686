"""Sender and receiver over real TCP on loopback with the real images."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import pytest

from nodes.errors import ConfigError
from nodes.events import FileStatus
from nodes.metrics import Metrics
from nodes.transfer import GroundReceiver, SatelliteSender, SenderConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fast_config(name: str, port: int, **kw: object) -> SenderConfig:
    base = dict(connect_timeout_s=0.5, io_timeout_s=2.0, backoff_min_s=0.05, backoff_max_s=0.4)
    base.update(kw)
    return SenderConfig(name, "127.0.0.1", port, **base)  # type: ignore[arg-type]


def run_in_thread(sender: SatelliteSender, stop: threading.Event,
                  deadline_ns: int | None = None) -> tuple[threading.Thread, list[bool]]:
    out: list[bool] = []
    thread = threading.Thread(target=lambda: out.append(sender.run(stop, deadline_ns)),
                              daemon=True)
    thread.start()
    return thread, out


@pytest.mark.parametrize("window", [1, 8])
def test_all_images_delivered_byte_identical(images: list[Path], tmp_path: Path,
                                            window: int) -> None:
    rx_metrics, tx_metrics = Metrics({"node": "gs"}), Metrics({"node": "sat1"})
    with GroundReceiver("127.0.0.1", 0, store_dir=tmp_path, metrics=rx_metrics) as rx:
        sender = SatelliteSender(fast_config("sat1", rx.address[1], window=window), images,
                                 metrics=tx_metrics)
        assert sender.run(threading.Event()) is True
    total = sum(p.stat().st_size for p in images)
    stats = sender.stats()
    assert (stats["files_delivered"], stats["bytes_delivered"], stats["retries"]) == (
        len(images), total, 0)
    for src in images:  # the authority: the source bytes themselves
        assert hashlib.sha256((tmp_path / "sat1" / src.name).read_bytes()).digest() == \
            hashlib.sha256(src.read_bytes()).digest()
    events = sender.events()
    assert [e.file for e in events] == [p.name for p in images]  # order kept
    assert all(e.status is FileStatus.DELIVERED and e.attempts == 1 for e in events)
    assert all(e.end_ns >= e.start_ns and e.end_utc >= e.start_utc for e in events)
    # ~90 kB on loopback takes well under a millisecond; Nagle against Linux' 40 ms delayed
    # ACK (TCP_NODELAY missing) made every file of a window=1 sender wait ~40 ms
    durations = sorted(e.duration_s for e in events)
    assert durations[len(durations) // 2] < 0.02
    peer = f"127.0.0.1:{rx.address[1]}"
    assert tx_metrics.value("leo_node_bytes_delivered_total", peer=peer) == total
    assert tx_metrics.value("leo_node_bytes_sent_total", peer=peer) == total
    assert rx_metrics.value("leo_node_bytes_received_total", peer="sat1") == total
    assert rx_metrics.value("leo_node_files_received_total", peer="sat1") == len(images)


def test_ten_senders_at_once(images: list[Path]) -> None:
    with GroundReceiver("127.0.0.1", 0) as rx:
        senders = [SatelliteSender(fast_config(f"sat{i}", rx.address[1]), images[:20])
                   for i in range(10)]
        stop = threading.Event()
        threads = [run_in_thread(s, stop) for s in senders]
        for thread, _ in threads:
            thread.join(30)
        assert all(out == [True] for _, out in threads)
    tallies = rx.tallies()
    expected = sum(p.stat().st_size for p in images[:20])
    assert sorted(tallies) == sorted(f"sat{i}" for i in range(10))
    assert all(t.files_received == 20 and t.bytes_received == expected
               for t in tallies.values())


def test_receiver_down_then_up_sender_retries_and_delivers_all(images: list[Path]) -> None:
    port = free_port()
    sender = SatelliteSender(fast_config("sat1", port), images)
    stop = threading.Event()
    thread, out = run_in_thread(sender, stop)
    time.sleep(0.8)  # nothing listens: connects are refused, sender backs off
    failures_while_down = sender.stats()["connect_failures"]
    try:
        with GroundReceiver("127.0.0.1", port) as rx:
            thread.join(20)
    finally:
        stop.set()
    assert out == [True]
    assert failures_while_down >= 3  # 0.05 + 0.1 + 0.2 + 0.4 s backoffs fit in 0.8 s
    stats = sender.stats()
    assert stats["files_delivered"] == len(images)
    assert stats["retries"] >= failures_while_down
    assert "ConnectionRefusedError" in stats["errors"]
    assert rx.tallies()["sat1"].files_received == len(images)


def test_receiver_restart_mid_run_counts_only_acked_files(images: list[Path]) -> None:
    """Kill the receiver while files are in flight: the sender never counts a file that no
    receiver counted, retries the rest, and the second receiver gets them."""
    port = free_port()
    rx1 = GroundReceiver("127.0.0.1", port)
    rx1.start()
    sender = SatelliteSender(fast_config("sat1", port), images, loops=0)  # until the deadline
    stop = threading.Event()
    deadline_ns = time.monotonic_ns() + int(2.0e9)
    thread, out = run_in_thread(sender, stop, deadline_ns)
    try:
        time.sleep(0.4)
        rx1.stop()  # cuts connections mid-file
        time.sleep(0.4)
        with GroundReceiver("127.0.0.1", port) as rx2:
            thread.join(10)
    finally:
        stop.set()
    assert out == [False]  # ended by the deadline
    delivered = {e.transfer_id for e in sender.events() if e.status is FileStatus.DELIVERED}
    counted = {e.transfer_id for rx in (rx1, rx2) for e in rx.events()
               if e.status is FileStatus.RECEIVED}
    assert delivered and delivered <= counted
    assert any(e.status is FileStatus.RECEIVED for e in rx2.events())
    assert sender.stats()["retries"] >= 1
    stopped = [e for e in sender.events() if e.status is FileStatus.STOPPED]
    assert len(stopped) <= sender.config.window + 1  # only what was in flight at the deadline


def test_deadline_with_no_receiver_stops_promptly(images: list[Path]) -> None:
    sender = SatelliteSender(fast_config("sat1", free_port()), images)
    t0 = time.monotonic()
    assert sender.run(threading.Event(), time.monotonic_ns() + int(0.5e9)) is False
    assert time.monotonic() - t0 < 1.5
    assert sender.stats()["files_delivered"] == 0 and sender.events() == []


def test_blackholed_path_times_out_on_no_progress(images: list[Path]) -> None:
    """A listener that never reads nor acks (a dead path): the sender gives up the attempt
    after io_timeout_s and retries instead of hanging."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        sender = SatelliteSender(fast_config("sat1", port, io_timeout_s=0.3), images[:2])
        t0 = time.monotonic()
        assert sender.run(threading.Event(), time.monotonic_ns() + int(1.5e9)) is False
    stats = sender.stats()
    assert time.monotonic() - t0 < 2.5
    assert stats["errors"].get("TransferError", 0) >= 2  # type: ignore[union-attr]
    assert "no progress" in str(stats["last_error"])
    assert stats["files_delivered"] == 0


def test_unreadable_file_fails_and_the_rest_is_delivered(images: list[Path],
                                                          tmp_path: Path) -> None:
    missing = tmp_path / "gone.png"
    with GroundReceiver("127.0.0.1", 0) as rx:
        sender = SatelliteSender(fast_config("sat1", rx.address[1]),
                                 [images[0], missing, images[1]])
        assert sender.run(threading.Event()) is True
    statuses = {e.file: e.status for e in sender.events()}
    assert statuses == {images[0].name: FileStatus.DELIVERED, "gone.png": FileStatus.FAILED,
                        images[1].name: FileStatus.DELIVERED}


def test_stop_event_ends_backoff_promptly(images: list[Path]) -> None:
    sender = SatelliteSender(fast_config("sat1", free_port(), backoff_min_s=5.0,
                                         backoff_max_s=5.0), images)
    stop = threading.Event()
    thread, out = run_in_thread(sender, stop)
    time.sleep(0.2)
    t0 = time.monotonic()
    stop.set()
    thread.join(2)
    assert out == [False] and time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("kw,match", [
    ({"ground_port": 0}, "ground_port=0"),
    ({"window": 0}, "window=0"),
    ({"backoff_min_s": 1.0, "backoff_max_s": 0.5}, "backoff_max_s=0.5"),
    ({"name": "a/b"}, "sender name"),
])
def test_sender_config_rejects_bad_values(kw: dict[str, object], match: str) -> None:
    fields: dict[str, object] = dict(name="sat1", ground_ip="127.0.0.1", ground_port=7000)
    fields.update(kw)
    with pytest.raises(ConfigError, match=match):
        SenderConfig(**fields)  # type: ignore[arg-type]
