"""Link states of the running network: what each timeline event means for each direction.

Every link of the plan has two directions, keyed `<link>/ab` (a -> b) and `<link>/ba`, where
a and b are the plan's ends. A link that is down carries nothing (rate 0). ISLs take their rate
and delay from the timeline. A ground link's downlink (satellite -> station) follows the
scenario's trace (capacity, and delay when `delay: trace`), aligned to the run's start, so every
satellite serving the station sees the same recorded link; the uplink uses constant values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netem.linkstate import LinkState
from netem.shapers.userspace_program import TraceProgram
from netem.traces import read_trace
from testbed.fabric.addressing import AddressPlan, LinkAddress
from testbed.scenario.model import LinkDirectionSpec, Scenario
from testbed.timeline.model import LinkEvent

DOWN_RATE_BPS = 0


def direction_keys(link: LinkAddress) -> tuple[str, str]:
    return f"{link.name}/ab", f"{link.name}/ba"


@dataclass
class LinkRecord:
    """Current values of one link (both directions share delay; ground links differ in rate)."""

    link: LinkAddress
    kind: str = "isl"
    up: bool = False
    delay_us: int = 0
    rate_bps: int | None = None
    distance_km: float | None = None
    ground_station: str | None = None  # for ground links: which end is the station


def trace_program(spec: LinkDirectionSpec, name: str) -> TraceProgram | None:
    """The program a ground-link direction follows, or None for constant values."""
    if spec.trace is None and spec.delay_trace is None:
        return None
    capacity = read_trace(spec.trace, spec.trace_format).down if spec.trace else None
    delay = None
    if spec.delay == "trace":
        delay_source = read_trace(spec.delay_trace) if spec.delay_trace else None
        delay = delay_source.down if delay_source is not None else capacity
    program = TraceProgram.from_series(capacity, delay=delay, name=name)
    if spec.delay != "trace":  # propagation delay comes from the timeline
        program = TraceProgram(program.opportunities_ns, program.period_ns, None,
                               program.loss_ratio, name)
    return program


@dataclass
class LinkBook:
    """The state of every link; turns timeline events into per-direction LinkStates."""

    scenario: Scenario
    plan: AddressPlan
    stations: set[str]
    records: dict[str, LinkRecord] = field(default_factory=dict)
    isl_delay: bool = True
    """False with `links.isl.delay: none`: ISL states carry rate only (routing still sees the
    geometric delay in the records)."""

    def __post_init__(self) -> None:
        for link in self.plan.links:
            ends = {link.a.node, link.b.node}
            station = next(iter(ends & self.stations), None)
            self.records[link.name] = LinkRecord(link, "ground" if station else "isl",
                                                 ground_station=station)

    def downlink_key(self, record: LinkRecord) -> str:
        """Direction key of satellite -> station on a ground link."""
        ab, ba = direction_keys(record.link)
        return ba if record.link.a.node == record.ground_station else ab

    def _direction_states(self, r: LinkRecord) -> dict[str, LinkState]:
        ab, ba = direction_keys(r.link)
        if not r.up:
            # loss 1: frames reaching a down link are dropped and counted (dropped_loss), not
            # held at rate 0 and sent stale when the link comes back (the kernel shaper drops
            # them with a zero-length queue)
            down = LinkState(rate_bps=DOWN_RATE_BPS, delay_us=0, loss_ratio=1.0,
                             name=r.link.name)
            return {ab: down, ba: down}
        if r.kind == "isl":
            rate = int(r.rate_bps or 0)
            state = LinkState(rate_bps=rate, delay_us=r.delay_us if self.isl_delay else 0,
                              name=r.link.name)
            return {ab: state, ba: state}
        g = self.scenario.links.ground
        down_key = self.downlink_key(r)
        up_key = ba if down_key == ab else ab
        out = {}
        for key, spec in ((down_key, g.downlink), (up_key, g.uplink)):
            rate_mbps = spec.rate_mbps if spec.rate_mbps is not None else 1000.0  # trace rules
            out[key] = LinkState(rate_bps=int(rate_mbps * 1e6), delay_us=r.delay_us,
                                 loss_ratio=spec.loss_ratio, name=r.link.name)
        return out

    def initial_states(self) -> dict[str, LinkState]:
        out: dict[str, LinkState] = {}
        for r in self.records.values():
            out.update(self._direction_states(r))
        return out

    def apply(self, event: LinkEvent) -> tuple[dict[str, LinkState], bool]:
        """Update the book with one event; return the new direction states and whether the
        topology (up/down) changed."""
        r = self.records.get(event.link)
        if r is None:  # handover markers and links outside the plan
            return {}, False
        topology_changed = False
        if event.kind == "up":
            r.up, topology_changed = True, True
        elif event.kind == "down":
            r.up, topology_changed = False, True
        if event.delay_us is not None:
            r.delay_us = event.delay_us
        if event.rate_bps is not None:
            r.rate_bps = event.rate_bps
        if event.distance_km is not None:
            r.distance_km = event.distance_km
        return self._direction_states(r), topology_changed

    def states(self, link_name: str) -> dict[str, LinkState]:
        """The current direction states of one link."""
        return self._direction_states(self.records[link_name])

    def set_up(self, link_name: str, up: bool) -> dict[str, LinkState]:
        """Fault injection: force a link up or down."""
        r = self.records[link_name]
        r.up = up
        return self._direction_states(r)
