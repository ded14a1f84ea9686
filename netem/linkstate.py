"""The state of one emulated link direction: what every shaper applies and every trace yields.

Owns the value model only (validation, diffing). Applying it is the shapers' job.
Units are in the field names: bits per second, microseconds, ratios in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from netem.errors import LinkStateError


@dataclass(frozen=True, slots=True)
class GilbertElliott:
    """Burst loss: a two-state Markov chain evaluated per packet.

    p_enter_bad: probability of going good->bad on a packet; p_exit_bad: bad->good;
    loss_in_bad / loss_in_good: drop probability while in each state.
    """

    p_enter_bad: float
    p_exit_bad: float
    loss_in_bad: float = 1.0
    loss_in_good: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not 0.0 <= v <= 1.0:
                raise LinkStateError(f"burst loss {f.name}={v}, expected a ratio in [0, 1]")

    @property
    def mean_loss_ratio(self) -> float:
        """Stationary loss probability of the chain."""
        total = self.p_enter_bad + self.p_exit_bad
        if total == 0.0:
            return self.loss_in_good
        pi_bad = self.p_enter_bad / total
        return pi_bad * self.loss_in_bad + (1.0 - pi_bad) * self.loss_in_good


@dataclass(frozen=True, slots=True)
class LinkState:
    """One direction of a link at one instant.

    rate_bps: capacity (0 means the link carries nothing, e.g. down);
    delay_us: one-way delay; jitter_us: its standard deviation;
    loss_ratio: independent random loss; burst_loss: optional Gilbert-Elliott model
    (applied on top of loss_ratio); queue_limit_packets: drop-tail queue length.

    >>> LinkState(rate_bps=100_000_000, delay_us=20_000).diff(LinkState(rate_bps=50_000_000,
    ...     delay_us=20_000))
    {'rate_bps': 50000000}
    """

    rate_bps: int
    delay_us: int = 0
    jitter_us: int = 0
    loss_ratio: float = 0.0
    burst_loss: GilbertElliott | None = None
    queue_limit_packets: int = 1000
    name: str = "link"

    def __post_init__(self) -> None:
        checks: list[tuple[str, Any, bool, str]] = [
            ("rate_bps", self.rate_bps, self.rate_bps >= 0, ">= 0"),
            ("delay_us", self.delay_us, self.delay_us >= 0, ">= 0"),
            ("jitter_us", self.jitter_us, self.jitter_us >= 0, ">= 0"),
            ("loss_ratio", self.loss_ratio, 0.0 <= self.loss_ratio <= 1.0, "a ratio in [0, 1]"),
            (
                "queue_limit_packets",
                self.queue_limit_packets,
                self.queue_limit_packets >= 1,
                ">= 1",
            ),
        ]
        for field_name, value, ok, expected in checks:
            if not ok:
                raise LinkStateError(f"link {self.name}: {field_name}={value}, expected {expected}")

    def diff(self, new: LinkState) -> dict[str, Any]:
        """Fields whose value differs in `new` (what a shaper must change), name excluded."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "name":
                continue
            if getattr(self, f.name) != getattr(new, f.name):
                out[f.name] = getattr(new, f.name)
        return out

    def with_changes(self, **changes: Any) -> LinkState:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
