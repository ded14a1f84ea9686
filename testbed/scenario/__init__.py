"""Scenario files: schema (model.py), YAML with line tracking (yamlsource.py), loader."""

from testbed.scenario.loader import load_scenario
from testbed.scenario.model import (
    ConstellationSpec,
    GroundStationSpec,
    LinkBudgetSpec,
    Scenario,
    Selection,
    WalkerSpec,
)

__all__ = [
    "ConstellationSpec",
    "GroundStationSpec",
    "LinkBudgetSpec",
    "Scenario",
    "Selection",
    "WalkerSpec",
    "load_scenario",
]
