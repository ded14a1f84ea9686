"""The node's clock: monotonic nanoseconds for durations, wall UTC for cross-node alignment.

Passed into senders, receivers and workloads (never read from a global) so tests can drive it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime


def utc_iso(dt: datetime) -> str:
    """ISO 8601 UTC with microseconds and a `Z` suffix, e.g. `2024-07-16T00:00:00.000000Z`."""
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Stamp:
    """One instant read from both clocks: `t_ns` (monotonic) and `utc` (ISO 8601 wall time)."""

    t_ns: int
    utc: str


class SystemClock:
    """`time.monotonic_ns()` plus the system wall clock in UTC."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def utc_now(self) -> str:
        return utc_iso(datetime.now(UTC))

    def stamp(self) -> Stamp:
        return Stamp(t_ns=self.monotonic_ns(), utc=self.utc_now())
