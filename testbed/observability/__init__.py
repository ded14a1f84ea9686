"""Live observability of a run: the orchestrator's metrics exporter, a Prometheus per run,
Grafana dashboards generated in code, and the run report (see README.md)."""

from testbed.observability.errors import ObservabilityError
from testbed.observability.families import ORCHESTRATOR_FAMILIES, MetricFamily, markdown_table
from testbed.observability.metrics import OrchestratorExporter
from testbed.observability.observers import observability_observers
from testbed.observability.sampling import PositionSampler, ProgramRate, node_usage

__all__ = [
    "ORCHESTRATOR_FAMILIES",
    "MetricFamily",
    "ObservabilityError",
    "OrchestratorExporter",
    "PositionSampler",
    "ProgramRate",
    "markdown_table",
    "node_usage",
    "observability_observers",
]
