"""Run lifecycle: bring a scenario's network up, drive it by the timeline, tear it down.

`run_dir.py` (files of a run), `links.py` (timeline events -> link states), `snapshot.py`
(link states -> controller snapshots), `network.py` (creates and owns the running network),
`clock.py` (applies events at their instants), `session.py` (up/run/down/status as used by
the CLI).
"""
