"""Scenario files: schema (model.py), YAML with line tracking (yamlsource.py), loader.

The checks a run needs beyond the schema are in `testbed.scenario.checks` (`validate_scenario`),
not re-exported here: they use `testbed.lifecycle.links`, which imports this package's model.
"""

from testbed.scenario.loader import load_scenario, load_scenario_with_source
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
    "load_scenario_with_source",
]
