"""The satellite sender: walks a file list in order and gets every file acked by the ground.

Owns connecting (bound to the node's data IP), pipelining up to `window` unacked files on one
connection, detecting a dead path (no progress for `io_timeout_s`), backing off and retrying the
same files, and the sender-side events and counters. It does not route: it connects to the
ground's data IP and lets the network find a path (own ground link or ISL relay).
"""

from __future__ import annotations

import array
import fcntl
import itertools
import selectors
import socket
import termios
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from nodes.clock import Stamp, SystemClock
from nodes.errors import ConfigError, ProtocolError, TransferError
from nodes.events import FileEvent, FileStatus
from nodes.metrics import Metrics
from nodes.protocol import (
    ACK_MAGIC,
    CHUNK_BYTES,
    PREFIX_BYTES,
    Ack,
    AckStatus,
    FileHeader,
    decode_json,
    decode_prefix,
)


@dataclass(frozen=True)
class SenderConfig:
    """How one satellite sends. Times in seconds; `window` = files in flight before an ack.

    `window=1` is strict send-then-wait; larger windows hide the round trip between files
    (a 150 kB file at 100 Mbit/s lasts 12 ms, a LEO round trip 20-60 ms).
    """

    name: str
    ground_ip: str
    ground_port: int
    source_ip: str | None = None
    connect_timeout_s: float = 1.0
    io_timeout_s: float = 5.0
    backoff_min_s: float = 0.2
    backoff_max_s: float = 2.0
    window: int = 8
    poll_s: float = 0.05
    max_changes: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.ground_port <= 65535:
            raise ConfigError(f"sender {self.name}: ground_port={self.ground_port}, "
                              "expected 1..65535")
        for fname in ("connect_timeout_s", "io_timeout_s", "backoff_min_s", "poll_s"):
            if not getattr(self, fname) > 0:
                raise ConfigError(f"sender {self.name}: {fname}={getattr(self, fname)}, "
                                  "expected > 0")
        if self.backoff_max_s < self.backoff_min_s:
            raise ConfigError(f"sender {self.name}: backoff_max_s={self.backoff_max_s}, "
                              f"expected >= backoff_min_s={self.backoff_min_s}")
        if self.window < 1:
            raise ConfigError(f"sender {self.name}: window={self.window}, expected >= 1")
        if self.max_changes < 1:
            raise ConfigError(f"sender {self.name}: max_changes={self.max_changes}, "
                              "expected >= 1")
        try:  # the name travels in every header: fail here, not on the first file
            FileHeader(sender=self.name, file="x", size_bytes=0, sha256="0" * 64,
                       transfer_id="x")
        except ProtocolError as exc:
            raise ConfigError(f"sender name {self.name!r}: {exc}") from None

    @property
    def peer(self) -> str:
        return f"{self.ground_ip}:{self.ground_port}"


@dataclass
class _Item:
    """One planned file across its attempts."""

    loop: int
    path: Path
    header: FileHeader | None = None
    event: FileEvent | None = None
    changes: int = 0  # hash mismatches or size changes seen so far


@dataclass
class _Outgoing:
    """The file being written to the socket: header bytes first, then the payload from disk."""

    item: _Item
    fh: IO[bytes]
    buffer: memoryview
    header_left: int
    payload_unread: int

    @property
    def done(self) -> bool:
        return self.header_left == 0 and self.payload_unread == 0 and not self.buffer


@dataclass
class _Stats:
    attempts: int = 0
    retries: int = 0
    connect_failures: int = 0
    bytes_sent: int = 0
    connected_ns: int = 0
    last_error: str = ""
    errors: dict[str, int] = field(default_factory=dict)


class _Stopped(Exception):
    """Internal: the stop event fired or the deadline passed."""


def _unacked_bytes(sock: socket.socket) -> int | None:
    """Bytes the kernel still holds for this TCP socket (Linux SIOCOUTQ); None if unsupported."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf, True)
    except OSError:
        return None
    return buf[0]


class SatelliteSender:
    """Sends `files` (in order, `loops` times; 0 = until stop/deadline) to the ground receiver.

    A file counts as delivered only when the receiver acked it with a verified hash. On a
    connect or send failure (no route while the link is down, reset, no progress) the files
    not yet acked are retried, in order, after a backoff doubling from `backoff_min_s` to
    `backoff_max_s`.

    Example:
        sender = SatelliteSender(SenderConfig("sat1", "10.0.0.1", 7000), sorted(paths))
        sender.run(stop_event, deadline_ns=clock.monotonic_ns() + 60 * 10**9)
    """

    def __init__(self, config: SenderConfig, files: Sequence[Path], *, loops: int = 1,
                 metrics: Metrics | None = None, clock: SystemClock | None = None):
        if loops < 0:
            raise ConfigError(f"sender {config.name}: loops={loops}, expected >= 0 "
                              "(0 = repeat until stopped)")
        self.config = config
        self._files = list(files)
        self._loops = loops
        self._metrics = metrics
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._events: list[FileEvent] = []
        self._stats = _Stats()
        self._plan = self._make_plan()
        self._requeued: deque[_Item] = deque()
        self._finished = False

    @property
    def files_planned(self) -> int | None:
        """Files to deliver in total; None when looping until stopped."""
        return len(self._files) * self._loops if self._loops else None

    def _make_plan(self) -> Iterator[_Item]:
        if not self._files:
            return iter(())
        loops = itertools.count() if self._loops == 0 else range(self._loops)
        return (_Item(loop=i, path=p) for i in loops for p in self._files)

    # public results --------------------------------------------------------------------------
    def events(self) -> list[FileEvent]:
        with self._lock:
            return [FileEvent(**vars(ev)) for ev in self._events]

    def stats(self) -> dict[str, object]:
        """Counters over the whole run (also readable while it runs)."""
        with self._lock:
            s = self._stats
            delivered = [ev for ev in self._events if ev.status is FileStatus.DELIVERED]
            return {"peer": self.config.peer, "files_planned": self.files_planned,
                    "files_delivered": len(delivered),
                    "bytes_delivered": sum(ev.size_bytes for ev in delivered),
                    "files_failed": sum(ev.status is FileStatus.FAILED for ev in self._events),
                    "attempts": s.attempts, "retries": s.retries,
                    "connect_failures": s.connect_failures, "bytes_sent": s.bytes_sent,
                    "connected_s": s.connected_ns / 1e9, "finished": self._finished,
                    "errors": dict(s.errors), "last_error": s.last_error}

    # the loop --------------------------------------------------------------------------------
    def run(self, stop: threading.Event, deadline_ns: int | None = None) -> bool:
        """Sends until everything is delivered (returns True) or stop/deadline (False)."""
        backoff_s = self.config.backoff_min_s
        try:
            while True:
                self._check_stop(stop, deadline_ns)
                if not self._has_work():
                    with self._lock:
                        self._finished = True
                    return True
                sock = self._connect(deadline_ns)
                if sock is None:
                    self._wait(stop, deadline_ns, backoff_s)
                    backoff_s = min(backoff_s * 2, self.config.backoff_max_s)
                    continue
                t_connected = self._clock.monotonic_ns()
                delivered_before = self._delivered_count()
                try:
                    self._session(sock, stop, deadline_ns)
                except (OSError, TransferError, ProtocolError) as exc:
                    self._note_failure(exc)
                finally:
                    sock.close()
                    with self._lock:
                        self._stats.connected_ns += self._clock.monotonic_ns() - t_connected
                if self._delivered_count() > delivered_before:
                    backoff_s = self.config.backoff_min_s
                if self._has_work():
                    self._wait(stop, deadline_ns, backoff_s)
                    backoff_s = min(backoff_s * 2, self.config.backoff_max_s)
        except _Stopped:
            now = self._clock.stamp()
            for item in self._requeued:
                if item.event is not None:  # attempted but never acked
                    self._finish(item, FileStatus.STOPPED, "stopped before the ack", now)
            self._requeued.clear()
            return False

    def _has_work(self) -> bool:
        if self._requeued:
            return True
        nxt = next(self._plan, None)
        if nxt is None:
            return False
        self._requeued.append(nxt)
        return True

    def _next_item(self) -> _Item | None:
        if self._requeued:
            return self._requeued.popleft()
        return next(self._plan, None)

    def _delivered_count(self) -> int:
        with self._lock:
            return sum(ev.status is FileStatus.DELIVERED for ev in self._events)

    def _check_stop(self, stop: threading.Event, deadline_ns: int | None) -> None:
        if stop.is_set() or (deadline_ns is not None
                             and self._clock.monotonic_ns() >= deadline_ns):
            raise _Stopped

    def _wait(self, stop: threading.Event, deadline_ns: int | None, seconds: float) -> None:
        if deadline_ns is not None:
            seconds = min(seconds, max(0.0, (deadline_ns - self._clock.monotonic_ns()) / 1e9))
        stop.wait(seconds)
        self._check_stop(stop, deadline_ns)

    def _connect(self, deadline_ns: int | None) -> socket.socket | None:
        cfg = self.config
        timeout_s = cfg.connect_timeout_s
        if deadline_ns is not None:
            timeout_s = max(0.001, min(timeout_s,
                                       (deadline_ns - self._clock.monotonic_ns()) / 1e9))
        source = (cfg.source_ip, 0) if cfg.source_ip else None
        try:
            sock = socket.create_connection((cfg.ground_ip, cfg.ground_port), timeout=timeout_s,
                                            source_address=source)
        except OSError as exc:
            with self._lock:
                self._stats.connect_failures += 1
            self._count_metric("leo_node_connect_failures_total")
            self._note_failure(exc)
            return None
        # Nagle would hold each file's last partial segment until the receiver's delayed ACK
        # (40 ms on Linux): with window=1 that capped loopback at 27 Mbit/s.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock

    def _note_failure(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        with self._lock:
            self._stats.retries += 1
            self._stats.errors[kind] = self._stats.errors.get(kind, 0) + 1
            self._stats.last_error = f"{kind}: {exc}"
        self._count_metric("leo_node_transfer_retries_total")

    def _count_metric(self, name: str, amount: int = 1) -> None:
        if self._metrics is not None and amount:
            self._metrics.inc(name, amount, peer=self.config.peer)

    # one connection --------------------------------------------------------------------------
    def _session(self, sock: socket.socket, stop: threading.Event,
                 deadline_ns: int | None) -> None:
        """Pipelines files over one connection until all are acked; raises on any failure
        after putting every unacked file back at the front of the queue, in order."""
        inflight: deque[_Item] = deque()
        outgoing: _Outgoing | None = None
        ackbuf = bytearray()
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        last_progress_ns = self._clock.monotonic_ns()
        last_unacked = _unacked_bytes(sock)
        try:
            while True:
                self._check_stop(stop, deadline_ns)
                while outgoing is None and len(inflight) < self.config.window:
                    item = self._next_item()
                    if item is None:
                        break
                    outgoing = self._open(item)
                if outgoing is None and not inflight:
                    return
                sel.modify(sock, selectors.EVENT_READ
                           | (selectors.EVENT_WRITE if outgoing else 0))
                progressed = False
                for _, mask in sel.select(self.config.poll_s):
                    if mask & selectors.EVENT_READ:
                        data = sock.recv(CHUNK_BYTES)
                        if not data:
                            raise TransferError(f"{self.config.peer} closed the connection "
                                                f"with {len(inflight)} file(s) unacked")
                        ackbuf += data
                        progressed = True
                        self._handle_acks(ackbuf, inflight)
                    if mask & selectors.EVENT_WRITE and outgoing is not None:
                        progressed |= self._write(sock, outgoing)
                        if outgoing.done:
                            outgoing.fh.close()
                            inflight.append(outgoing.item)
                            outgoing = None
                now_ns = self._clock.monotonic_ns()
                unacked = _unacked_bytes(sock)
                if unacked is not None and last_unacked is not None and unacked < last_unacked:
                    progressed = True  # the path drains what was written: still alive
                last_unacked = unacked
                if progressed:
                    last_progress_ns = now_ns
                elif now_ns - last_progress_ns > self.config.io_timeout_s * 1e9:
                    raise TransferError(f"no progress to {self.config.peer} for "
                                        f"{self.config.io_timeout_s} s with {len(inflight)} "
                                        "file(s) unacked")
        except BaseException:
            back = list(inflight) + ([outgoing.item] if outgoing else [])
            if outgoing is not None:
                outgoing.fh.close()
            self._requeued.extendleft(reversed(back))
            raise
        finally:
            sel.close()

    def _open(self, item: _Item) -> _Outgoing | None:
        """Starts an attempt: hashes the file when needed; unreadable files fail here."""
        now = self._clock.stamp()
        try:
            if item.header is None:
                item.header = FileHeader.for_file(item.path, sender=self.config.name,
                                                  transfer_id=f"{item.loop}:{item.path.name}")
            fh = item.path.open("rb")
        except (OSError, ProtocolError) as exc:
            self._finish(item, FileStatus.FAILED, f"{type(exc).__name__}: {exc}", now)
            return None
        if item.event is None:
            item.event = FileEvent(file=item.path.name, peer=self.config.peer,
                                   transfer_id=item.header.transfer_id, status=FileStatus.STOPPED,
                                   size_bytes=item.header.size_bytes, bytes=0, attempts=0,
                                   start_ns=now.t_ns, end_ns=now.t_ns, start_utc=now.utc,
                                   end_utc=now.utc, sha256=item.header.sha256)
        item.event.attempts += 1
        item.event.size_bytes = item.header.size_bytes
        item.event.sha256 = item.header.sha256
        with self._lock:
            self._stats.attempts += 1
        self._count_metric("leo_node_transfer_attempts_total")
        head = item.header.encode()
        return _Outgoing(item=item, fh=fh, buffer=memoryview(head), header_left=len(head),
                         payload_unread=item.header.size_bytes)

    def _write(self, sock: socket.socket, out: _Outgoing) -> bool:
        """Writes what the socket takes, refilling from disk. True when bytes moved."""
        if not out.buffer and out.payload_unread:
            chunk = out.fh.read(min(CHUNK_BYTES, out.payload_unread))
            if not chunk:
                out.item.header = None  # the file shrank after hashing: rehash, resend
                out.item.changes += 1
                raise TransferError(f"{out.item.path}: file shorter than hashed, "
                                    f"{out.payload_unread} bytes missing")
            out.payload_unread -= len(chunk)
            out.buffer = memoryview(chunk)
        try:
            sent = sock.send(out.buffer)
        except BlockingIOError:
            return False
        out.buffer = out.buffer[sent:]
        header_part = min(sent, out.header_left)
        out.header_left -= header_part
        payload = sent - header_part
        if payload:
            if out.item.event is not None:
                out.item.event.bytes += payload
            with self._lock:
                self._stats.bytes_sent += payload
            self._count_metric("leo_node_bytes_sent_total", payload)
        return sent > 0

    def _handle_acks(self, ackbuf: bytearray, inflight: deque[_Item]) -> None:
        while len(ackbuf) >= PREFIX_BYTES:
            length = decode_prefix(bytes(ackbuf[:PREFIX_BYTES]), ACK_MAGIC)
            if len(ackbuf) < PREFIX_BYTES + length:
                return
            ack = Ack.from_json(decode_json(bytes(ackbuf[PREFIX_BYTES:PREFIX_BYTES + length])))
            del ackbuf[:PREFIX_BYTES + length]
            if not inflight or inflight[0].header is None:
                raise ProtocolError(f"ack for {ack.transfer_id!r} from {self.config.peer} "
                                    "with no file awaiting one")
            item = inflight[0]
            if ack.status is not AckStatus.REJECTED and ack.transfer_id != \
                    item.header.transfer_id:
                raise ProtocolError(f"ack for {ack.transfer_id!r}, expected "
                                    f"{item.header.transfer_id!r}")
            inflight.popleft()
            now = self._clock.stamp()
            if ack.status in (AckStatus.OK, AckStatus.DUPLICATE):
                self._finish(item, FileStatus.DELIVERED, "", now)
                self._count_metric("leo_node_files_delivered_total")
                self._count_metric("leo_node_bytes_delivered_total", item.header.size_bytes)
            elif ack.status is AckStatus.HASH_MISMATCH:
                item.header = None  # rehash: the file may have changed on disk
                item.changes += 1
                self._note_failure(TransferError(f"{item.path.name}: {ack.detail}"))
                if item.changes >= self.config.max_changes:
                    self._finish(item, FileStatus.FAILED, f"hash mismatch {item.changes} "
                                 f"times: {ack.detail}", now)
                else:
                    self._requeued.appendleft(item)
            else:
                self._finish(item, FileStatus.FAILED, f"rejected by {self.config.peer}: "
                             f"{ack.detail}", now)

    def _finish(self, item: _Item, status: FileStatus, error: str, stamp: Stamp) -> None:
        if item.event is None:
            item.event = FileEvent(file=item.path.name, peer=self.config.peer,
                                   transfer_id=f"{item.loop}:{item.path.name}", status=status,
                                   size_bytes=0, bytes=0, attempts=0, start_ns=stamp.t_ns,
                                   end_ns=stamp.t_ns, start_utc=stamp.utc, end_utc=stamp.utc)
        ev = item.event
        ev.status = status
        ev.error = error
        ev.end_ns = stamp.t_ns
        ev.end_utc = stamp.utc
        with self._lock:
            self._events.append(ev)
