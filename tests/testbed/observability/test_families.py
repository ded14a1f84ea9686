"""The families table in the README is the code's, and the exporter serves exactly them."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.observability import (
    ORCHESTRATOR_FAMILIES,
    MetricFamily,
    ObservabilityError,
    OrchestratorExporter,
    markdown_table,
)

README = Path(__file__).parents[3] / "testbed" / "observability" / "README.md"


def test_readme_table_is_generated_from_the_code() -> None:
    text = README.read_text()
    start, end = "<!-- families:start -->\n", "\n<!-- families:end -->"
    table = text[text.index(start) + len(start):text.index(end)]
    assert table == markdown_table(ORCHESTRATOR_FAMILIES), \
        "README table differs from families.py: regenerate it with markdown_table()"


def test_exporter_serves_every_declared_family_and_nothing_else() -> None:
    exporter = OrchestratorExporter(scenario_name="x", backend="netns", speed=1.0)
    exporter.sample()
    served = {m.name: m.type for m in exporter.registry.collect()}
    declared = {f.name.removesuffix("_total"): f.type for f in ORCHESTRATOR_FAMILIES}
    assert served == declared


def test_names_follow_prometheus_conventions() -> None:
    for f in ORCHESTRATOR_FAMILIES:
        assert f.name.startswith("leo_")
        assert f.name == f.name.lower()
    with pytest.raises(ObservabilityError, match="ending in _total"):
        MetricFamily("leo_x_bytes", "counter", (), "bytes", "x")
    with pytest.raises(ObservabilityError, match="expected the name to end in _seconds"):
        MetricFamily("leo_x_delay", "gauge", (), "seconds", "x")
