"""The EdgeSpaceCom model of one DLRC signature-sync round: pure computation, numpy only.

Owns the formula; the routes it needs (min-delay multi-hop paths between the observers over
the inter-satellite links at one instant) come from the caller (experiments/dlrc/sync_time.py
builds them from the orbit engine). Our reading of the model, as the DLRC paper states its
constants (550 km Walker shell, per-hop relay 0.5 ms, control 0.03 s per round per satellite):

    every observer sends its list to every other at once, along the min-delay route;
    list i reaches j after  prop_ij + hops_ij * relay_s + bits_i / rate_ij
    (rate_ij: the route's bottleneck ISL capacity); the round ends when the last list has
    arrived, plus the control work of the round, control_s for each of the N satellites:

    T_sync = max_{i != j} (prop_ij + hops_ij * relay_s + 8 * bytes_i / rate_ij) + N * control_s

Pairs with no route make the round impossible (inf).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RELAY_S = 0.5e-3
CONTROL_S = 0.03


@dataclass(frozen=True)
class SyncRound:
    """One round's time and its parts (seconds)."""

    total_s: float
    network_s: float  # the slowest list's arrival
    control_s: float  # N * control
    slowest_pair: tuple[int, int]


def sync_round(prop_s: np.ndarray, hops: np.ndarray, list_bytes: np.ndarray,
               rate_bps: np.ndarray | float, *, relay_s: float = RELAY_S,
               control_s: float = CONTROL_S) -> SyncRound:
    """T_sync for N observers (see the module docstring).

    Args:
        prop_s: (N, N) propagation delay of the min-delay route i -> j, seconds (inf: none).
        hops: (N, N) ISL hops of that route.
        list_bytes: (N,) bytes of each observer's signature list.
        rate_bps: (N, N) bottleneck capacity of each route, or one rate for all.
    Raises ValueError on mismatched shapes or fewer than two observers.

    >>> r = sync_round(np.array([[0, .01], [.01, 0]]), np.array([[0, 1], [1, 0]]),
    ...                np.array([800, 800]), 1e6)
    >>> round(r.total_s, 4)   # 0.01 + 0.0005 + 6400 / 1e6 = 0.0169, plus 2 x 0.03
    0.0769
    """
    prop = np.asarray(prop_s, dtype=np.float64)
    n = prop.shape[0]
    if n < 2 or prop.shape != (n, n) or np.shape(hops) != (n, n) or np.shape(list_bytes) != (n,):
        raise ValueError(f"sync_round: prop_s {prop.shape}, hops {np.shape(hops)}, list_bytes "
                         f"{np.shape(list_bytes)}; expected (N, N), (N, N), (N,) with N >= 2")
    rate = np.broadcast_to(np.asarray(rate_bps, dtype=np.float64), (n, n))
    with np.errstate(divide="ignore"):
        arrive = prop + np.asarray(hops) * relay_s + \
            8.0 * np.asarray(list_bytes, dtype=np.float64)[:, None] / rate
    np.fill_diagonal(arrive, -np.inf)
    i, j = np.unravel_index(int(np.argmax(arrive)), arrive.shape)
    network = float(arrive[i, j])
    return SyncRound(network + n * control_s, network, n * control_s, (int(i), int(j)))
