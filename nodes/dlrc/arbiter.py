"""Arbiter: inter-satellite de-duplication of signatures and the global numbering of vectors.

Every satellite receives every other's local signature list (int64, in spatial order) and runs
the same deterministic rule, so all agree without a coordinator: satellites are ranked by a
priority rule; a signature held by several satellites is kept (sent) only by the highest-ranked
one. Kept vectors get dense global sequence numbers: the first-ranked satellite's kept vectors
0..k1-1 in its spatial order, the next satellite's k1..k1+k2-1, and so on. A satellite's
assignment map (spatial position -> global sequence number) then tells the ground, for each
position, which vector to decode or copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from nodes.dlrc.errors import DlrcConfigError


@dataclass(frozen=True)
class SatelliteState:
    """What a priority rule may look at (exchanged with the signature lists)."""

    sat_id: int
    link_quality: float = 0.0  # e.g. downlink capacity share or SNR, higher is better
    energy_j: float = 0.0  # remaining battery energy, higher is better


def _by_id(states: Sequence[SatelliteState]) -> list[int]:
    return [s.sat_id for s in sorted(states, key=lambda s: s.sat_id)]


def _by_link(states: Sequence[SatelliteState]) -> list[int]:
    return [s.sat_id for s in sorted(states, key=lambda s: (-s.link_quality, s.sat_id))]


def _by_energy(states: Sequence[SatelliteState]) -> list[int]:
    return [s.sat_id for s in sorted(states, key=lambda s: (-s.energy_j, s.sat_id))]


PRIORITY_RULES: dict[str, Callable[[Sequence[SatelliteState]], list[int]]] = {
    "satellite-id": _by_id,  # lowest id first
    "link-quality": _by_link,  # best link first, ties by id
    "energy": _by_energy,  # most energy first, ties by id
}


def priority_order(states: Sequence[SatelliteState], rule: str = "satellite-id") -> list[int]:
    """Satellite ids, highest priority first; ties always break by id so every node agrees."""
    try:
        fn = PRIORITY_RULES[rule]
    except KeyError:
        raise DlrcConfigError(
            f"priority rule {rule!r}; expected one of {', '.join(sorted(PRIORITY_RULES))}"
        ) from None
    ids = [s.sat_id for s in states]
    if len(set(ids)) != len(ids):
        raise DlrcConfigError(f"satellite ids {ids}; expected distinct ids")
    return fn(states)


@dataclass(frozen=True)
class SatellitePlan:
    """One satellite's share of the arbitration."""

    sat_id: int
    rank: int  # 0 = highest priority
    base: int  # first global sequence number this satellite owns
    kept: np.ndarray  # (m,) bool over its local signature list: send this vector
    local_seq: np.ndarray  # (m,) int64 global sequence number of each local cluster

    @property
    def n_new(self) -> int:
        return int(self.kept.sum())


@dataclass(frozen=True)
class Arbitration:
    """The outcome for every satellite, in priority order."""

    order: list[int]
    plans: dict[int, SatellitePlan] = field(default_factory=dict)

    @property
    def total_vectors(self) -> int:
        return sum(p.n_new for p in self.plans.values())


def arbitrate(lists: Mapping[int, np.ndarray], order: Sequence[int]) -> Arbitration:
    """Decide who sends which signature; `lists[sat]` is that satellite's unique signature list."""
    if sorted(order) != sorted(lists):
        raise DlrcConfigError(
            f"priority order {list(order)}; expected each of satellites {sorted(lists)} once"
        )
    owner: dict[int, int] = {}  # signature -> global sequence number
    plans: dict[int, SatellitePlan] = {}
    next_seq = 0
    for rank, sat in enumerate(order):
        sigs = np.asarray(lists[sat], dtype=np.int64)
        if sigs.ndim != 1 or len(np.unique(sigs)) != len(sigs):
            raise DlrcConfigError(
                f"satellite {sat}: signature list of shape {sigs.shape} with repeats; expected "
                "the selector's unique list"
            )
        base = next_seq
        kept = np.zeros(len(sigs), dtype=bool)
        seq = np.empty(len(sigs), dtype=np.int64)
        for i, s in enumerate(sigs.tolist()):
            got = owner.get(s)
            if got is None:
                owner[s] = got = next_seq
                next_seq += 1
                kept[i] = True
            seq[i] = got
        plans[sat] = SatellitePlan(sat, rank, base, kept, seq)
    return Arbitration(list(order), plans)


def global_map(assignment: np.ndarray, plan: SatellitePlan) -> np.ndarray:
    """(n,) int64: each raster position's global sequence number (the dense remapping)."""
    return plan.local_seq[np.asarray(assignment, dtype=np.int64)]
