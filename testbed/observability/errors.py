"""Errors of the observability package (metrics, Prometheus, dashboards, report)."""

from __future__ import annotations

from testbed.errors import TestbedError


class ObservabilityError(TestbedError):
    """An exporter, a Prometheus server, a dashboard or a report could not be made or served;
    the message names the object, the bad value and what was expected."""
