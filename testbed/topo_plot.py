"""`testbed topo --plot`: ground tracks on a world map and a contact-window Gantt chart."""

from __future__ import annotations

import math
from pathlib import Path

from testbed.constellation import ground_station
from testbed.orbit.plot import plot_contact_gantt, plot_ground_tracks
from testbed.orbit.propagate import propagate
from testbed.orbit.times import time_grid
from testbed.timeline.build import node_names
from testbed.topo import TopologyReport

TRACK_STEP_S = 30.0


def plot_topology(report: TopologyReport, path: Path) -> list[Path]:
    """Write the ground tracks to `path` and the Gantt chart beside it (`<stem>-contacts.png`).

    Returns the files written.
    """
    scenario = report.scenario
    sats = report.constellation.satellites
    count = max(2, int(math.ceil(scenario.duration_s / TRACK_STEP_S)) + 1)
    step_s = scenario.duration_s / (count - 1)
    positions = propagate(sats, time_grid(scenario.epoch, step_s, count)).positions_km
    names = node_names(sats)
    tracks = plot_ground_tracks(
        positions, path, names=names, title=f"{scenario.name}: ground tracks, "
        f"{scenario.duration_s:g} s from {scenario.epoch:%Y-%m-%d %H:%M} UTC",
        stations=[ground_station(g) for g in scenario.ground_stations],
    )
    gantt = plot_contact_gantt(report.windows, path.with_name(f"{path.stem}-contacts.png"),
                               title=f"{scenario.name}: contact windows")
    return [tracks, gantt]
