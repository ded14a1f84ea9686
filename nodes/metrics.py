"""Thread-safe counters and gauges of one node, rendered in the Prometheus text format (0.0.4).

Hand-written exposition so a node needs nothing beyond the standard library (prometheus-client
is not required on a board; the format is checked with `promtool check metrics`). The agent's
families are declared once here (`FAMILIES`); a workload declares its own with `declare(...)`
(name, type, help, labels, unit) and hands them to `Metrics(families=FAMILIES + its own)` or
`Metrics.add_family(family)`; the orchestrator's dashboards read the same declarations to
build one row per workload.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from nodes.errors import NodeError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KINDS = ("counter", "gauge")
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class Family:
    """A metric family: `kind` is `counter` or `gauge`; `labels` are the per-sample label names;
    `unit` the base unit the name ends in ("" for a count)."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""


def declare(name: str, kind: str, help: str, labels: tuple[str, ...] = (),
            unit: str = "") -> Family:
    """A validated family: Prometheus names, counters ending in `_total`, the unit in the name.

    Example: `declare("leo_dlrc_tiles_sent_total", "counter", "Tiles downlinked.", ("peer",))`.
    """
    if not _NAME.match(name):
        raise NodeError(f"metric name {name!r}, expected [a-zA-Z_:][a-zA-Z0-9_:]*")
    if kind not in KINDS:
        raise NodeError(f"metric {name}: kind {kind!r}, expected one of {', '.join(KINDS)}")
    if kind == "counter" and not name.endswith("_total"):
        raise NodeError(f"metric {name}: a counter, expected a name ending in _total")
    if unit and not name.removesuffix("_total").endswith("_" + unit):
        raise NodeError(f"metric {name}: unit {unit!r}, expected the name to end in _{unit}")
    bad = [label for label in labels if not _LABEL.match(label) or label.startswith("__")]
    if bad:
        raise NodeError(f"metric {name}: label names {bad}, expected [a-zA-Z_][a-zA-Z0-9_]*")
    if not help.strip():
        raise NodeError(f"metric {name}: empty help, expected one sentence saying what it counts")
    return Family(name, kind, help, tuple(labels), unit)


FAMILIES: tuple[Family, ...] = (
    Family("leo_node_info", "gauge", "Always 1; labels say which node and role this is.",
           ("role",)),
    Family("leo_node_uptime_seconds", "gauge", "Seconds since the node agent started.",
           unit="seconds"),
    Family("leo_node_workload_running", "gauge", "Jobs of this kind running now.",
           ("kind",)),
    Family("leo_node_bytes_sent_total", "counter",
           "Payload bytes written to data sockets, failed attempts included.", ("peer",), "bytes"),
    Family("leo_node_bytes_received_total", "counter",
           "Payload bytes read from data sockets, rejected and partial files included.",
           ("peer",), "bytes"),
    Family("leo_node_files_delivered_total", "counter",
           "Files the peer acknowledged with a verified hash (sender side).", ("peer",)),
    Family("leo_node_bytes_delivered_total", "counter",
           "Payload bytes of files the peer acknowledged (sender side).", ("peer",), "bytes"),
    Family("leo_node_files_received_total", "counter",
           "Files received with a verified hash, duplicates excluded (receiver side).", ("peer",)),
    Family("leo_node_files_rejected_total", "counter",
           "Received files not counted, by reason (receiver side).", ("peer", "reason")),
    Family("leo_node_transfer_attempts_total", "counter",
           "File send attempts on an open connection (sender side).", ("peer",)),
    Family("leo_node_transfer_retries_total", "counter",
           "Failed connects plus failed send attempts, each followed by a retry.", ("peer",)),
    Family("leo_node_connect_failures_total", "counter",
           "Connects that failed (refused, no route, timed out).", ("peer",)),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class Metrics:
    """Samples keyed by family name and label values; `const_labels` go on every sample."""

    def __init__(self, const_labels: Mapping[str, str] | None = None,
                 families: tuple[Family, ...] = FAMILIES):
        self._const = dict(const_labels or {})
        self._families = {f.name: f for f in families}
        self._values: dict[str, dict[tuple[str, ...], float]] = {f.name: {} for f in families}
        self._lock = threading.Lock()

    def add_family(self, family: Family) -> None:
        """Declare one more family (a workload's); declaring the same family again is a no-op,
        a different one under a taken name is an error."""
        with self._lock:
            known = self._families.get(family.name)
            if known is not None and known != family:
                raise NodeError(f"metric {family.name}: declared twice, differently "
                                f"({known} and {family})")
            if known is None:
                self._families[family.name] = family
                self._values[family.name] = {}

    def families(self) -> tuple[Family, ...]:
        """Every declared family, in declaration order."""
        with self._lock:
            return tuple(self._families.values())

    def _key(self, name: str, labels: Mapping[str, str]) -> tuple[str, ...]:
        family = self._families.get(name)
        if family is None:
            raise NodeError(f"metric {name!r} is not declared; declared: "
                            + ", ".join(sorted(self._families)))
        if set(labels) != set(family.labels):
            raise NodeError(f"metric {name}: labels {sorted(labels)}, expected "
                            f"{sorted(family.labels)}")
        return tuple(str(labels[k]) for k in family.labels)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add `amount` (>= 0) to a counter sample."""
        if amount < 0:
            raise NodeError(f"metric {name}: increment {amount}, expected >= 0")
        key = self._key(name, labels)
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0) + amount

    def add(self, name: str, delta: float, **labels: str) -> None:
        """Add `delta` (any sign) to a gauge sample: concurrent jobs count up and down."""
        key = self._key(name, labels)
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0) + delta

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge sample."""
        key = self._key(name, labels)
        with self._lock:
            self._values[name][key] = value

    def value(self, name: str, **labels: str) -> float:
        """Current value of one sample (0 when never touched)."""
        key = self._key(name, labels)
        with self._lock:
            return self._values[name].get(key, 0)

    def total(self, name: str) -> float:
        """Sum over every sample of a family."""
        if name not in self._families:
            raise NodeError(f"metric {name!r} is not declared; declared: "
                            + ", ".join(sorted(self._families)))
        with self._lock:
            return sum(self._values[name].values())

    def _snapshot(self) -> tuple[dict[str, Family], dict[str, dict[tuple[str, ...], float]]]:
        with self._lock:
            return (dict(self._families),
                    {name: dict(series) for name, series in self._values.items()})

    def render(self) -> str:
        """The Prometheus text exposition of every family (families without samples: header).

        Rendered by prometheus-client where it is installed (the testbed's own agents); a board
        that runs the agent with the standard library alone gets the same families from the
        built-in writer (`render_text`)."""
        families, snapshot = self._snapshot()
        try:
            from prometheus_client import CollectorRegistry, generate_latest
        except ImportError:
            return self.render_text()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_SnapshotCollector(self._const, families, snapshot))
        return generate_latest(registry).decode()

    def render_text(self) -> str:
        """The exposition written by this module alone (standard library only)."""
        families, snapshot = self._snapshot()
        lines: list[str] = []
        for name, family in families.items():
            lines.append(f"# HELP {name} {family.help}")
            lines.append(f"# TYPE {name} {family.kind}")
            series = snapshot[name]
            if not family.labels and not series:
                series = {(): 0}
            for key in sorted(series):
                pairs = list(self._const.items()) + list(zip(family.labels, key, strict=True))
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
                label_part = f"{{{label_text}}}" if label_text else ""
                lines.append(f"{name}{label_part} {_format_value(series[key])}")
        return "\n".join(lines) + "\n"


class _SnapshotCollector:
    """One scrape's samples as prometheus-client metric families."""

    def __init__(self, const: Mapping[str, str], families: Mapping[str, Family],
                 snapshot: Mapping[str, Mapping[tuple[str, ...], float]]) -> None:
        self._const = dict(const)
        self._families = families
        self._snapshot = snapshot

    def collect(self):  # noqa: ANN201 -- prometheus-client's collector protocol
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for name, family in self._families.items():
            kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
            labels = [*self._const, *family.labels]
            out = kind(name, family.help, labels=labels)
            series = self._snapshot[name]
            if not family.labels and not series:
                series = {(): 0}
            for key in sorted(series):
                out.add_metric([*self._const.values(), *key], series[key])
            yield out
