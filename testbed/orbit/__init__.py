"""The orbit and topology engine: TLE/Walker satellites -> positions -> contacts, ISLs, budgets.

Plain, array-valued functions on domain values; knows nothing about scenario files or the
timeline (testbed.scenario and testbed.timeline build on it). See testbed/orbit/README.md.
"""

from testbed.orbit.contacts import ContactWindow, contact_windows
from testbed.orbit.geodesy import ecef_to_geodetic, geodetic_to_ecef_km
from testbed.orbit.groundlinks import (
    GROUND_LINK_POLICIES,
    NO_SATELLITE,
    Handovers,
    assign_ground_links,
    ground_link_policy,
    handovers,
    register_ground_link_policy,
)
from testbed.orbit.isl import IslState, isl_state, plus_grid
from testbed.orbit.linkbudget import IslLinkBudget, propagation_delay_us
from testbed.orbit.planes import PlaneAssignment, plane_assignment, recover_planes, walker_planes
from testbed.orbit.propagate import Propagation, iter_propagate, propagate
from testbed.orbit.times import as_datetime64, as_times, time_grid
from testbed.orbit.tle import Satellite, load_tle_file, parse_tle_lines, tle_age_days
from testbed.orbit.visibility import GroundStation, LookAngles, elevation_deg, look_angles, visible
from testbed.orbit.walker import walker_delta

__all__ = [
    "GROUND_LINK_POLICIES",
    "NO_SATELLITE",
    "ContactWindow",
    "GroundStation",
    "Handovers",
    "IslLinkBudget",
    "IslState",
    "LookAngles",
    "PlaneAssignment",
    "Propagation",
    "Satellite",
    "as_datetime64",
    "as_times",
    "assign_ground_links",
    "contact_windows",
    "ecef_to_geodetic",
    "elevation_deg",
    "geodetic_to_ecef_km",
    "ground_link_policy",
    "handovers",
    "isl_state",
    "iter_propagate",
    "load_tle_file",
    "look_angles",
    "parse_tle_lines",
    "plane_assignment",
    "plus_grid",
    "propagate",
    "propagation_delay_us",
    "recover_planes",
    "register_ground_link_policy",
    "time_grid",
    "tle_age_days",
    "visible",
    "walker_delta",
    "walker_planes",
]
