"""The orchestrator's metrics exporter: a run observer that serves the run's numbers to
Prometheus (prometheus-client, its own registry, one HTTP endpoint).

Owns turning the run's live objects (link book, shaper counters, route pusher, node cgroups,
fault records, the clock's instants) into the families of `families.ORCHESTRATOR_FAMILIES`.
Cheap on the clock's thread: `on_instant` only appends to a deque; one sampler thread (about
once a second) reads everything else, swaps in a new snapshot and renders it once with
prometheus-client's `generate_latest`; a scrape only sends those bytes (rendering 48,000
samples of 1,000 nodes takes ~0.7 s here: on the scrape path it would hit a 1 s scrape timeout).
It never changes the network.

Example:
    exporter = OrchestratorExporter.for_run(prep)          # not started yet
    held = hold(prep, observers=[exporter])                # on_up starts it, on_end stops it
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from netem.shapers.userspace_program import OPPORTUNITY_BYTES
from testbed.lifecycle.clock import AppliedInstant
from testbed.lifecycle.live_view import base_status
from testbed.lifecycle.observers import RunObserver
from testbed.observability.errors import ObservabilityError
from testbed.observability.families import ORCHESTRATOR_FAMILIES, MetricFamily, family
from testbed.observability.sampling import PositionSampler, ProgramRate, node_usage

LATENESS_BUCKETS_S = (50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3,
                      100e-3, 1.0)
ROUTE_INSTALL_BUCKETS_S = (5e-3, 10e-3, 20e-3, 50e-3, 100e-3, 200e-3, 500e-3, 1.0, 2.0, 5.0,
                           10.0)
DROP_CAUSES = {"dropped_queue": "queue", "dropped_loss": "loss", "dropped_tx": "tx",
               "rx_kernel_drops": "rx_kernel"}

Labels = tuple[str, ...]
Samples = dict[str, list[tuple[Labels, float]]]


class FixedHistogram:
    """Cumulative bucket counts and a sum, fed from one thread, read as a copy by scrapes."""

    def __init__(self, buckets_s: Sequence[float]) -> None:
        self.bounds = np.array(buckets_s, dtype=np.float64)
        self.counts = np.zeros(len(buckets_s) + 1, np.int64)  # last: above every bound
        self.sum_s = 0.0

    def observe_many(self, values_s: Sequence[float]) -> None:
        if not len(values_s):
            return
        v = np.asarray(values_s, dtype=np.float64)
        self.counts += np.bincount(np.searchsorted(self.bounds, v, side="left"),
                                   minlength=len(self.counts))
        self.sum_s += float(v.sum())

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = np.cumsum(self.counts)
        out = [(repr(float(b)), float(c)) for b, c in zip(self.bounds, cumulative[:-1],
                                                           strict=True)]
        return out + [("+Inf", float(cumulative[-1]))]


@dataclass
class _Snapshot:
    """What one sampling pass saw; scrapes read the newest one whole."""

    samples: Samples = field(default_factory=dict)
    histograms: dict[str, tuple[list[tuple[str, float]], float]] = field(default_factory=dict)


class _SnapshotCollector(Collector):
    """Yields every declared family from the exporter's newest snapshot (a scrape computes
    nothing but the exposition)."""

    def __init__(self, exporter: OrchestratorExporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        snap = self.exporter.snapshot
        for f in ORCHESTRATOR_FAMILIES:
            base = f.name.removesuffix("_total")
            if f.type == "histogram":
                m = HistogramMetricFamily(base, f.help, labels=f.labels, unit="")
                if f.name in snap.histograms:
                    buckets, total = snap.histograms[f.name]
                    m.add_metric([], buckets, total)
                yield m
                continue
            cls = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
            m = cls(base, f.help, labels=f.labels)
            for labels, value in snap.samples.get(f.name, ()):
                m.add_metric(list(labels), value)
            yield m


class _ExpositionHandler(BaseHTTPRequestHandler):
    """GET /metrics: the exporter's last rendered exposition; anything else: 404."""

    exporter: OrchestratorExporter

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404, "only /metrics here")
            return
        body = self.exporter.exposition()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        return  # one line per scrape would flood the run's log


class OrchestratorExporter(RunObserver):
    """Serves the run's metrics at http://host:port/metrics from `on_up` to `on_end`.

    `positions`: where satellites are (None: no position families). `port=0` picks a free
    port (read `.port` after `on_up`, or call `start()` first). `linger_s`: how long `on_end`
    keeps serving after the last sample, so a 1 s scrape sees the final values.
    """

    def __init__(self, *, scenario_name: str, backend: str, speed: float,
                 positions: PositionSampler | None = None, host: str = "127.0.0.1",
                 port: int = 0, period_s: float = 1.0, linger_s: float = 1.5,
                 satellite_names: Sequence[str] = (), station_names: Sequence[str] = (),
                 now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        if not period_s > 0:
            raise ObservabilityError(f"exporter period_s={period_s}, expected > 0")
        self.scenario_name = scenario_name
        self.backend = backend
        self.speed = speed
        self.positions = positions
        self.host = host
        self.port = port
        self.period_s = period_s
        self.linger_s = linger_s
        self.now_ns = now_ns
        self.satellite_names = list(satellite_names)
        self.station_names = list(station_names)
        self.snapshot = _Snapshot()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_SnapshotCollector(self))
        self.net: Any = None
        self.samples_taken = 0
        self.sample_errors: list[str] = []
        self._instants: collections.deque[AppliedInstant] = collections.deque()
        self._faults: list[dict[str, Any]] = []
        self._faults_lock = threading.Lock()
        self._lateness = FixedHistogram(LATENESS_BUCKETS_S)
        self._install = FixedHistogram(ROUTE_INSTALL_BUCKETS_S)
        self._instant_count = 0
        self._event_count = 0
        self._last_instant: AppliedInstant | None = None
        self._route_cursor = 0
        self._route_outcomes: dict[str, int] = {"installed": 0, "superseded": 0, "error": 0}
        self._rates: dict[int, ProgramRate] = {}
        self._server: Any = None
        self._exposition: bytes | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._sample_lock = threading.Lock()

    @classmethod
    def for_run(cls, prep: Any, **kwargs: Any) -> OrchestratorExporter:
        """An exporter for a prepared run (`testbed.lifecycle.session.Prepared`): positions
        of the scenario's satellites from the orbit engine, in the timeline's node order."""
        from testbed.constellation import ground_station, resolve_constellation

        scenario = prep.scenario
        sats = resolve_constellation(scenario).satellites
        stations = [ground_station(g) for g in scenario.ground_stations]
        sampler = PositionSampler(sats, stations, scenario.epoch)
        names = [n.name for n in prep.timeline.nodes if n.kind == "satellite"]
        if len(names) != len(sats):
            raise ObservabilityError(f"exporter for {scenario.name}: {len(sats)} satellites "
                                     f"resolved, expected the timeline's {len(names)}")
        return cls(scenario_name=scenario.name, backend=scenario.backend.kind,
                   speed=scenario.speed, positions=sampler, satellite_names=names,
                   station_names=[g.name for g in scenario.ground_stations], **kwargs)

    # --- serving --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def start(self) -> None:
        """Start the HTTP endpoint (idempotent); the sampler starts with `on_up`."""
        if self._server is not None:
            return
        handler = type("Handler", (_ExpositionHandler,), {"exporter": self})
        try:
            self._server = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            raise ObservabilityError(f"metrics endpoint {self.host}:{self.port}: {exc}; "
                                     "expected a free port") from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, name="metrics-http",
                         daemon=True).start()

    def exposition(self) -> bytes:
        """The text exposition of the newest snapshot (rendered by `sample`)."""
        if self._exposition is None:
            self.sample()
        assert self._exposition is not None  # set by sample()
        return self._exposition

    def close(self) -> None:
        """Stop sampling and serving (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- observer hooks -------------------------------------------------------------------

    def on_up(self, net: Any) -> None:
        self.net = net
        self.start()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="metrics-sampler", daemon=True)
        self._thread.start()

    def on_instant(self, rec: AppliedInstant) -> None:
        self._instants.append(rec)  # deque.append is atomic: the sampler drains it

    def on_fault(self, record: dict[str, Any]) -> None:
        with self._faults_lock:
            self._faults.append(record)  # filled in place later (`lost`): read at each sample

    def on_end(self, held: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        self.sample()
        if self.linger_s > 0:
            time.sleep(self.linger_s)
        self.close()

    def _loop(self) -> None:
        next_s = time.monotonic() + self.period_s
        while not self._stop.wait(max(0.0, next_s - time.monotonic())):
            next_s = max(next_s + self.period_s, time.monotonic())  # fixed rate, no backlog
            try:
                self.sample()
            except (OSError, ValueError, RuntimeError, KeyError, ObservabilityError) as exc:
                self.sample_errors.append(f"{type(exc).__name__}: {exc}")

    # --- sampling (the sampler's thread) --------------------------------------------------

    def sample(self) -> None:
        """Read every source once and publish a new snapshot."""
        with self._sample_lock:
            samples: Samples = collections.defaultdict(list)
            self._sample_clock(samples)
            net = self.net
            if net is not None and getattr(net, "book", None) is not None:
                self._sample_links(net, samples)
                self._sample_routes(net, samples)
                self._sample_nodes(net, samples)
            self._sample_positions(samples)
            self._sample_faults(samples)
            histograms = {
                family("leo_event_apply_lateness_seconds").name:
                    (self._lateness.buckets(), self._lateness.sum_s),
                family("leo_route_install_seconds").name:
                    (self._install.buckets(), self._install.sum_s),
            }
            self.snapshot = _Snapshot(dict(samples), histograms)
            self._exposition = generate_latest(self.registry)
            self.samples_taken += 1

    def _sample_clock(self, samples: Samples) -> None:
        drained: list[AppliedInstant] = []
        while self._instants:
            drained.append(self._instants.popleft())
        if drained:
            self._lateness.observe_many([r.lateness_ns / 1e9 for r in drained])
            self._instant_count += len(drained)
            self._event_count += sum(r.events for r in drained)
            self._last_instant = drained[-1]
        samples["leo_run_info"].append(((self.scenario_name, self.backend), 1.0))
        samples["leo_run_speed_ratio"].append(((), float(self.speed)))
        samples["leo_instants_applied_total"].append(((), float(self._instant_count)))
        samples["leo_events_applied_total"].append(((), float(self._event_count)))
        start_ns = getattr(self.net, "start_ns", 0) if self.net is not None else 0
        if start_ns:
            wall_s = max(0.0, (self.now_ns() - start_ns) / 1e9)
            samples["leo_run_wall_time_seconds"].append(((), wall_s))
        scenario_s = self.scenario_t_s()
        if scenario_s is not None:
            samples["leo_scenario_time_seconds"].append(((), scenario_s))

    def scenario_t_s(self) -> float | None:
        """Scenario time now: from the run clock's start and speed (between instants too),
        else the last applied instant's."""
        start_ns = getattr(self.net, "start_ns", 0) if self.net is not None else 0
        if start_ns:
            return max(0.0, (self.now_ns() - start_ns) / 1e9 * self.speed)
        if self._last_instant is not None:
            return self._last_instant.scenario_t_ns / 1e9
        return None

    def _sample_positions(self, samples: Samples) -> None:
        if self.positions is None:
            return
        t_s = self.scenario_t_s() or 0.0
        pos = self.positions.at(int(t_s * 1e9))
        names = self.satellite_names or [s.name for s in self.positions.satellites]
        stations = self.station_names or [g.name for g in self.positions.stations]
        for i, sat in enumerate(names):
            samples["leo_satellite_latitude_degrees"].append(((sat,), float(pos.lat_deg[i])))
            samples["leo_satellite_longitude_degrees"].append(((sat,), float(pos.lon_deg[i])))
            samples["leo_satellite_altitude_meters"].append(((sat,), float(pos.alt_m[i])))
            for j, gs in enumerate(stations):
                samples["leo_satellite_visible"].append(((sat, gs), float(pos.visible[i, j])))
        for gs, station in zip(stations, self.positions.stations, strict=True):
            samples["leo_ground_station_latitude_degrees"].append(((gs,), station.lat_deg))
            samples["leo_ground_station_longitude_degrees"].append(((gs,), station.lon_deg))

    def _program_rate(self, program: Any) -> ProgramRate | None:
        if program is None or program.opportunities_ns is None:
            return None
        key = id(program)
        if key not in self._rates:
            self._rates[key] = ProgramRate(program.opportunities_ns, program.period_ns,
                                           OPPORTUNITY_BYTES)
        return self._rates[key]

    def _sample_links(self, net: Any, samples: Samples) -> None:
        from testbed.lifecycle.links import direction_keys

        with net.lock:  # a copy of the book's values: microseconds under the clock's lock
            records = [(name, r.kind, r.up, r.link, r.ground_station)
                       for name, r in net.book.records.items()]
            states = {name: net.book.states(name) for name, *_ in records}
            following = set(net.following)
            status = base_status(net.book.records)
        counters = net.counters() if getattr(net, "shaper", None) is not None else {}
        now_ns = self.now_ns()
        for gs, sat in status["serving"].items():
            if sat is not None:
                samples["leo_ground_station_serving"].append(((gs, sat), 1.0))
        in_contact = set(status["in_contact"])
        for sat in self.satellite_names:
            samples["leo_satellite_in_contact"].append(((sat,), float(sat in in_contact)))
        for name, kind, up, link, _station in records:
            samples["leo_link_up"].append(((name, kind), float(up)))
            ab, ba = direction_keys(link)
            for key, direction in ((ab, f"{link.a.node}->{link.b.node}"),
                                   (ba, f"{link.b.node}->{link.a.node}")):
                labels = (name, kind, direction)
                state = states[name][key]
                rate_bps = float(state.rate_bps)
                rate = self._program_rate(net.programs.get(key)) if key in following else None
                if rate is not None and up:
                    rate_bps = rate.rate_bps(now_ns - net.start_ns)
                samples["leo_link_programmed_rate_bytes_per_second"].append(
                    (labels, rate_bps / 8))
                samples["leo_link_programmed_delay_seconds"].append(
                    (labels, state.delay_us / 1e6))
                samples["leo_link_programmed_loss_ratio"].append(
                    (labels, float(state.loss_ratio)))
                c = counters.get(key)
                if c is None:
                    continue
                samples["leo_link_forwarded_bytes_total"].append(
                    (labels, float(c.get("forwarded_bytes", 0))))
                samples["leo_link_forwarded_packets_total"].append(
                    (labels, float(c.get("forwarded_packets", 0))))
                samples["leo_link_received_packets_total"].append(
                    (labels, float(c.get("received_packets", 0))))
                for counter_key, cause in DROP_CAUSES.items():
                    if counter_key in c:
                        samples["leo_link_dropped_packets_total"].append(
                            ((*labels, cause), float(c[counter_key])))

    def _sample_routes(self, net: Any, samples: Samples) -> None:
        samples["leo_route_generation"].append(((), float(net.generation)))
        pusher = getattr(net, "pusher", None)
        if pusher is None:
            return
        changes = pusher.changes
        done: list[float] = []
        while self._route_cursor < len(changes):
            change = changes[self._route_cursor]
            if change.error is not None:
                self._route_outcomes["error"] += 1
            elif change.superseded_by is not None:
                self._route_outcomes["superseded"] += 1
            elif change.installed_ns is not None:
                self._route_outcomes["installed"] += 1
                if change.install_ms is not None:
                    done.append(change.install_ms / 1e3)
            else:
                break  # not finished yet: the next sample looks again
            self._route_cursor += 1
        self._install.observe_many(done)
        for outcome, n in self._route_outcomes.items():
            samples["leo_route_changes_total"].append(((outcome,), float(n)))

    def _sample_nodes(self, net: Any, samples: Samples) -> None:
        if net.plan is None:
            return
        down = set(net.down_nodes)
        for node in net.plan.nodes:
            samples["leo_node_up"].append(((node.name, node.role), float(node.name not in down)))
            backend = net.backends.get(node.role)
            group = backend.node_cgroup(node.name) if hasattr(backend, "node_cgroup") else None
            if group is None:
                continue
            usage = node_usage(group.version, group.dirs, group.pids())
            samples["leo_node_cpu_seconds_total"].append(((node.name,), usage.cpu_s))
            if usage.throttled_s is not None:
                samples["leo_node_cpu_throttled_seconds_total"].append(
                    ((node.name,), usage.throttled_s))
            if usage.memory_bytes is not None:
                samples["leo_node_memory_bytes"].append(((node.name,), float(usage.memory_bytes)))
            if group.budget.cpu_cores is not None:
                samples["leo_node_cpu_budget_cores"].append(
                    ((node.name,), float(group.budget.cpu_cores)))
            if group.budget.memory_bytes is not None:
                samples["leo_node_memory_budget_bytes"].append(
                    ((node.name,), float(group.budget.memory_bytes)))

    def _sample_faults(self, samples: Samples) -> None:
        with self._faults_lock:
            records = [dict(r) for r in self._faults]
        count: dict[str, int] = collections.Counter(str(r.get("fault")) for r in records)
        unreachable: dict[str, float] = collections.defaultdict(float)
        lost: dict[tuple[str, str], float] = collections.defaultdict(float)
        for r in records:
            fault = str(r.get("fault"))
            loss = r.get("lost")
            if not isinstance(loss, Mapping):
                continue
            if isinstance(loss.get("unreachable_s"), int | float):
                unreachable[fault] += float(loss["unreachable_s"])
            for key, value in _shaper_drops(loss.get("shaper")).items():
                lost[(fault, DROP_CAUSES.get(key, key))] += value
        for fault, n in sorted(count.items()):
            samples["leo_faults_total"].append(((fault,), float(n)))
            samples["leo_fault_unreachable_seconds_total"].append(
                ((fault,), unreachable.get(fault, 0.0)))
        for (fault, cause), n in sorted(lost.items()):
            samples["leo_fault_lost_packets_total"].append(((fault, cause), n))


def _shaper_drops(shaper: Any) -> dict[str, float]:
    """Drop counts of a fault's `lost.shaper` (testbed.lifecycle.faults.shaper_delta): summed
    over its directions when given per direction."""
    out: dict[str, float] = collections.defaultdict(float)
    if not isinstance(shaper, Mapping):
        return out
    for key, value in shaper.items():
        if key in DROP_CAUSES and isinstance(value, int | float):
            out[key] += float(value)
        elif isinstance(value, Mapping):
            for k, v in _shaper_drops(value).items():
                out[k] += v
    return out


def declared_families() -> tuple[MetricFamily, ...]:
    """The families this exporter serves (the README table lists the same)."""
    return ORCHESTRATOR_FAMILIES
