"""Per-file transfer records shared by sender and receiver (what results and summaries read)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class FileStatus(StrEnum):
    """How one file ended. Sender: delivered, failed, stopped. Receiver: the rest."""

    DELIVERED = "delivered"          # sender: acked ok/duplicate -> counted
    FAILED = "failed"                # sender: unreadable file, rejected, or changed too often
    STOPPED = "stopped"              # sender: stop event or deadline before the ack
    RECEIVED = "received"            # receiver: hash verified, counted
    DUPLICATE = "duplicate"          # receiver: verified but already counted (lost ack)
    HASH_MISMATCH = "hash-mismatch"  # receiver: bytes do not match the header's sha256
    INCOMPLETE = "incomplete"        # receiver: connection ended before size_bytes arrived
    REJECTED = "rejected"            # receiver: malformed header or over the size limit


@dataclass
class FileEvent:
    """One file's story: times on both clocks, payload bytes moved, attempts, final status.

    Sender: one event per planned file (all its attempts); `bytes` counts payload written in every
    attempt. Receiver: one event per received copy; `attempts` counts copies of this transfer_id.
    """

    file: str
    peer: str
    transfer_id: str
    status: FileStatus
    size_bytes: int
    bytes: int
    attempts: int
    start_ns: int
    end_ns: int
    start_utc: str
    end_utc: str
    sha256: str = ""
    error: str = ""

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["status"] = self.status.value
        return out
