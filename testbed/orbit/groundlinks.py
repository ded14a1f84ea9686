"""Ground-link assignment: which satellite serves a ground station at each instant.

Owns the policies, registered under kebab-case names shared with scenario files and the CLI:

- `highest-elevation`: the highest visible satellite; with `hysteresis_deg` > 0 the serving one is
  kept until another is higher by more than that margin (or it sets);
- `hold-until-set`: keep the serving satellite until it sets, then take the highest visible;
- `longest-remaining`: keep the serving satellite until it sets, then take the visible one that
  stays visible longest from that instant (fewest future handovers).

Input is an elevation array (N satellites, T instants) from visibility.py; output is, per
instant, the index of the serving satellite or -1 when none is visible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from testbed.errors import InputError

NO_SATELLITE = -1

Policy = Callable[[np.ndarray, np.ndarray, float], np.ndarray]
GROUND_LINK_POLICIES: dict[str, Policy] = {}


def register_ground_link_policy(name: str) -> Callable[[Policy], Policy]:
    """Decorator adding a policy `(elevation_deg (N,T), visible (N,T), hysteresis_deg) -> (T,)`."""

    def add(policy: Policy) -> Policy:
        GROUND_LINK_POLICIES[name] = policy
        return policy

    return add


def ground_link_policy(name: str) -> Policy:
    """The registered policy called `name`; InputError listing the valid names otherwise."""
    try:
        return GROUND_LINK_POLICIES[name]
    except KeyError:
        valid = ", ".join(sorted(GROUND_LINK_POLICIES))
        raise InputError(f"unknown ground-link policy {name!r}; choose: {valid}",
                         field="policy") from None


def _best(elevation: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(T,) index of the highest visible satellite per instant, NO_SATELLITE if none."""
    masked = np.where(visible, elevation, -np.inf)
    best = np.argmax(masked, axis=0)
    return np.where(visible.any(axis=0), best, NO_SATELLITE)


@register_ground_link_policy("highest-elevation")
def _highest_elevation(elevation: np.ndarray, visible: np.ndarray,
                       hysteresis_deg: float) -> np.ndarray:
    best = _best(elevation, visible)
    if hysteresis_deg <= 0.0:
        return best
    serving = np.full(elevation.shape[1], NO_SATELLITE)
    current = NO_SATELLITE
    for t in range(elevation.shape[1]):
        candidate = best[t]
        if current != NO_SATELLITE and visible[current, t]:
            if candidate != NO_SATELLITE and (
                elevation[candidate, t] - elevation[current, t] > hysteresis_deg
            ):
                current = candidate
        else:
            current = candidate
        serving[t] = current
    return serving


@register_ground_link_policy("hold-until-set")
def _hold_until_set(elevation: np.ndarray, visible: np.ndarray,
                    hysteresis_deg: float) -> np.ndarray:
    best = _best(elevation, visible)
    serving = np.full(elevation.shape[1], NO_SATELLITE)
    current = NO_SATELLITE
    for t in range(elevation.shape[1]):
        if current == NO_SATELLITE or not visible[current, t]:
            current = best[t]
        serving[t] = current
    return serving


def remaining_visible_instants(visible: np.ndarray) -> np.ndarray:
    """(N, T) count of consecutive visible instants from each instant on (0 where not visible)."""
    remaining = np.zeros(visible.shape, dtype=np.int64)
    run = np.zeros(visible.shape[0], dtype=np.int64)
    for t in range(visible.shape[1] - 1, -1, -1):
        run = np.where(visible[:, t], run + 1, 0)
        remaining[:, t] = run
    return remaining


@register_ground_link_policy("longest-remaining")
def _longest_remaining(elevation: np.ndarray, visible: np.ndarray,
                       hysteresis_deg: float) -> np.ndarray:
    remaining = remaining_visible_instants(visible)
    # Ties on remaining time go to the higher satellite.
    score = remaining.astype(np.float64) + np.where(visible, elevation, 0.0) / 1e3
    best = np.where(visible.any(axis=0), np.argmax(np.where(visible, score, -np.inf), axis=0),
                    NO_SATELLITE)
    serving = np.full(elevation.shape[1], NO_SATELLITE)
    current = NO_SATELLITE
    for t in range(elevation.shape[1]):
        if current == NO_SATELLITE or not visible[current, t]:
            current = best[t]
        serving[t] = current
    return serving


def assign_ground_links(
    elevation_deg: np.ndarray,
    min_elevation_deg: float,
    policy: str = "highest-elevation",
    *,
    hysteresis_deg: float = 0.0,
) -> np.ndarray:
    """Serving satellite index per instant, shape (T,), NO_SATELLITE (-1) when none is visible.

    elevation_deg: (N, T) from one station (NaN = not visible); a satellite is visible at or
    above `min_elevation_deg`.

    >>> el = np.array([[30.0, 40.0, 30.0, 5.0], [20.0, 35.0, 45.0, 50.0]])
    >>> assign_ground_links(el, 25.0, "highest-elevation").tolist()
    [0, 0, 1, 1]
    >>> assign_ground_links(el, 25.0, "hold-until-set").tolist()
    [0, 0, 0, 1]
    """
    chosen = ground_link_policy(policy)
    elevation = np.asarray(elevation_deg, dtype=np.float64)
    if elevation.ndim != 2:
        raise InputError(f"elevation_deg has shape {elevation.shape}, expected (N, T)",
                         field="elevation_deg")
    if not hysteresis_deg >= 0.0:
        raise InputError(f"hysteresis_deg={hysteresis_deg}, expected >= 0",
                         field="hysteresis_deg")
    with np.errstate(invalid="ignore"):
        visible = elevation >= min_elevation_deg
    if elevation.shape[0] == 0:
        return np.full(elevation.shape[1], NO_SATELLITE)
    return chosen(elevation, visible, hysteresis_deg)


@dataclass(frozen=True)
class Handovers:
    """Instants where the serving satellite changes: index into the time axis, from, to (-1 =
    none), each shaped (H,)."""

    instant_index: np.ndarray
    from_satellite: np.ndarray
    to_satellite: np.ndarray


def handovers(serving: np.ndarray) -> Handovers:
    """The changes of a serving array from assign_ground_links (the first instant is not one)."""
    serving = np.asarray(serving)
    changed = np.flatnonzero(serving[1:] != serving[:-1]) + 1
    return Handovers(instant_index=changed, from_satellite=serving[changed - 1],
                     to_satellite=serving[changed])
