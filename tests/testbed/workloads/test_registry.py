"""One registry of workload kinds on the orchestrator side, with the node side's names."""

from __future__ import annotations

import pytest

from nodes.workloads.registry import workload_kinds as node_kinds
from testbed.errors import InputError
from testbed.workloads.base import OrchestratorWorkload
from testbed.workloads.registry import WORKLOADS, workload_class, workload_kinds


def test_every_orchestrator_kind_exists_on_the_node_side() -> None:
    assert set(WORKLOADS) <= set(node_kinds())
    assert "none" in workload_kinds()


def test_classes_implement_the_typed_base() -> None:
    for kind in WORKLOADS:
        cls = workload_class(kind)
        assert issubclass(cls, OrchestratorWorkload)
        assert cls.kind == kind


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(InputError, match=r"unknown workload kind 'dlrx'; choose: dlrc, "
                                         r"downlink-files.*none"):
        workload_class("dlrx")
