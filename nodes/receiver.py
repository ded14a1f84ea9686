"""The ground receiver: a TCP server on the data IP taking files from many senders at once.

Owns the listening socket, one thread per connection, hash verification, optional storage and
the receiver-side events and counters. Knows nothing about who routes the packets.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nodes.clock import Stamp, SystemClock
from nodes.errors import ConfigError, ProtocolError, TransferError
from nodes.events import FileEvent, FileStatus
from nodes.metrics import Metrics
from nodes.protocol import CHUNK_BYTES, FILE_MAGIC, Ack, AckStatus, FileHeader, read_frame

_ACCEPT_POLL_S = 0.2

_SUMMARY_KEY = {FileStatus.RECEIVED: "files_received", FileStatus.DUPLICATE: "duplicates",
                FileStatus.HASH_MISMATCH: "hash_mismatches", FileStatus.INCOMPLETE: "incomplete",
                FileStatus.REJECTED: "rejected"}


@dataclass
class SenderTally:
    """What one sender got counted (verified, first copies) and what was not, by reason."""

    files_received: int = 0
    bytes_received: int = 0
    duplicates: int = 0
    hash_mismatches: int = 0
    incomplete: int = 0
    rejected: int = 0
    first_start_utc: str = ""
    last_end_utc: str = ""


class GroundReceiver:
    """Accepts framed files on `host:port` (port 0 picks one; see `address` after `start`).

    `store_dir`: verified files go to `store_dir/<sender>/<file>` (written under a temporary
    name, renamed only once the hash matches); None only counts them. `idle_timeout_s`: a
    connection silent this long is closed (a partial file on it is recorded as incomplete).

    Example:
        with GroundReceiver("127.0.0.1", 0) as rx:
            host, port = rx.address
    """

    def __init__(self, host: str, port: int, *, store_dir: Path | None = None,
                 max_file_bytes: int = 1 << 30, idle_timeout_s: float = 30.0,
                 metrics: Metrics | None = None, clock: SystemClock | None = None):
        if not 0 <= port <= 65535:
            raise ConfigError(f"receiver port={port}: expected 0..65535")
        if max_file_bytes < 0:
            raise ConfigError(f"receiver max_file_bytes={max_file_bytes}: expected >= 0")
        if idle_timeout_s <= 0:
            raise ConfigError(f"receiver idle_timeout_s={idle_timeout_s}: expected > 0")
        self._bind = (host, port)
        self._store_dir = store_dir
        self._max_file_bytes = max_file_bytes
        self._idle_timeout_s = idle_timeout_s
        self._metrics = metrics
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._events: list[FileEvent] = []
        self._counted: set[tuple[str, str]] = set()   # (sender, transfer_id) counted once
        self._copies: dict[tuple[str, str], int] = {}  # (sender, transfer_id) -> copies seen

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        """Binds and starts accepting; returns the bound (host, port)."""
        if self._listener is not None:
            raise TransferError(f"receiver {self._bind[0]}:{self._bind[1]}: already started")
        try:
            listener = socket.create_server(self._bind, backlog=128)
        except OSError as exc:
            raise TransferError(f"receiver: cannot listen on {self._bind[0]}:{self._bind[1]}: "
                                f"{exc.strerror or exc}") from exc
        listener.settimeout(_ACCEPT_POLL_S)
        self._listener = listener
        host, port = listener.getsockname()[:2]
        self._address = (host, port)
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(listener,),
                                               name="rx-accept", daemon=True)
        self._accept_thread.start()
        return self.address

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); TransferError before `start`."""
        if self._address is None:
            raise TransferError("receiver: not started, no address yet")
        return self._address

    @property
    def started(self) -> bool:
        return self._address is not None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stops accepting and cuts open connections (a partial file on them: incomplete)."""
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout_s)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns = dict(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the peer closed it already: nothing left to cut
        for thread in conns.values():
            thread.join(timeout_s)
        alive = [t.name for t in conns.values() if t.is_alive()]
        if alive:
            raise TransferError(f"receiver: connection threads alive {timeout_s} s after stop: "
                                f"{alive}")

    def __enter__(self) -> GroundReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # results ---------------------------------------------------------------------------------
    def events(self) -> list[FileEvent]:
        with self._lock:
            return list(self._events)

    def tallies(self) -> dict[str, SenderTally]:
        """Per sender name (or remote address when the header was unreadable)."""
        per: dict[str, SenderTally] = {}
        for ev in self.events():
            tally = per.setdefault(ev.peer, SenderTally(first_start_utc=ev.start_utc))
            tally.first_start_utc = min(tally.first_start_utc, ev.start_utc)
            tally.last_end_utc = max(tally.last_end_utc, ev.end_utc)
            key = _SUMMARY_KEY[ev.status]
            setattr(tally, key, getattr(tally, key) + 1)
            if ev.status is FileStatus.RECEIVED:
                tally.bytes_received += ev.size_bytes
        return per

    # serving ---------------------------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                conn, addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed by stop()
            conn.settimeout(self._idle_timeout_s)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # acks leave at once
            remote = f"{addr[0]}:{addr[1]}"
            thread = threading.Thread(target=self._serve, args=(conn, remote),
                                      name=f"rx-{remote}", daemon=True)
            with self._lock:
                self._conns[conn] = thread
            thread.start()

    def _serve(self, conn: socket.socket, remote: str) -> None:
        try:
            self.serve_connection(conn, remote)
        finally:
            conn.close()
            with self._lock:
                self._conns.pop(conn, None)

    def serve_connection(self, conn: socket.socket, remote: str) -> None:
        """Reads files until EOF, stop or error, acking each; any connected stream socket works
        (tests hand it one end of a socketpair)."""
        while not self._stopping.is_set():
            t0 = self._clock.stamp()
            header: FileHeader | None = None
            try:
                obj = read_frame(conn, FILE_MAGIC)
                if obj is None:
                    return  # clean close between files
                header = FileHeader.from_json(obj)
                if header.size_bytes > self._max_file_bytes:
                    raise ProtocolError(f"file {header.file!r}: size_bytes={header.size_bytes}, "
                                        f"expected at most {self._max_file_bytes}")
            except ProtocolError as exc:
                self._reject(conn, remote, header, t0, str(exc))
                return  # the byte stream cannot be trusted any more
            except OSError:
                return  # idle timeout or reset between files: nothing was in progress
            if not self._receive_body(conn, header, t0):
                return

    def _reject(self, conn: socket.socket, remote: str, header: FileHeader | None, t0: Stamp,
                error: str) -> None:
        end = self._clock.stamp()
        event = FileEvent(file=header.file if header else "",
                          peer=header.sender if header else remote,
                          transfer_id=header.transfer_id if header else "",
                          status=FileStatus.REJECTED,
                          size_bytes=header.size_bytes if header else 0, bytes=0, attempts=1,
                          start_ns=t0.t_ns, end_ns=end.t_ns, start_utc=t0.utc, end_utc=end.utc,
                          sha256=header.sha256 if header else "", error=error)
        self._record(event, "rejected")
        _send_ack(conn, Ack(AckStatus.REJECTED, event.transfer_id, 0, error))

    def _receive_body(self, conn: socket.socket, header: FileHeader, t0: Stamp) -> bool:
        """Reads, hashes, stores and acks one file; False when the connection must end."""
        key = (header.sender, header.transfer_id)
        with self._lock:
            self._copies[key] = copies = self._copies.get(key, 0) + 1
        digest = hashlib.sha256()
        got = 0
        error = ""
        tmp_path: Path | None = None
        out: IO[bytes] | None = None
        try:
            if self._store_dir is not None:
                folder = self._store_dir / header.sender
                folder.mkdir(parents=True, exist_ok=True)
                tmp_path = folder / f".{header.file}.{uuid.uuid4().hex[:8]}.partial"
                out = tmp_path.open("wb")
            while got < header.size_bytes:
                if self._stopping.is_set():
                    error = f"receiver stopped after {got} of {header.size_bytes} bytes"
                    break
                try:
                    chunk = conn.recv(min(CHUNK_BYTES, header.size_bytes - got))
                except OSError as exc:
                    error = f"receive failed after {got} of {header.size_bytes} bytes: {exc}"
                    break
                if not chunk:
                    error = f"connection closed after {got} of {header.size_bytes} bytes"
                    break
                digest.update(chunk)
                got += len(chunk)
                if self._metrics is not None:
                    self._metrics.inc("leo_node_bytes_received_total", len(chunk),
                                      peer=header.sender)
                if out is not None:
                    out.write(chunk)
            if out is not None:
                out.close()
                out = None
            end = self._clock.stamp()
            fields = dict(file=header.file, peer=header.sender, transfer_id=header.transfer_id,
                          size_bytes=header.size_bytes, bytes=got, attempts=copies,
                          start_ns=t0.t_ns, end_ns=end.t_ns, start_utc=t0.utc, end_utc=end.utc,
                          sha256=header.sha256)
            if error:
                self._record(FileEvent(status=FileStatus.INCOMPLETE, error=error, **fields),
                             "incomplete")
                return False
            if digest.hexdigest() != header.sha256:
                detail = f"sha256 {digest.hexdigest()}, expected {header.sha256}"
                self._record(FileEvent(status=FileStatus.HASH_MISMATCH, error=detail, **fields),
                             "hash-mismatch")
                if tmp_path is not None:  # gone before the sender hears about it
                    tmp_path.unlink(missing_ok=True)
                    tmp_path = None
                _send_ack(conn, Ack(AckStatus.HASH_MISMATCH, header.transfer_id, got, detail))
                return True
            with self._lock:
                first = key not in self._counted
                self._counted.add(key)
            if first and tmp_path is not None:
                os.replace(tmp_path, tmp_path.parent / header.file)
                tmp_path = None
            if first:
                self._record(FileEvent(status=FileStatus.RECEIVED, **fields), None)
                if self._metrics is not None:
                    self._metrics.inc("leo_node_files_received_total", peer=header.sender)
            else:
                self._record(FileEvent(status=FileStatus.DUPLICATE, **fields), "duplicate")
            _send_ack(conn, Ack(AckStatus.OK if first else AckStatus.DUPLICATE,
                                header.transfer_id, got))
            return True
        finally:
            if out is not None:
                out.close()
            if tmp_path is not None:
                tmp_path.unlink(missing_ok=True)

    def _record(self, event: FileEvent, reject_reason: str | None) -> None:
        with self._lock:
            self._events.append(event)
        if self._metrics is not None and reject_reason is not None:
            self._metrics.inc("leo_node_files_rejected_total", peer=event.peer,
                              reason=reject_reason)


def _send_ack(conn: socket.socket, ack: Ack) -> None:
    try:
        conn.sendall(ack.encode())
    except OSError:
        pass  # the sender is gone; it resends whatever it did not see acked
