"""The contract every shaper implements, so the testbed can drive any of them the same way.

A shaper owns a set of link directions, each named by a string key chosen when the direction is
added (e.g. "s3-gs1/down"). How a direction is attached (an interface's egress qdisc, a pair of
interfaces bridged by a userspace process) is the concrete shaper's business; changing state is
common: `apply_many` takes several changes and applies them in as few system calls as it can,
only touching fields that changed (LinkState.diff).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

from netem.linkstate import LinkState


class Shaper(abc.ABC):
    """Applies LinkState changes to link directions it owns. Use as a context manager."""

    @abc.abstractmethod
    def apply_many(self, changes: Mapping[str, LinkState]) -> None:
        """Apply the new state of each named direction (batched; only changed fields)."""

    def apply(self, direction: str, state: LinkState) -> None:
        """Apply one direction's new state."""
        self.apply_many({direction: state})

    @abc.abstractmethod
    def current(self, direction: str) -> LinkState:
        """The state last applied to `direction`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Remove everything this shaper created (qdiscs, processes). Idempotent."""

    def __enter__(self) -> Shaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
