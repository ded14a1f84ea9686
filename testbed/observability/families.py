"""The metric families the orchestrator exports: one declaration per family (name, type,
labels, unit, help), read by the exporter, the dashboards and the README table.

Owns names and meanings only; values come from `testbed.observability.metrics`. Names follow
Prometheus conventions: base units (`_seconds`, `_bytes`, `_meters`, `_degrees`, `_ratio`),
counters end in `_total`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from testbed.observability.errors import ObservabilityError

TYPES = ("counter", "gauge", "histogram")
PREFIX = "leo_"


@dataclass(frozen=True)
class MetricFamily:
    """One family: `type` is counter, gauge or histogram; `unit` the base unit ("" for none)."""

    name: str
    type: str
    labels: tuple[str, ...]
    unit: str
    help: str

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ObservabilityError(f"metric {self.name}: type {self.type!r}, expected one of "
                                     f"{', '.join(TYPES)}")
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ObservabilityError(f"metric {self.name}: a counter, expected a name ending "
                                     "in _total")
        base = self.name.removesuffix("_total")
        if self.unit and not base.endswith("_" + self.unit):
            raise ObservabilityError(f"metric {self.name}: unit {self.unit!r}, expected the "
                                     f"name to end in _{self.unit} (before _total)")


def _f(name: str, type_: str, labels: Iterable[str], unit: str, help_: str) -> MetricFamily:
    return MetricFamily(PREFIX + name, type_, tuple(labels), unit, help_)


LINK = ("link", "kind", "direction")
DIRECTION = ("link", "direction")

ORCHESTRATOR_FAMILIES: tuple[MetricFamily, ...] = (
    _f("run_info", "gauge", ("scenario", "backend"), "", "Always 1 while the run plays."),
    _f("scenario_time_seconds", "gauge", (), "seconds",
       "Scenario time of the last applied instant (seconds since the scenario epoch)."),
    _f("run_wall_time_seconds", "gauge", (), "seconds",
       "Wall-clock seconds since scenario time zero on the run clock."),
    _f("run_speed_ratio", "gauge", (), "ratio", "Scenario seconds per wall second."),
    _f("satellite_latitude_degrees", "gauge", ("satellite",), "degrees",
       "Geodetic latitude (WGS84) of the satellite at the current scenario time."),
    _f("satellite_longitude_degrees", "gauge", ("satellite",), "degrees",
       "Longitude of the satellite at the current scenario time."),
    _f("satellite_altitude_meters", "gauge", ("satellite",), "meters",
       "Height above the WGS84 ellipsoid of the satellite at the current scenario time."),
    _f("ground_station_latitude_degrees", "gauge", ("station",), "degrees",
       "Latitude of the ground station."),
    _f("ground_station_longitude_degrees", "gauge", ("station",), "degrees",
       "Longitude of the ground station."),
    _f("satellite_visible", "gauge", ("satellite", "station"), "",
       "1 when the satellite is above the station's elevation mask (geometry only)."),
    _f("satellite_in_contact", "gauge", ("satellite",), "",
       "1 when the satellite has a ground link up (as status.json's in_contact)."),
    _f("ground_station_serving", "gauge", ("station", "satellite"), "",
       "1 for the satellite whose ground link to the station is up (as status.json's "
       "serving)."),
    _f("link_up", "gauge", ("link", "kind"), "", "1 while the link is up in the link book."),
    _f("link_programmed_rate_bytes_per_second", "gauge", LINK, "bytes_per_second",
       "Capacity programmed on the direction (a trace-following direction: the trace's rate "
       "over the last second); 0 while down."),
    _f("link_programmed_delay_seconds", "gauge", LINK, "seconds",
       "One-way delay programmed on the direction."),
    _f("link_programmed_loss_ratio", "gauge", LINK, "ratio",
       "Loss probability programmed on the direction (1 while down)."),
    _f("link_forwarded_bytes_total", "counter", LINK, "bytes",
       "Bytes the shaper forwarded on the direction."),
    _f("link_forwarded_packets_total", "counter", LINK, "",
       "Frames the shaper forwarded on the direction."),
    _f("link_received_packets_total", "counter", LINK, "",
       "Frames that reached the shaper on the direction."),
    _f("link_dropped_packets_total", "counter", (*LINK, "cause"), "",
       "Frames the shaper dropped on the direction, by cause (queue, loss, tx, rx_kernel)."),
    _f("event_apply_lateness_seconds", "histogram", (), "seconds",
       "How late each timeline instant was applied after its scheduled instant."),
    _f("instants_applied_total", "counter", (), "", "Timeline instants applied."),
    _f("events_applied_total", "counter", (), "", "Timeline events applied."),
    _f("route_changes_total", "counter", ("outcome",), "",
       "Topology changes submitted to routing, by outcome (installed, superseded, error)."),
    _f("route_install_seconds", "histogram", (), "seconds",
       "From a topology change's scheduled instant to its routes being in effect."),
    _f("route_generation", "gauge", (), "", "Generation of the newest submitted topology."),
    _f("node_up", "gauge", ("node", "role"), "", "0 while the node is killed by a fault."),
    _f("node_cpu_seconds_total", "counter", ("node",), "seconds",
       "CPU seconds used by the processes now in the node's cgroup (user + system)."),
    _f("node_cpu_budget_cores", "gauge", ("node",), "cores",
       "The node's CPU budget (cores of this host; absent when unlimited)."),
    _f("node_cpu_throttled_seconds_total", "counter", ("node",), "seconds",
       "Time the node's cgroup was throttled by its CPU quota."),
    _f("node_memory_bytes", "gauge", ("node",), "bytes", "Memory charged to the node's cgroup."),
    _f("node_memory_budget_bytes", "gauge", ("node",), "bytes",
       "The node's memory limit (absent when unlimited)."),
    _f("faults_total", "counter", ("fault",), "", "Faults and recovery steps recorded."),
    _f("fault_unreachable_seconds_total", "counter", ("fault",), "seconds",
       "Seconds links or nodes were unreachable because of faults that are over."),
    _f("fault_lost_packets_total", "counter", ("fault", "cause"), "",
       "Frames the shaper dropped on a fault's directions while it lasted, by cause."),
)


def family(name: str) -> MetricFamily:
    """The declared family `name` (raises naming the valid ones)."""
    for f in ORCHESTRATOR_FAMILIES:
        if f.name == name:
            return f
    raise ObservabilityError(f"unknown metric family {name!r}; declared: "
                             + ", ".join(f.name for f in ORCHESTRATOR_FAMILIES))


def markdown_table(families: Iterable[MetricFamily]) -> str:
    """The README table of `families` (what the README test compares)."""
    rows = ["| name | type | labels | unit | help |", "|---|---|---|---|---|"]
    for f in families:
        labels = ", ".join(f.labels) or "-"
        rows.append(f"| `{f.name}` | {f.type} | {labels} | {f.unit or '-'} | {f.help} |")
    return "\n".join(rows)
